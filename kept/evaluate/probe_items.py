"""KG probe items: each held-out fact as a tokenized prompt around the answer slot, with its candidate tails.

The candidates are the labels of the relation's tail entities (the gold tail always among them, one
entity per distinct word-piece sequence, at most ``max_pieces`` pieces); with ``filtered`` the other true
tails of (head, relation) are dropped, as in link prediction. Scoring the items is :mod:`kept.evaluate.probe`.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from kept.evaluate.probe_facts import ProbeFacts

_SLOT = re.compile(r"(\[X\]|\[Y\])")


@dataclass
class ProbeQuery:
    """One probe item: the prompt around the answer masks and the candidate tails (gold first)."""

    fact: tuple[int, int, int]
    left: list[int]  # template pieces before the answer masks (head included when [X] comes first)
    right: list[int]  # template pieces after them
    head_at: int  # index of the head's first piece in left (or in right when head_in_right)
    head_in_right: bool
    candidates: list[int]  # entity ids, gold first
    pieces: list[list[int]]  # word pieces of each candidate


def _template_pieces(template: str, head: str, tokenizer: Any) -> tuple[list[int], list[int], int, bool]:
    """(left, right, head_at, head_in_right) of ``template`` filled with ``head``; segments are tokenized
    one by one so the head's first piece has a known position."""
    left: list[int] = []
    right: list[int] = []
    target, head_at, head_in_right = left, 0, False
    for segment in _SLOT.split(template):
        if segment == "[Y]":
            target = right
        elif segment == "[X]":
            head_at, head_in_right = len(target), target is right
            target.extend(tokenizer.encode(head, add_special_tokens=False))
        elif segment.strip():
            target.extend(tokenizer.encode(segment.strip(), add_special_tokens=False))
    return left, right, head_at, head_in_right


def probe_queries(
    facts: ProbeFacts, tokenizer: Any, max_facts: int, max_candidates: int, max_pieces: int, filtered: bool, seed: int
) -> tuple[list[ProbeQuery], int]:
    """The items of the held-out facts (at most ``max_facts``, candidates drawn with ``seed``) and how many
    facts were skipped (a gold label over ``max_pieces`` pieces, or no other candidate)."""
    tails_of: dict[int, list[int]] = defaultdict(list)
    true_tails: dict[tuple[int, int], set[int]] = defaultdict(set)
    for h, r, t in facts.triples:
        tails_of[r].append(t)
        true_tails[(h, r)].add(t)
    piece_cache: dict[int, tuple[int, ...]] = {}

    def pieces(entity: int) -> tuple[int, ...]:
        if entity not in piece_cache:
            piece_cache[entity] = tuple(tokenizer.encode(facts.entity_labels[entity], add_special_tokens=False))
        return piece_cache[entity]

    pools: dict[int, list[int]] = {}

    def pool(relation: int) -> list[int]:
        """The relation's tails with a usable label, one entity per distinct word-piece sequence."""
        if relation not in pools:
            todo = [t for t in dict.fromkeys(tails_of[relation]) if t not in piece_cache]
            if todo:  # one batched tokenizer call per relation
                encoded = tokenizer([facts.entity_labels[t] for t in todo], add_special_tokens=False)["input_ids"]
                piece_cache.update({t: tuple(ids) for t, ids in zip(todo, encoded)})
            seen: set[tuple[int, ...]] = set()
            unique = []
            for tail in dict.fromkeys(tails_of[relation]):
                p = pieces(tail)
                if p and len(p) <= max_pieces and p not in seen:
                    seen.add(p)
                    unique.append(tail)
            pools[relation] = unique
        return pools[relation]

    rng = random.Random(seed)
    queries: list[ProbeQuery] = []
    skipped = 0
    for fact in facts.held_out:
        if len(queries) >= max_facts:
            break
        h, r, t = fact
        gold = pieces(t)
        if not gold or len(gold) > max_pieces:
            skipped += 1
            continue
        excluded = (true_tails[(h, r)] if filtered else set()) | {t}
        candidates = pool(r)
        wanted = max_candidates - 1
        sampled = len(candidates) > wanted + len(excluded)
        if sampled:  # sample first, then filter the few picked
            candidates = rng.sample(candidates, wanted + len(excluded))
        others = [c for c in candidates if c not in excluded and pieces(c) != gold]
        if len(others) > wanted:
            others = others[:wanted] if sampled else rng.sample(others, wanted)
        if not others:
            skipped += 1  # a single candidate ranks trivially first: not a test
            continue
        left, right, head_at, head_in_right = _template_pieces(facts.templates[r], facts.entity_labels[h], tokenizer)
        chosen = [t] + others
        queries.append(ProbeQuery(fact, left, right, head_at, head_in_right, chosen, [list(pieces(c)) for c in chosen]))
    return queries, skipped
