"""Relation examples as model input: the seeded train/dev/test splits, the entity markers and the encoded,
padded batches.

Sentences (read with :mod:`kept.fewrel`) come with a head and a tail entity span; the entity markers
``[E1] … [/E1]`` and ``[E2] … [/E2]`` are added to the tokenizer (:func:`add_markers`, embeddings resized)
and put around them. A fixed, seeded subset of relations and sentences is split per relation into train
and test (stratified, :func:`split_examples`); a seeded dev split is carved from each relation's training
part (:func:`split_dev`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kept.errors import KeptError
from kept.evaluate.common import pad
from kept.fewrel import ENTITY_MARKERS, FewRelExample, RelationExample, relation_examples

MARKERS = ENTITY_MARKERS


def split_examples(
    examples: Sequence[FewRelExample], *, max_relations: int, max_per_relation: int, test_fraction: float, seed: int
) -> tuple[list[FewRelExample], list[FewRelExample], list[str]]:
    """Seeded choice of relations (those with 2+ sentences) and a stratified train/test split."""
    by_relation: dict[str, list[FewRelExample]] = {}
    for example in examples:
        if example.relation is not None:
            by_relation.setdefault(example.relation, []).append(example)
    rng = random.Random(seed)
    eligible = sorted(r for r, items in by_relation.items() if len(items) >= 2)
    relations = sorted(rng.sample(eligible, min(max_relations, len(eligible))))
    train, test = [], []
    for relation in relations:
        items = list(by_relation[relation])
        rng.shuffle(items)
        items = items[:max_per_relation]
        n_test = min(len(items) - 1, max(1, int(round(len(items) * test_fraction))))
        test.extend(items[:n_test])
        train.extend(items[n_test:])
    rng.shuffle(train)
    return train, test, relations


def encode_examples(
    tokenizer: Any,
    examples: Sequence[RelationExample],
    max_length: int,
    entity_pairs: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[list[int]], list[int], list[int], list[list[int]]]:
    """Word-piece ids of marked sentences (kept.fewrel.relation_examples), the index of each start
    marker, and per-token KG entity ids (``entity_pairs[i]`` = (head id, tail id), placed on the first
    piece of each mention as in ERNIE-THU; -1 elsewhere). The tokenizer must know the markers
    (:func:`add_markers`). Long sentences keep a ``max_length`` window that holds both start markers
    when they fit."""
    marker_ids = dict(zip(MARKERS, tokenizer.convert_tokens_to_ids(list(MARKERS))))
    cls_ids = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
    sep_ids = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []
    all_ids, head_starts, tail_starts, all_entities = [], [], [], []
    for number, example in enumerate(examples):
        head_id, tail_id = entity_pairs[number] if entity_pairs is not None else (-1, -1)
        ids: list[int] = list(cls_ids)
        entities: list[int] = [-1] * len(ids)
        head_start = tail_start = 0
        for index, word in enumerate(example.words):
            if index == example.head_word:
                head_start = len(ids)
            if index == example.tail_word:
                tail_start = len(ids)
            pieces = [marker_ids[word]] if word in marker_ids else tokenizer.encode(word, add_special_tokens=False)
            first = [-1] * len(pieces)
            if pieces and index == example.head_word + 1:
                first[0] = head_id
            elif pieces and index == example.tail_word + 1:
                first[0] = tail_id
            ids.extend(pieces)
            entities.extend(first)
        ids.extend(sep_ids)
        entities.extend([-1] * len(sep_ids))
        if len(ids) > max_length:
            lo = max(0, min(min(head_start, tail_start) - 4, len(ids) - max_length))
            lo = max(lo, max(head_start, tail_start) + 1 - max_length)
            ids, entities = ids[lo : lo + max_length], entities[lo : lo + max_length]
            head_start = min(max(head_start - lo, 0), len(ids) - 1)
            tail_start = min(max(tail_start - lo, 0), len(ids) - 1)
        all_ids.append(ids)
        head_starts.append(head_start)
        tail_starts.append(tail_start)
        all_entities.append(entities)
    return all_ids, head_starts, tail_starts, all_entities


def split_dev(
    train: Sequence[FewRelExample], dev_fraction: float, seed: int
) -> tuple[list[FewRelExample], list[FewRelExample]]:
    """Seeded, stratified dev split carved from the training part: ``round(n * dev_fraction)`` of each
    relation's n sentences (at least 1, and at least 1 left for training, for relations with 2+);
    nothing when ``dev_fraction`` is 0. Both parts keep the order of ``train``."""
    if dev_fraction <= 0:
        return list(train), []
    rng = random.Random(f"relation-dev:{seed}")
    by_relation: dict[str, list[int]] = {}
    for index, example in enumerate(train):
        by_relation.setdefault(example.relation or "", []).append(index)
    chosen: set[int] = set()
    for relation in sorted(by_relation):
        indices = by_relation[relation]
        if len(indices) >= 2:
            chosen.update(rng.sample(indices, min(len(indices) - 1, max(1, round(len(indices) * dev_fraction)))))
    return ([e for i, e in enumerate(train) if i not in chosen], [e for i, e in enumerate(train) if i in chosen])


def entity_pairs(
    examples: Sequence[FewRelExample], entity_index: Mapping[str, int] | None
) -> list[tuple[int, int]] | None:
    """(head KG id, tail KG id) of each example (-1 when not in ``entity_index``); None without an index."""
    if entity_index is None:
        return None
    return [(int(entity_index.get(e.head.kb_id, -1)), int(entity_index.get(e.tail.kb_id, -1))) for e in examples]


def encode_features(
    tokenizer: Any,
    examples: Sequence[FewRelExample],
    relations: Sequence[str],
    max_length: int,
    entity_index: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """One feature dict per example (same order): input_ids, head_start, tail_start, entity_ids, label."""
    if not examples:
        return []
    marked, _ = relation_examples(examples, relations)
    if len(marked) != len(examples):
        raise KeptError(
            f"{len(examples) - len(marked)} examples have a relation outside the chosen ones",
            where="relation fine-tune",
            fix="pass examples of the given relations only",
        )
    ids, heads, tails, entities = encode_examples(tokenizer, marked, max_length, entity_pairs(examples, entity_index))
    return [
        {"input_ids": i, "head_start": h, "tail_start": t, "entity_ids": e, "label": m.label}
        for i, h, t, e, m in zip(ids, heads, tails, entities, marked)
    ]


@dataclass(frozen=True)
class RelationCollator:
    """Pads a list of feature dicts into the model's batch; ``entity_ids`` only when ``entity_input``."""

    pad_id: int
    entity_input: bool

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {
            "input_ids": pad([r["input_ids"] for r in rows], self.pad_id),  # [B, L]
            "attention_mask": pad([[1] * len(r["input_ids"]) for r in rows], 0),  # [B, L]
            "head_start": torch.tensor([r["head_start"] for r in rows], dtype=torch.long),  # [B]
            "tail_start": torch.tensor([r["tail_start"] for r in rows], dtype=torch.long),  # [B]
            "labels": torch.tensor([r["label"] for r in rows], dtype=torch.long),  # [B]
        }
        if self.entity_input:
            batch["entity_ids"] = pad([r["entity_ids"] for r in rows], -1)  # [B, L]
        return batch


def add_markers(tokenizer: Any, model: Any = None) -> int:
    """Add the entity markers as special tokens; resize the model's embeddings to match."""
    added = tokenizer.add_tokens(list(MARKERS), special_tokens=True)
    if model is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        from transformers.utils import logging as hf_logging

        before = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the note about mean-resizing the new rows
        try:
            model.resize_token_embeddings(len(tokenizer))
        finally:
            hf_logging.set_verbosity(before)
    return added
