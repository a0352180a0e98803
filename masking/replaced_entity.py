"""Replaced-entity detection (WKLM, Xiong et al. 2020): swap linked mentions for other KG entities.

Before padding, a share (``MaskingConfig.replaced_entity_probability``) of each sequence's linked mentions
(entity units whose tokens carry a KG id) get the tokens of another entity's label: one of the same type
when the pool types entities (:class:`EntityPool`), else any entity. The swapped mention keeps its unit id
and unit kind and takes the **new entity's id** (where the old one stood): the entity input then agrees
with the text, so a fusion model cannot tell a swap from a missing or mismatching alignment (dropping the
id would give the answer away: linked mentions lose their alignment only 15% of the time under dEA), and it
has to judge the entity against its context, which is the point of the task.

After the masking collator: swapped mentions are restored where it masked them and carry no MLM target (the
MLM would otherwise learn the wrong tokens); a kept mention that the MLM masked gets no RED label (its
tokens are hidden, the answer would be "not swapped" by construction). The batch gains
``mention_spans`` [B, M, 2] (token start, end exclusive; padding 0, 0) and ``mention_labels`` [B, M]
(1 replaced, 0 kept, -100 none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["EntityPool", "linked_mentions", "swap_mentions", "ReplacedEntityCollator"]

#: Per-token columns a swap rewrites (any other key of a feature is copied as is).
TOKEN_COLUMNS = ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids", "token_type_ids")
ENTITY_KIND = 2
IGNORE = -100


@dataclass
class EntityPool:
    """What a mention can become: ``tokens[e]`` the label's token ids of KG entity ``e`` (empty: never drawn),
    ``types[e]`` its type (-1: untyped); ``source`` says where the types came from."""

    tokens: list[list[int]]
    types: np.ndarray  # [num_entities] int
    source: str
    _members: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _anyone: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), init=False, repr=False)

    def __post_init__(self) -> None:
        drawable = np.asarray([i for i, t in enumerate(self.tokens) if t], dtype=np.int64)
        self._anyone = drawable
        kinds = self.types[drawable] if len(drawable) else np.zeros(0, dtype=np.int64)
        for kind in np.unique(kinds[kinds >= 0]):
            self._members[int(kind)] = drawable[kinds == kind]

    def draw(self, entity: int, u: float) -> int:
        """Another entity for ``entity`` from a uniform number ``u`` in [0, 1): of its type when it has one
        with another member, else any drawable entity; -1 when there is none."""
        kind = int(self.types[entity]) if 0 <= entity < len(self.types) else -1
        members = self._members.get(kind) if kind >= 0 else None
        if members is None or len(members) < 2:
            members = self._anyone
        others = members[members != entity]
        return int(others[min(int(u * len(others)), len(others) - 1)]) if len(others) else -1


def linked_mentions(feature: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    """(start, end exclusive, KG id) of each entity unit whose tokens carry a KG id."""
    units = np.asarray(feature["unit_ids"], dtype=np.int64)
    kinds = np.asarray(feature["unit_kind"], dtype=np.int64)
    entities = np.asarray(feature["entity_ids"], dtype=np.int64)
    on = (kinds == ENTITY_KIND) & (units >= 0)  # [L]
    starts = np.flatnonzero(on & np.concatenate([[True], units[1:] != units[:-1]]))
    found = []
    for start in starts.tolist():
        end = start + 1
        while end < len(units) and on[end] and units[end] == units[start]:
            end += 1
        linked = entities[start:end][entities[start:end] >= 0]
        if len(linked):
            found.append((start, end, int(linked[0])))
    return found


def swap_mentions(
    feature: Mapping[str, Any], swaps: Sequence[tuple[int, int, int]], pool: EntityPool
) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """``feature`` with each (start, end, new entity) mention replaced by the new entity's label tokens
    (non-overlapping, any order) -> (new feature, the swapped mentions' (start, end) in the new positions)."""
    columns = {k: list(v) for k, v in feature.items() if k in TOKEN_COLUMNS}
    out = {k: v for k, v in feature.items() if k not in TOKEN_COLUMNS}
    spans: list[tuple[int, int]] = []
    shift = 0
    pieces: dict[str, list[Any]] = {k: [] for k in columns}
    cursor = 0
    for start, end, new in sorted(swaps):
        tokens = pool.tokens[new]
        for key, values in columns.items():
            pieces[key].extend(values[cursor:start])
            n = len(tokens)
            if key == "input_ids":
                pieces[key].extend(tokens)
            elif key == "entity_ids":
                pieces[key].extend([new] + [-1] * (n - 1))  # the encoder's: the id on a mention's first piece
            else:  # attention, unit id/kind, word id, token type: the mention's first token's, on every piece
                pieces[key].extend([values[start]] * n)
        spans.append((start + shift, start + shift + len(tokens)))
        shift += len(tokens) - (end - start)
        cursor = end
    for key, values in columns.items():
        out[key] = pieces[key] + values[cursor:]
    return out, spans


class ReplacedEntityCollator:
    """The masking collator plus WKLM swaps (draws from the masking collator's seeded generator, so a
    resumed run draws the same swaps). Attributes it lacks (``generator``, ``set_progress`` ...) are the
    masking collator's. ``max_length``: a swap that would make the sequence longer is not made."""

    def __init__(self, collator: Any, pool: EntityPool, probability: float, max_length: int) -> None:
        self.collator = collator
        self.pool = pool
        self.probability = float(probability)
        self.max_length = int(max_length)

    def __getattr__(self, name: str) -> Any:
        if name in ("collator", "pool", "probability", "max_length"):  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.collator, name)

    def _swap_row(self, feature: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[int, int, int]]]:
        """-> (feature after the swaps, [(start, end, label)] of every linked mention in the new positions)."""
        generator = self.collator.generator
        mentions = linked_mentions(feature)
        draws = torch.rand(len(mentions), 2, generator=generator).tolist()  # [m, (swap?, which)]
        room = self.max_length - len(feature["input_ids"])
        swaps = []
        for (start, end, entity), (coin, u) in zip(mentions, draws):
            new = self.pool.draw(entity, u) if coin < self.probability else -1
            if new >= 0 and len(self.pool.tokens[new]) - (end - start) <= room:
                room -= len(self.pool.tokens[new]) - (end - start)
                swaps.append((start, end, new))
        new_feature, swapped = swap_mentions(feature, swaps, self.pool)
        swapped_starts = {s for s, _, _ in swaps}
        spans, shift, j = [], 0, 0
        for start, end, _ in mentions:
            if start in swapped_starts:
                spans.append((*swapped[j], 1))
                shift += (swapped[j][1] - swapped[j][0]) - (end - start)
                j += 1
            else:
                spans.append((start + shift, end + shift, 0))
        return new_feature, spans

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [self._swap_row(f) for f in features]
        batch = self.collator([r[0] for r in rows])
        width = max((len(r[1]) for r in rows), default=0)
        spans = torch.zeros(len(rows), max(width, 1), 2, dtype=torch.long)  # [B, M, 2]
        labels = torch.full((len(rows), max(width, 1)), IGNORE, dtype=torch.long)  # [B, M]
        length = batch["input_ids"].shape[1]
        mlm = batch.get("labels")
        for b, (feature, mentions) in enumerate(rows):
            offset = length - len(feature["input_ids"]) if getattr(self.collator, "padding_left", False) else 0
            for m, (start, end, replaced) in enumerate(mentions):
                s, e = start + offset, end + offset
                spans[b, m, 0], spans[b, m, 1] = s, e
                masked = mlm is not None and bool((mlm[b, s:e] != IGNORE).any())
                if replaced:  # never an MLM target: its tokens restored, no MLM label on them
                    batch["input_ids"][b, s:e] = torch.as_tensor(feature["input_ids"][start:end])
                    if mlm is not None:
                        mlm[b, s:e] = IGNORE
                # a mention the MLM chose gets no RED label, swapped or not: the masking may have hidden its
                # entity id (masking.dea_hide_masked), and a missing id must not tell which were swapped
                if not masked:
                    labels[b, m] = int(replaced)
        batch["mention_spans"], batch["mention_labels"] = spans, labels
        return batch
