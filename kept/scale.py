"""Long runs (RoBERTa-style): what one optimizer step holds, and the warm-up counted in tokens.

RoBERTa trains with large effective batches (sequences per optimizer step = per-device batch x gradient
accumulation x processes), full-length packed sequences and a warm-up given in updates. A warm-up given
in *tokens* (``train.warmup_tokens``) stays the same amount of data when the batch, the accumulation,
the sequence length or the number of GPUs change; it becomes optimizer steps here, once per run:

    warmup_steps = ceil(warmup_tokens / (batch_size x gradient_accumulation_steps x max_length x world_size))

A step counts ``encode.max_length`` tokens per sequence: exact with ``encode.packing`` (every sequence is
full), an upper bound of the real tokens without it (shorter documents leave padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kept.errors import KeptError
from kept.processes import world_size


def tokens_per_step(batch_size: int, accumulation: int, max_length: int, processes: int = 1) -> int:
    """Token slots one optimizer step trains on (sequences per step x max_length)."""
    return int(batch_size) * int(accumulation) * int(max_length) * int(processes)


def steps_for_tokens(tokens: int, per_step: int) -> int:
    """Optimizer steps that cover ``tokens`` (rounded up: the warm-up never holds fewer tokens)."""
    if per_step <= 0:
        raise KeptError(f"{per_step} tokens per step", where="train.batch_size", fix="use positive batch sizes")
    return math.ceil(int(tokens) / per_step)


@dataclass(frozen=True)
class Warmup:
    steps: int
    source: str  # what the steps came from, for the log

    def describe(self) -> str:
        return f"warm-up: {self.steps} optimizer steps ({self.source})"


def resolve_warmup(config: Any, processes: int | None = None) -> Warmup:
    """The Trainer's warm-up steps of a RunConfig (train defaults resolved): ``warmup_tokens`` converted,
    else ``warmup_steps``, else ``warmup_ratio`` x ``max_steps``."""
    train = config.train
    processes = world_size() if processes is None else processes
    if train.warmup_tokens is not None:
        per_step = tokens_per_step(
            train.batch_size, train.gradient_accumulation_steps, config.encode.max_length, processes
        )
        steps = steps_for_tokens(train.warmup_tokens, per_step)
        if steps > train.max_steps:
            raise KeptError(
                f"train.warmup_tokens {train.warmup_tokens:,} is {steps} optimizer steps of {per_step:,} "
                f"tokens, more than train.max_steps {train.max_steps}",
                where="train.warmup_tokens",
                fix="lower warmup_tokens or raise max_steps",
            )
        return Warmup(
            steps,
            f"train.warmup_tokens {train.warmup_tokens:,} / {per_step:,} tokens per step = "
            f"{train.batch_size} x {train.gradient_accumulation_steps} accumulation x "
            f"{config.encode.max_length} x {processes} process{'es' if processes > 1 else ''}",
        )
    if train.warmup_steps:
        return Warmup(int(train.warmup_steps), "train.warmup_steps")
    ratio = float(train.warmup_ratio or 0.0)
    return Warmup(int(round(ratio * train.max_steps)), f"train.warmup_ratio {ratio:g} x {train.max_steps} steps")


__all__ = ["Warmup", "resolve_warmup", "steps_for_tokens", "tokens_per_step", "world_size"]
