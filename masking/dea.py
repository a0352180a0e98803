"""dEA (denoising entity auto-encoder, ERNIE-THU) corruption of token -> entity alignments."""

from __future__ import annotations

import torch

__all__ = ["corrupt_alignments"]


def corrupt_alignments(entity_ids: torch.Tensor, replace_prob: float, remove_prob: float,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt the aligned positions (``entity_ids >= 0``) of a batch.

    Of the aligned positions, ``replace_prob`` get the entity of another aligned position of the
    batch drawn uniformly (a random entity of the batch), ``remove_prob`` lose their alignment (-1),
    the rest keep it. Returns ``(corrupted_entity_ids, entity_labels)``; the labels hold the true entity
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
    random_entities = values[torch.randint(n, (n,), generator=generator)]
    new_values = torch.where(replace, random_entities, values)
    new_values = torch.where(remove, torch.full_like(new_values, -1), new_values)
    corrupted[positions] = new_values
    return corrupted, labels
