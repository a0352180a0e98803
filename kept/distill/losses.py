"""The distillation losses (TinyBERT / MiniLM style) and the student → teacher layer map: pure tensor functions.

* :func:`kd_loss`: KL(teacher ‖ student) between the temperature-softened MLM distributions at the masked
  positions, times T² (Hinton et al.; the gradient scale then does not depend on T).
* :func:`hidden_loss`: MSE between a student hidden state (through a learned linear projection when the widths
  differ) and the teacher hidden state it is mapped to, over the non-padding tokens (TinyBERT).
* :func:`attention_loss`: KL (or MSE) between the attention distributions of mapped layers, per query over the
  non-padding queries; with different head counts both sides are averaged over their heads first (an average
  of distributions is a distribution), with equal counts head h is compared with head h.
* :func:`layer_map`: which teacher layer each student layer learns from (``uniform``: student layer m ← teacher
  layer round(m·T/S), TinyBERT's g(m); ``last``: only the last layers; or an explicit list).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F

from kept.errors import KeptError

#: ``distill.layer_map`` values that name a rule (a list of teacher layers is the other form).
LAYER_MAP_RULES: tuple[str, ...] = ("uniform", "last")
LayerMap = Union[str, Sequence[int]]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the N positions.

    student_logits, teacher_logits: [N, V] (the masked positions). 0 when they are equal; 0 for N = 0.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {list(student_logits.shape)} != teacher logits {list(teacher_logits.shape)}")
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    t = float(temperature)
    student_log = F.log_softmax(student_logits.float() / t, dim=-1)  # [N, V]
    teacher_log = F.log_softmax(teacher_logits.float() / t, dim=-1)  # [N, V]
    return F.kl_div(student_log, teacher_log, log_target=True, reduction="batchmean") * (t * t)


def hidden_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    projection: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Mean squared error between projected student states and teacher states over the real tokens.

    student_hidden [B, L, Hs], teacher_hidden [B, L, Ht], attention_mask [B, L] (1 = token);
    ``projection`` maps Hs → Ht (required when Hs != Ht). Averaged over tokens and hidden units.
    """
    if projection is not None:
        student_hidden = projection(student_hidden)  # [B, L, Ht]
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(
            f"student hidden states {list(student_hidden.shape)} != teacher's "
            f"{list(teacher_hidden.shape)}: give a projection"
        )
    keep = attention_mask.to(student_hidden.device).bool()  # [B, L]
    if not bool(keep.any()):
        return student_hidden.sum() * 0.0
    return F.mse_loss(student_hidden[keep].float(), teacher_hidden[keep].float())


def attention_loss(
    student_attention: torch.Tensor,
    teacher_attention: torch.Tensor,
    attention_mask: torch.Tensor,
    kind: str = "kl",
    eps: float = 1e-12,
) -> torch.Tensor:
    """Distance between attention distributions of one mapped layer pair.

    student_attention [B, As, L, L], teacher_attention [B, At, L, L] (softmax over the last axis),
    attention_mask [B, L]. Heads are compared one to one when As == At, else both are averaged over their
    heads ([B, 1, L, L]). ``kind``: ``kl`` = KL(teacher ‖ student) per query row, ``mse`` = squared error over
    the real keys; averaged over the real queries (and heads). 0 when the distributions are equal.
    """
    if student_attention.shape[1] != teacher_attention.shape[1]:
        student_attention = student_attention.mean(dim=1, keepdim=True)  # [B, 1, L, L]
        teacher_attention = teacher_attention.mean(dim=1, keepdim=True)  # [B, 1, L, L]
    if student_attention.shape != teacher_attention.shape:
        raise ValueError(
            f"student attention {list(student_attention.shape)} != teacher's {list(teacher_attention.shape)}"
        )
    mask = attention_mask.to(student_attention.device).bool()  # [B, L]
    keys = mask[:, None, None, :]  # [B, 1, 1, L]
    queries = mask[:, None, :].expand(-1, student_attention.shape[1], -1)  # [B, A, L]
    student = student_attention.float()
    teacher = teacher_attention.float()
    if kind == "kl":
        per_key = teacher * (torch.log(teacher.clamp_min(eps)) - torch.log(student.clamp_min(eps)))  # [B, A, L, L]
    elif kind == "mse":
        per_key = (student - teacher) ** 2
    else:
        raise ValueError(f"unknown attention loss {kind!r}: use kl or mse")
    per_query = per_key.masked_fill(~keys, 0.0).sum(dim=-1)  # [B, A, L]
    if kind == "mse":
        per_query = per_query / keys.sum(dim=-1).clamp_min(1)  # mean over the real keys
    if not bool(queries.any()):
        return student.sum() * 0.0
    return per_query[queries].mean()


def layer_map(rule: LayerMap, student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer (1-based) each student layer (1..S) learns from; index 0 (embeddings) maps to 0.

    ``uniform``: round(m · T / S) (m = 1..S), so the last student layer learns from the last teacher layer;
    ``last``: every student layer from the teacher's last S layers, in order (fewer student layers: the top
    ones); a list: the teacher layers themselves, one per student layer, increasing, within 1..T.
    """
    where = "distill.layer_map"
    if student_layers < 1 or teacher_layers < 1:
        raise KeptError(
            f"{student_layers} student / {teacher_layers} teacher layers",
            where=where,
            fix="both models need at least one layer",
        )
    if isinstance(rule, str):
        if rule == "uniform":
            return [
                max(1, min(teacher_layers, round(m * teacher_layers / student_layers)))
                for m in range(1, student_layers + 1)
            ]
        if rule == "last":
            start = max(teacher_layers - student_layers, 0)
            return [min(start + m, teacher_layers) for m in range(1, student_layers + 1)]
        raise KeptError(
            f"unknown layer map {rule!r}",
            where=where,
            fix=f"use one of {', '.join(LAYER_MAP_RULES)} or a list of teacher layers",
        )
    layers = [int(v) for v in rule]
    if len(layers) != student_layers:
        raise KeptError(
            f"{len(layers)} teacher layers given for a student of {student_layers} layers",
            where=where,
            fix=f"give one teacher layer (1..{teacher_layers}) per student layer, or use uniform",
        )
    if any(v < 1 or v > teacher_layers for v in layers) or layers != sorted(layers):
        raise KeptError(
            f"{layers} is not an increasing list within 1..{teacher_layers}",
            where=where,
            fix=f"give increasing teacher layer numbers within 1..{teacher_layers}",
        )
    return layers


__all__ = ["LAYER_MAP_RULES", "attention_loss", "hidden_loss", "kd_loss", "layer_map"]
