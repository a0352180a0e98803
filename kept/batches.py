"""Batches reseeded from their rows: the masking collator is reseeded for every batch from (seed, the
dataset indices of the batch), so a resumed run draws the same masks as an uninterrupted one even though
the Trainer skips the already-seen batches without collating them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

INDEX_KEY = "__index__"


def with_index(dataset: Any, columns: Sequence[str]) -> Any:
    """``dataset``'s ``columns`` (those it has) and each row's index as :data:`INDEX_KEY` (read by
    :class:`BatchSeededCollator`)."""
    dataset = dataset.select_columns([c for c in columns if c in dataset.column_names])
    return dataset.add_column(INDEX_KEY, list(range(len(dataset))))


def batch_seed(seed: int, indices: Sequence[int], salt: int = 0) -> int:
    data = np.asarray([seed, salt, *indices], dtype=np.int64).tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


class BatchSeededCollator:
    """Reseeds the masking collator's generator from (seed, batch indices) before every batch.

    With ``total_batches`` (staged ERNIE, no DataLoader workers) it also sets the collator's training
    progress from its own count of collated batches, which :class:`kept.callbacks.BatchCounter` starts at
    ``global_step * gradient_accumulation_steps`` (also after a resume, where the Trainer skips the seen
    batches without collating them): batch ``i`` always gets progress ``i / total_batches``, so staged
    masking is exact across resumes too (a step callback would lag the DataLoader's prefetching).
    """

    def __init__(self, collator: Any, seed: int, salt: int = 0, total_batches: int | None = None) -> None:
        self.collator = collator
        self.seed = int(seed)
        self.salt = int(salt)
        self.total_batches = total_batches
        self.batches_seen = 0

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        indices = [int(f[INDEX_KEY]) for f in features]
        stripped = [{k: v for k, v in f.items() if k != INDEX_KEY} for f in features]
        reseed_in_worker = getattr(self.collator, "_reseed_in_worker", None)
        if reseed_in_worker is not None:  # let a DataLoader worker swap its generator first
            reseed_in_worker()
        self.collator.generator.manual_seed(batch_seed(self.seed, indices, self.salt))
        if self.total_batches:
            self.collator.set_progress(self.batches_seen / self.total_batches)
            self.batches_seen += 1
        return self.collator(stripped)


# ------------------------------------------------------------------ checkpoints and resume checks
