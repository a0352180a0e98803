"""dEA (denoising entity auto-encoder, ERNIE-THU) corruption of token -> entity alignments, and the
removal of the alignments of masked mentions (what a fusion model must not see when it predicts them)."""

from __future__ import annotations

import torch

from masking.errors import MaskingError
from masking.masking_config import DEA_REPLACE_MODES

__all__ = ["corrupt_alignments", "hide_masked_alignments"]

IGNORE_INDEX = -100  # label of a token that is not predicted


def corrupt_alignments(
    entity_ids: torch.Tensor,
    replace_prob: float,
    remove_prob: float,
    generator: torch.Generator,
    replace_from: str = "positions",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt the aligned positions (``entity_ids >= 0``) of a batch.

    Of the aligned positions, ``replace_prob`` get a random entity of the batch, ``remove_prob`` lose
    their alignment (-1), the rest keep it. The random entity is, with ``replace_from="positions"``, the
    entity of an aligned position drawn uniformly (an entity linked ten times is drawn ten times as
    often), with ``"distinct"`` one of the batch's distinct entities drawn uniformly (ERNIE-THU's
    pretraining collate). Returns ``(corrupted_entity_ids, entity_labels)``; the labels hold the true entity
    at every aligned position and -100 elsewhere, whatever the corruption did.
    """
    aligned = entity_ids >= 0
    labels = torch.where(aligned, entity_ids, torch.full_like(entity_ids, -100))
    positions = aligned.nonzero(as_tuple=True)
    n = positions[0].shape[0]
    corrupted = entity_ids.clone()
    if n == 0:
        return corrupted, labels
    values = entity_ids[positions]
    u = torch.rand(n, generator=generator)
    replace = u < replace_prob
    remove = (u >= replace_prob) & (u < replace_prob + remove_prob)
    if replace_from not in DEA_REPLACE_MODES:
        raise MaskingError(
            f"unknown dEA replacement {replace_from!r}",
            where="masking.dea_replace",
            fix=f"use one of {', '.join(DEA_REPLACE_MODES)}",
        )
    pool = torch.unique(values) if replace_from == "distinct" else values  # [D] or [n]
    random_entities = pool[torch.randint(pool.numel(), (n,), generator=generator)]  # [n]
    new_values = torch.where(replace, random_entities, values)
    new_values = torch.where(remove, torch.full_like(new_values, -1), new_values)
    corrupted[positions] = new_values
    return corrupted, labels


def hide_masked_alignments(
    entity_ids: torch.Tensor, unit_ids: torch.Tensor | None, labels: torch.Tensor
) -> torch.Tensor:
    """``entity_ids`` with the alignment of every masked mention removed (-1).

    A mention is masked when any of its tokens carries a label (``labels != -100``: [MASK], random and
    kept tokens of the 80/10/10 rule alike). ``entity_ids`` sits on the first piece of a linked mention
    and the mention's tokens share its unit id (``unit_ids``, numbered per row, -1 on special tokens),
    so the whole unit is looked up, not only the aligned position. Without ``unit_ids`` (or on a token
    with unit -1) only the aligned position itself counts. Alignments of unmasked mentions are kept:
    a fusion model still sees the entities of the context, as in the entity cloze.

    entity_ids, unit_ids, labels: [B, L] integer tensors. Returns a new [B, L] tensor.
    """
    if entity_ids.shape != labels.shape or (unit_ids is not None and unit_ids.shape != labels.shape):
        shapes = f"entity_ids {tuple(entity_ids.shape)}, labels {tuple(labels.shape)}" + (
            "" if unit_ids is None else f", unit_ids {tuple(unit_ids.shape)}"
        )
        raise MaskingError(
            f"shapes differ ({shapes})",
            where="hide_masked_alignments",
            fix="pass the [batch, length] tensors of one padded batch",
        )
    predicted = labels.to(entity_ids.device) != IGNORE_INDEX  # [B, L]
    hidden = predicted
    if unit_ids is not None and unit_ids.numel():
        units = unit_ids.to(entity_ids.device)
        in_unit = units >= 0  # [B, L]
        slot = torch.where(in_unit, units, torch.zeros_like(units))  # [B, L] unit index per token
        width = int(slot.max()) + 1
        # per (row, unit): how many of its tokens are predicted
        hits = torch.zeros(units.shape[0], width, dtype=torch.long, device=units.device)
        hits.scatter_add_(1, slot, (predicted & in_unit).long())  # [B, U]
        hidden = predicted | (in_unit & (hits.gather(1, slot) > 0))  # [B, L]
    return torch.where(hidden, torch.full_like(entity_ids, -1), entity_ids)
