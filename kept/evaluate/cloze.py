"""Entity cloze: mask every word piece of a held-out linked mention, predict all of them.

A mention is the set of tokens sharing the unit id of a token that carries a KG entity id
(``entity_ids`` sits on the first piece of a linked mention). One cloze item = one mention,
with up to ``context_tokens`` tokens of context on each side. The item is correct when the
argmax of every masked position equals its gold piece (exact match of the whole mention).
A fusion model sees the entity alignments of the context, but not the masked mention's own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kept.evaluate.common import masked_logits, pad, uses_fusion


@dataclass(frozen=True)
class ClozeItem:
    row: int  # index of the encoded example
    doc_id: str
    positions: tuple[int, ...]  # token positions of the mention in the encoded example
    entity_id: int


def find_mentions(rows: Sequence[Mapping[str, Any]], max_pieces: int = 8) -> list[ClozeItem]:
    """Every linked mention of the encoded rows, in order; mentions over ``max_pieces`` are skipped."""
    items: list[ClozeItem] = []
    for r, row in enumerate(rows):
        entity_ids = list(row["entity_ids"])
        unit_ids = list(row["unit_ids"]) if "unit_ids" in row else None
        for position, entity in enumerate(entity_ids):
            if entity < 0:
                continue
            if unit_ids is None or unit_ids[position] < 0:
                positions = [position]
            else:
                unit = unit_ids[position]
                end = position
                while end + 1 < len(unit_ids) and unit_ids[end + 1] == unit:
                    end += 1
                positions = list(range(position, end + 1))
            if len(positions) > max_pieces:
                continue
            items.append(ClozeItem(r, str(row.get("doc_id", r)), tuple(positions), int(entity)))
    return items


def select_items(items: list[ClozeItem], limit: int, seed: int) -> list[ClozeItem]:
    """A seeded sample of ``limit`` items, kept in corpus order (same items for every run on the same data)."""
    if len(items) <= limit:
        return items
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]


def _build(
    item: ClozeItem,
    row: Mapping[str, Any],
    mask_id: int,
    context: int,
    fusion: bool,
    cls_id: int | None,
    sep_id: int | None,
) -> tuple[list[int], list[int], list[int], list[int]]:
    input_ids = list(row["input_ids"])
    attention = list(row.get("attention_mask", [1] * len(input_ids)))
    length = sum(1 for a in attention if a) if attention else len(input_ids)
    first, last = item.positions[0], item.positions[-1]
    lo, hi = max(0, first - context), min(length, last + 1 + context)
    ids = input_ids[lo:hi]
    ents = list(row["entity_ids"])[lo:hi] if fusion else [-1] * len(ids)
    prefix = [] if lo == 0 or cls_id is None else [cls_id]
    suffix = [] if hi == length or sep_id is None else [sep_id]
    ids = prefix + ids + suffix
    ents = [-1] * len(prefix) + ents + [-1] * len(suffix)
    masked_positions = [p - lo + len(prefix) for p in item.positions]
    gold = [ids[p] for p in masked_positions]
    for p in masked_positions:
        ids[p] = mask_id
        ents[p] = -1
    return ids, ents, masked_positions, gold


@torch.no_grad()
def evaluate_cloze(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    max_mentions: int = 256,
    max_pieces: int = 8,
    context_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 32,
    num_examples: int = 10,
    use_entities: bool | None = None,
) -> dict[str, Any]:
    """Exact-match accuracy over held-out linked mentions (and per-piece accuracy).

    Returns ``{"accuracy", "piece_accuracy", "num_mentions", "num_available", "examples": [...],
    "items": {"ids": [...], "correct": [0/1, ...]}}``; an item id is ``doc_id:row:position`` (the
    mention's document, encoded row and first token), the same for every run on the same encoded data
    and eval seed, so `kept compare` pairs the items of two runs.
    """
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        from kept.errors import KeptError

        raise KeptError("the tokenizer has no [MASK] token", where="tokenizer/", fix="use a masked-LM tokenizer")
    fusion = uses_fusion(model) if use_entities is None else use_entities
    available = find_mentions(rows, max_pieces=max_pieces)
    items = select_items(available, max_mentions, seed)
    exact, pieces_right, pieces_total = 0, 0, 0
    examples: list[dict[str, Any]] = []
    item_ids: list[str] = []
    item_correct: list[int] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        built = [
            _build(
                item, rows[item.row], mask_id, context_tokens, fusion, tokenizer.cls_token_id, tokenizer.sep_token_id
            )
            for item in chunk
        ]
        input_ids = pad([b[0] for b in built], tokenizer.pad_token_id or 0)
        attention = pad([[1] * len(b[0]) for b in built], 0)
        entity_ids = pad([b[1] for b in built], -1) if fusion else None
        select = torch.zeros_like(input_ids, dtype=torch.bool)
        for i, (_, _, positions, _) in enumerate(built):
            select[i, positions] = True
        argmax = masked_logits(model, input_ids, attention, select, entity_ids).argmax(dim=-1).tolist()
        offset = 0
        for item, (ids, _, positions, gold) in zip(chunk, built):
            predicted = argmax[offset : offset + len(positions)]  # positions are increasing: row-major order
            offset += len(positions)
            hits = sum(int(p == g) for p, g in zip(predicted, gold))
            pieces_right += hits
            pieces_total += len(gold)
            correct = hits == len(gold)
            exact += int(correct)
            item_ids.append(f"{item.doc_id}:{item.row}:{item.positions[0]}")
            item_correct.append(int(correct))
            if len(examples) < num_examples:
                examples.append(
                    {
                        "doc_id": item.doc_id,
                        "row": item.row,
                        "position": item.positions[0],
                        "entity_id": item.entity_id,
                        "context": tokenizer.decode(ids, skip_special_tokens=False),
                        "gold": tokenizer.decode(gold),
                        "prediction": tokenizer.decode(predicted),
                        "correct": correct,
                    }
                )
    count = len(items)
    return {
        "accuracy": exact / count if count else math.nan,
        "piece_accuracy": pieces_right / pieces_total if pieces_total else math.nan,
        "num_mentions": count,
        "num_available": len(available),
        "examples": examples,
        "items": {"ids": item_ids, "correct": item_correct},
    }
