"""KG probe: held-out triples as templated cloze facts, tails ranked by masked pseudo log-likelihood.

The facts and their prompt templates come from :mod:`kept.evaluate.probe_facts`, the tokenized items and
their candidate tails from :mod:`kept.evaluate.probe_items`; this module scores them.
A candidate of k word pieces is scored with k masks: ``sum_i log p(piece_i | prompt)`` (or the
mean). Candidates of equal length share one forward pass. Ranks are PyKEEN's "realistic" ranks
(ties count half), giving hits@k and MRR, overall and per relation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Literal

import torch

from kept.evaluate.common import masked_logits, pad, rank_metrics, ranks_from_scores, uses_fusion
from kept.evaluate.probe_facts import ProbeFacts
from kept.evaluate.probe_items import probe_queries


@torch.no_grad()
def evaluate_probe(
    model: torch.nn.Module,
    tokenizer: Any,
    facts: ProbeFacts,
    *,
    max_facts: int = 200,
    max_candidates: int = 100,
    max_pieces: int = 6,
    score: Literal["sum", "mean"] = "sum",
    filtered: bool = True,
    seed: int = 0,
    batch_size: int = 32,
    num_examples: int = 10,
    use_entities: bool | None = None,
) -> dict[str, Any]:
    """hits@1/3/10 and MRR of the gold tail among the candidates, overall and per relation.

    The result's ``items`` hold each fact's outcome for `kept compare`'s paired bootstrap:
    ``{"ids": ["head|relation|tail" entity/relation ids of the KG], "reciprocal_rank": [...],
    "hits_at_1": [0/1, ...]}``.
    """
    if tokenizer.mask_token_id is None:
        from kept.errors import KeptError

        raise KeptError("the tokenizer has no [MASK] token", where="tokenizer/", fix="use a masked-LM tokenizer")
    queries, skipped = probe_queries(facts, tokenizer, max_facts, max_candidates, max_pieces, filtered, seed)
    fusion = uses_fusion(model) if use_entities is None else use_entities
    cls_ids = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
    sep_ids = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []

    # one forward input per (query, candidate length)
    jobs: list[tuple[int, int]] = []  # (query index, k)
    for q, query in enumerate(queries):
        for k in sorted({len(p) for p in query.pieces}):
            jobs.append((q, k))
    log_probs: dict[tuple[int, int], torch.Tensor] = {}  # -> [k, V]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        inputs, entities, offsets = [], [], []
        for q, k in chunk:
            query = queries[q]
            ids = cls_ids + query.left + [tokenizer.mask_token_id] * k + query.right + sep_ids
            ents = [-1] * len(ids)
            if fusion:  # the head mention is linked to the head entity (never the answer)
                head = len(cls_ids) + query.head_at + ((len(query.left) + k) if query.head_in_right else 0)
                ents[head] = query.fact[0]
            inputs.append(ids)
            entities.append(ents)
            offsets.append(len(cls_ids) + len(query.left))
        input_ids = pad(inputs, tokenizer.pad_token_id or 0)
        attention = pad([[1] * len(i) for i in inputs], 0)
        select = torch.zeros_like(input_ids, dtype=torch.bool)
        for i, ((_, k), offset) in enumerate(zip(chunk, offsets)):
            select[i, offset : offset + k] = True
        logits = masked_logits(model, input_ids, attention, select, pad(entities, -1) if fusion else None)
        table = torch.log_softmax(logits, dim=-1).cpu()  # [sum of k, V], row-major
        start_row = 0
        for q, k in chunk:
            log_probs[(q, k)] = table[start_row : start_row + k]
            start_row += k

    ranks: list[float] = []
    per_relation: dict[int, list[float]] = defaultdict(list)
    examples: list[dict[str, Any]] = []
    item_ids: list[str] = []
    for q, query in enumerate(queries):
        scores = [0.0] * len(query.pieces)
        by_length: dict[int, list[int]] = defaultdict(list)
        for j, piece_ids in enumerate(query.pieces):
            by_length[len(piece_ids)].append(j)
        for k, members in by_length.items():
            table = log_probs[(q, k)]  # [k, V]
            index = torch.as_tensor([query.pieces[j] for j in members], dtype=torch.long)  # [n, k]
            picked = table.gather(1, index.T).T  # [n, k]: log p(piece_i of candidate n)
            values = picked.sum(dim=1) if score == "sum" else picked.mean(dim=1)
            for j, value in zip(members, values.tolist()):
                scores[j] = value
        score_t = torch.tensor([scores], dtype=torch.float64)
        rank = float(ranks_from_scores(score_t, torch.tensor([0]))[0])
        ranks.append(rank)
        per_relation[query.fact[1]].append(rank)
        item_ids.append("|".join(str(part) for part in query.fact))
        if len(examples) < num_examples:
            best = max(range(len(scores)), key=lambda j: scores[j])
            h, r, t = query.fact
            examples.append(
                {
                    "head": facts.entity_labels[h],
                    "relation": facts.relation_names[r],
                    "prompt": facts.templates[r].replace("[X]", facts.entity_labels[h]).replace("[Y]", "[MASK]"),
                    "gold": facts.entity_labels[t],
                    "prediction": facts.entity_labels[query.candidates[best]],
                    "rank": rank,
                    "num_candidates": len(query.candidates),
                }
            )
    overall = rank_metrics(ranks)
    result: dict[str, Any] = {
        "mrr": overall["mrr"],
        "hits_at_1": overall["hits_at_1"],
        "hits_at_3": overall["hits_at_3"],
        "hits_at_10": overall["hits_at_10"],
        "mean_rank": overall["mean_rank"],
        "num_facts": len(queries),
        "num_skipped": skipped,
        "mean_candidates": (sum(len(q.candidates) for q in queries) / len(queries)) if queries else math.nan,
        "score": score,
        "filtered": filtered,
        "language": facts.language,
        "per_relation": {
            facts.relation_names[r]: {k: v for k, v in rank_metrics(rs).items() if k in ("mrr", "hits_at_1", "count")}
            for r, rs in sorted(per_relation.items())
        },
        "examples": examples,
        "items": {
            "ids": item_ids,
            "reciprocal_rank": [1.0 / rank for rank in ranks],
            "hits_at_1": [int(rank <= 1) for rank in ranks],
        },
    }
    if facts.note:
        result["note"] = facts.note
    return result
