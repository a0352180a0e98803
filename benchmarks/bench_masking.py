"""Collator throughput: KnowledgeMaskingCollator (every strategy, dEA on) vs transformers'
DataCollatorForLanguageModeling (token masking, and its whole_word_mask=True mode), on the same
256 x 512-token batch of real text (the gensim Wikipedia sample with its gold links as entity spans,
plus synthetic two-word phrase spans; synthetic text if kg.wikipedia is unavailable).
Also: encode_with_units (tokenise + align) vs the bare tokenizer call.

    .venv/bin/python benchmarks/bench_masking.py [--batch 256] [--length 512] [--repeats 15]

Prints a table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import warnings
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from masking import KnowledgeMaskingCollator, encode_with_units  # noqa: E402
from masking.spans import make_span, resolve_overlaps  # noqa: E402

STRATEGIES = ["token", "whole_word", "span", "phrase", "entity", "ernie"]


def load_tokenizer():
    from transformers import AutoTokenizer

    from kept.checkpoints import offline_checkpoint_dir

    return AutoTokenizer.from_pretrained(str(offline_checkpoint_dir("minilm-l6")))


def load_documents(seed: int = 0) -> tuple[str, list[str], list[list[dict]]]:
    """Texts and spans: gold Wikipedia links (entities) + synthetic two-word phrases."""
    rng = random.Random(seed)
    try:
        from kg.wikipedia import load_wikipedia_sample

        sample = load_wikipedia_sample()
        texts = [d.text for d in sample.documents]
        spans = [
            [
                make_span(link.start, link.end, "entity", entity_id=getattr(link, "entity_id", -1), source="gold")
                for link in d.links
            ]
            for d in sample.documents
        ]
        source = f"gensim Wikipedia sample ({len(texts)} articles, {sum(map(len, spans))} gold links)"
    except Exception as exc:  # noqa: BLE001 - benchmark falls back to synthetic text
        words = (
            "the of and to in a is that for it as was with be by on not he this are or his from at which "
            "but have an they you were her she there been one all we their river nation city"
        ).split()
        texts, spans = [], []
        for _ in range(400):
            ws = [rng.choice(words) for _ in range(600)]
            text = " ".join(ws)
            texts.append(text)
            spans.append([])
        source = f"synthetic text ({exc.__class__.__name__}: kg.wikipedia unavailable)"
    # synthetic phrases: ~1 in 12 word pairs outside entities
    for text, doc_spans in zip(texts, spans):
        pos, phrases = 0, []
        words = text.split(" ")
        for a, b in zip(words, words[1:]):
            if a and b and rng.random() < 1 / 12:
                phrases.append(make_span(pos, pos + len(a) + 1 + len(b), "phrase", source="synthetic"))
            pos += len(a) + 1
        doc_spans[:] = resolve_overlaps(doc_spans + phrases)
    return source, texts, spans


def split_sentences(texts: list[str], spans: list[list[dict]], limit: int) -> tuple[list[str], list[list[dict]]]:
    """Sentence-sized documents (the product encodes ~100k sentences), spans shifted into them."""
    import re

    out_texts: list[str] = []
    out_spans: list[list[dict]] = []
    for text, doc_spans in zip(texts, spans):
        for match in re.finditer(r"[^.!?\n]+[.!?]?", text):
            a, b = match.start(), match.end()
            if b - a < 20:
                continue
            out_texts.append(text[a:b])
            out_spans.append(
                [
                    dict(sp, start=sp["start"] - a, end=sp["end"] - a)
                    for sp in doc_spans
                    if sp["start"] >= a and sp["end"] <= b
                ]
            )
            if len(out_texts) == limit:
                return out_texts, out_spans
    return out_texts, out_spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker uses 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from transformers import DataCollatorForLanguageModeling

    tokenizer = load_tokenizer()
    source, texts, spans = load_documents()

    # ---- encoding: tokenise + align vs tokenise only
    t0 = time.perf_counter()
    bare = tokenizer(
        texts,
        truncation=True,
        max_length=args.length,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = encode_with_units(tokenizer, texts, spans, max_length=args.length)
    t_enc = time.perf_counter() - t0
    n_tokens = sum(map(len, enc["input_ids"]))

    # ---- sentence-level encoding in datasets.map-sized batches of 64
    sent_texts, sent_spans = split_sentences(texts, spans, 20_000)
    t0 = time.perf_counter()
    for i in range(0, len(sent_texts), 64):
        tokenizer(
            sent_texts[i : i + 64],
            truncation=True,
            max_length=128,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
    t_sent_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(sent_texts), 64):
        encode_with_units(tokenizer, sent_texts[i : i + 64], sent_spans[i : i + 64], max_length=128)
    t_sent_enc = time.perf_counter() - t0

    full = [i for i, row in enumerate(enc["input_ids"]) if len(row) == args.length][: args.batch]
    if len(full) < args.batch:
        raise SystemExit(f"only {len(full)} full {args.length}-token windows; lower --batch")
    keys = ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids")
    ours = [{k: enc[k][i] for k in keys} for i in full]
    # what a transformers user feeds its collator: tokenizer output with the special-tokens mask (and
    # the offsets, which whole_word_mask=True needs in transformers 5)
    bare_rows = {i: i for i in range(len(bare["input_ids"]))}
    hf_features, hf_wwm_features = [], []
    # encode_with_units dropped no windows here (no empty documents): rows line up with `bare`
    assert len(bare["input_ids"]) == len(enc["input_ids"])
    for i in full:
        j = bare_rows[i]
        base = {
            "input_ids": bare["input_ids"][j],
            "attention_mask": [1] * len(bare["input_ids"][j]),
            "special_tokens_mask": bare["special_tokens_mask"][j],
        }
        hf_features.append(base)
        hf_wwm_features.append(dict(base, offset_mapping=[list(p) for p in bare["offset_mapping"][j]]))

    # every collator runs once per round, rounds interleaved, so background load hits all alike
    runs: list[tuple[str, Any]] = []
    hf_token = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    runs.append(("transformers DataCollatorForLanguageModeling (token)", lambda: hf_token(hf_features)))
    hf_wwm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, whole_word_mask=True, seed=0)
    wwm_error = None
    try:
        hf_wwm(hf_wwm_features)
        runs.append(
            ("transformers DataCollatorForLanguageModeling (whole_word_mask=True)", lambda: hf_wwm(hf_wwm_features))
        )
    except Exception as exc:  # noqa: BLE001
        wwm_error = f"{exc.__class__.__name__}: {exc}"
    for strategy in STRATEGIES:
        for dea in (True, False) if strategy in ("token", "entity") else (True,):
            collator = KnowledgeMaskingCollator(tokenizer, strategy=strategy, dea=dea, seed=0)
            runs.append((f"KEPT {strategy}" + (" + dEA" if dea else ""), lambda c=collator: c(ours)))
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    for _name, fn in runs:
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in runs:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    t_ref = statistics.median(times[runs[0][0]])
    rows = [(name, statistics.median(ts), min(ts), t_ref / statistics.median(ts)) for name, ts in times.items()]
    if wwm_error:
        rows.insert(1, (f"transformers whole_word_mask=True failed ({wwm_error})", float("nan"), float("nan"), 0.0))
    t_wwm = next((r[1] for r in rows if "whole_word_mask" in r[0]), float("nan"))
    figures = {
        name: {"ms": round(t * 1000, 2), "speed_vs_hf_token": round(speed, 2)}
        for name, t, _, speed in rows
        if name.startswith("KEPT")
    }

    tokens = args.batch * args.length
    print(
        f"data: {source}; batch {args.batch} x {args.length} = {tokens} tokens; torch threads {args.threads}; "
        f"median of {args.repeats} interleaved rounds"
    )
    print(f"{'collator':<72} {'median ms':>10} {'min ms':>8} {'Mtok/s':>7} {'speed vs HF token':>18}")
    for name, t, t_min, speed in rows:
        print(f"{name:<72} {t * 1000:>10.1f} {t_min * 1000:>8.1f} {tokens / t / 1e6:>7.2f} {speed:>17.2f}x")
    print(
        f"encoding {len(texts)} documents ({n_tokens} tokens, {len(enc['input_ids'])} windows): tokenizer only "
        f"{t_tok:.2f} s, encode_with_units {t_enc:.2f} s ({t_enc / t_tok:.2f}x the tokenizer call, "
        f"{n_tokens / t_enc / 1e3:.0f}k tokens/s)"
    )
    print(
        f"encoding {len(sent_texts)} sentences in batches of 64 (max_length 128): tokenizer only {t_sent_tok:.2f} s, "
        f"encode_with_units {t_sent_enc:.2f} s ({t_sent_enc / t_sent_tok:.2f}x)"
    )
    result = {
        "benchmark": "masking_collator",
        "batch": args.batch,
        "length": args.length,
        "threads": args.threads,
        "data": source,
        "hf_token_ms": round(t_ref * 1000, 2),
        "hf_whole_word_ms": round(t_wwm * 1000, 2) if t_wwm == t_wwm else None,
        "strategies": figures,
        "min_speed_vs_hf_token": round(min(v["speed_vs_hf_token"] for v in figures.values()), 2),
        "encode_s": round(t_enc, 3),
        "tokenize_only_s": round(t_tok, 3),
        "encode_tokens": n_tokens,
        "sentences": len(sent_texts),
        "sentences_encode_s": round(t_sent_enc, 3),
        "sentences_tokenize_only_s": round(t_sent_tok, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
