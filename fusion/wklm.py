"""Replaced-entity detection head (WKLM, Xiong et al. 2020): was this mention swapped for another entity?

The mention's token states are mean-pooled over its span and scored by a small MLP (one logit: replaced).
Inputs come from ``masking.replaced_entity``: ``mention_spans`` [B, M, 2] (start, end exclusive; padding
0, 0) and ``mention_labels`` [B, M] (1 replaced, 0 kept, -100 none). Shapes: B batch, L tokens, H hidden,
M mentions per sequence (the batch's most).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


class KeptReplacedEntityHead(nn.Module):
    """Pooled mention state [.., H] -> dense -> tanh -> one logit."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.classifier = nn.Linear(hidden_size, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.dense(pooled))).squeeze(-1)


def pool_mentions(sequence: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Mean of sequence [B, L, H] over each span [B, M, 2] -> [B, M, H] (zeros for an empty span)."""
    positions = torch.arange(sequence.shape[1], device=sequence.device)  # [L]
    spans = spans.to(sequence.device)
    inside = (positions >= spans[..., :1]) & (positions < spans[..., 1:])  # [B, M, L]
    weights = inside.to(sequence.dtype)
    counts = weights.sum(-1, keepdim=True).clamp(min=1)  # [B, M, 1]
    return (weights @ sequence) / counts


def parameters_times_zero(module: nn.Module) -> torch.Tensor:
    """0, with every parameter of ``module`` (it has some) in the autograd graph: DDP wants a gradient for each."""
    return cast(torch.Tensor, sum(p.sum() for p in module.parameters())) * 0.0  # a tensor: there are parameters


def replaced_entity_loss(
    head: KeptReplacedEntityHead, sequence: torch.Tensor, spans: torch.Tensor | None, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """-> (loss, accuracy, logits [B, M]); without spans/labels, or with no labelled mention, the loss is 0
    with the head in the graph (DDP) and accuracy None."""
    if spans is None or labels is None:
        return parameters_times_zero(head), None, None
    logits = head(pool_mentions(sequence, spans))  # [B, M]
    labels = labels.to(logits.device)
    real = labels != IGNORE_INDEX
    if not bool(real.any()):
        return logits.sum() * 0.0, None, logits.detach()
    targets = labels[real].float()
    loss = F.binary_cross_entropy_with_logits(logits[real].float(), targets)
    accuracy = ((logits[real] > 0).float() == targets).float().mean().detach()
    return loss, accuracy, logits.detach()


__all__ = ["KeptReplacedEntityHead", "pool_mentions", "replaced_entity_loss"]
