"""Paired bootstrap intervals for `kept compare`: is a variant's difference to the baseline real?

Two resampling schemes, both giving a :class:`Difference` (variant − baseline, a 95% percentile
interval, and the share of resamples whose difference is ≤ 0):

* :func:`paired_bootstrap` — for figures with per-item outcomes (``eval/metrics.json`` ``items``:
  cloze exact match, probe reciprocal ranks, relation gold/pred). Items are paired by id (the
  intersection of the ids of every run of both variants). Each resample draws the seeds (the same
  seed indices for both variants when they have as many runs — runs pair by position, i.e. by
  seed — else independently) and the test items (the same item indices for both variants and all
  seeds), recomputes the metric per seed on the resampled items, averages it over the resampled
  seeds and takes the difference.
* :func:`seed_bootstrap` — for figures without items (MLM loss, link-prediction MRR): resamples
  the seeds only; ``n/a`` when a variant has fewer than 2 runs.

A metric function sees one seed's aligned items and a resample weight matrix::

    metric_fn(items: {field: array [N]}, weights: array [R, N]) -> array [R]

``weights[r, n]`` is how often item ``n`` was drawn in resample ``r`` (all ones: the full test
set), so every metric is a few matrix products over all resamples at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kept.errors import KeptError

#: ``metric_fn(items of one seed {field: [N]}, resample weights [R, N]) -> metric per resample [R]``
MetricFn = Callable[[Mapping[str, np.ndarray], np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Difference:
    """``delta`` = variant − baseline with its bootstrap interval [ci_low, ci_high] (NaN when n/a)."""

    delta: float
    ci_low: float
    ci_high: float
    share_le_zero: float  # share of resamples whose difference is ≤ 0 (a one-sided p-like figure)
    method: str  # "items+seeds", "seeds" or "n/a"
    n_items: int = 0  # paired test items (0 for a bootstrap over seeds only)

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return math.isfinite(self.ci_low) and math.isfinite(self.ci_high) and (self.ci_low > 0 or self.ci_high < 0)

    def format(self, digits: int = 3) -> str:
        """``+0.023 [0.004, 0.041]*`` (``*``: the interval excludes 0); ``+0.023 [n/a]`` without one."""
        if not math.isfinite(self.delta):
            return "–"
        if not (math.isfinite(self.ci_low) and math.isfinite(self.ci_high)):
            return f"{self.delta:+.{digits}f} [n/a]"
        star = "*" if self.significant else ""
        return f"{self.delta:+.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]{star}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "significant": self.significant,
            "share_le_zero": self.share_le_zero,
            "method": self.method,
            "n_items": self.n_items,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Difference:
        def number(value: Any) -> float:
            return math.nan if value is None else float(value)

        return cls(
            number(data.get("delta")),
            number(data.get("ci_low")),
            number(data.get("ci_high")),
            number(data.get("share_le_zero")),
            str(data.get("method", "n/a")),
            int(data.get("n_items") or 0),
        )


# ------------------------------------------------------------------ metric functions


def mean_of(field: str, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> MetricFn:
    """The mean of one per-item field (optionally transformed first), e.g. accuracy from 0/1 outcomes."""

    def metric(items: Mapping[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
        values = np.asarray(items[field], dtype=np.float64)  # [N]
        if transform is not None:
            values = transform(values)
        return (weights @ values) / weights.sum(axis=1)  # [R]

    return metric


def accuracy(items: Mapping[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Share of items with ``pred == gold``."""
    correct = (np.asarray(items["gold"]) == np.asarray(items["pred"])).astype(np.float64)  # [N]
    return (weights @ correct) / weights.sum(axis=1)  # [R]


def macro_f1(items: Mapping[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Macro-F1 over the labels present in the (resampled) gold or predictions, per resample.

    Matches :func:`kept.evaluate.common.macro_f1` (and scikit-learn's default ``average="macro"``)
    on the full test set: a label counts when it has a gold item or a prediction; F1 = 2tp / (gold + pred).
    """
    gold = np.asarray(items["gold"])
    pred = np.asarray(items["pred"])
    _, codes = np.unique(np.concatenate([gold, pred]), return_inverse=True)
    n = len(gold)
    num_labels = int(codes.max()) + 1 if codes.size else 0
    one_hot = np.eye(num_labels, dtype=np.float64)
    gold_hot, pred_hot = one_hot[codes[:n]], one_hot[codes[n:]]  # [N, L] each
    weights = np.asarray(weights, dtype=np.float64)
    gold_count = weights @ gold_hot  # [R, L]
    pred_count = weights @ pred_hot  # [R, L]
    true_pos = weights @ (gold_hot * pred_hot)  # [R, L]
    support = gold_count + pred_count  # [R, L] = 2tp + fp + fn
    present = support > 0
    f1 = np.divide(2.0 * true_pos, support, out=np.zeros_like(support), where=present)  # [R, L]
    counted = present.sum(axis=1)  # [R]
    return np.divide(f1.sum(axis=1), counted, out=np.full(len(counted), math.nan), where=counted > 0)


def _set_counts(items: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per item of a multi-label task (gold/pred: label lists): [|gold ∩ pred|, |gold|, |pred|, gold == pred]."""
    rows = [
        (len(set(g) & set(p)), len(set(g)), len(set(p)), float(set(g) == set(p)))
        for g, p in zip(items["gold"], items["pred"])
    ]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)  # [N, 4]


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    total = precision + recall
    return np.divide(2.0 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def typing_micro_f1(items: Mapping[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Loose micro-F1 of type sets (pooled over all (item, type) pairs), as kept.evaluate.typing scores it."""
    sums = weights @ _set_counts(items)[:, :3]  # [R, 3]: correct, gold, predicted
    correct, gold, predicted = sums[:, 0], sums[:, 1], sums[:, 2]
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, gold, out=np.zeros_like(correct), where=gold > 0)
    return _f1(precision, recall)


def typing_macro_f1(items: Mapping[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Loose macro-F1 of type sets: F1 of the per-item precision and recall averaged over items."""
    counts = _set_counts(items)  # [N, 4]
    correct, gold, predicted = counts[:, 0], counts[:, 1], counts[:, 2]
    item_precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)  # [N]
    item_recall = np.divide(correct, gold, out=np.zeros_like(correct), where=gold > 0)  # [N]
    total = weights.sum(axis=1)
    return _f1((weights @ item_precision) / total, (weights @ item_recall) / total)


def typing_strict_accuracy(items: Mapping[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Share of items whose predicted type set equals the gold set."""
    return (weights @ _set_counts(items)[:, 3]) / weights.sum(axis=1)


def _ranks(reciprocal: np.ndarray) -> np.ndarray:
    return 1.0 / np.clip(reciprocal, 1e-12, None)


def _hits(k: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda reciprocal: (_ranks(reciprocal) <= k + 1e-9).astype(np.float64)


#: Figures recomputed from per-item outcomes: metric -> (items section, fields needed, metric function).
ITEM_METRICS: dict[str, tuple[str, tuple[str, ...], MetricFn]] = {
    "cloze.accuracy": ("cloze", ("correct",), mean_of("correct")),
    "probe.hits_at_1": ("probe", ("hits_at_1",), mean_of("hits_at_1")),
    "probe.mrr": ("probe", ("reciprocal_rank",), mean_of("reciprocal_rank")),
    "probe.hits_at_3": ("probe", ("reciprocal_rank",), mean_of("reciprocal_rank", _hits(3))),
    "probe.hits_at_10": ("probe", ("reciprocal_rank",), mean_of("reciprocal_rank", _hits(10))),
    "probe.mean_rank": ("probe", ("reciprocal_rank",), mean_of("reciprocal_rank", _ranks)),
    "relation.accuracy": ("relation", ("gold", "pred"), accuracy),
    "relation.macro_f1": ("relation", ("gold", "pred"), macro_f1),
    "typing.micro_f1": ("typing", ("gold", "pred"), typing_micro_f1),
    "typing.macro_f1": ("typing", ("gold", "pred"), typing_macro_f1),
    "typing.strict_accuracy": ("typing", ("gold", "pred"), typing_strict_accuracy),
}


# ------------------------------------------------------------------ alignment and resampling


def align_items(
    runs: Sequence[Mapping[str, Sequence[Any]]], fields: Sequence[str], where: str = "items"
) -> tuple[list[dict[str, np.ndarray]], int]:
    """The runs' items restricted to the ids every run has, in the first run's order.

    Each run is ``{"ids": [...], field: [...], ...}``; a repeated id keeps its first occurrence.
    Returns ``([{field: array [N]} per run], N)``. KeptError when a field is missing or its length
    differs from the ids'.
    """
    positions: list[dict[str, int]] = []
    for run in runs:
        ids = [str(i) for i in run.get("ids", [])]
        for name in fields:
            if name not in run or len(run[name]) != len(ids):
                raise KeptError(
                    f"per-item field '{name}' is missing or not as long as 'ids' ({len(ids)})",
                    where=where,
                    fix="re-run `kept evaluate` on the run with this version of kept",
                )
        index: dict[str, int] = {}
        for i, item in enumerate(ids):
            index.setdefault(item, i)
        positions.append(index)
    if not positions:
        return [], 0
    common = [i for i in positions[0] if all(i in p for p in positions[1:])]
    aligned = []
    for run, index in zip(runs, positions):
        take = np.fromiter((index[i] for i in common), dtype=np.int64, count=len(common))  # [N]
        aligned.append({name: _as_array(run[name])[take] for name in fields})
    return aligned, len(common)


def _as_array(values: Sequence[Any]) -> np.ndarray:
    """A per-item field as an array: numbers as they are, label lists (multi-label) as tuples in an object array."""
    if not any(isinstance(value, (list, tuple)) for value in values):
        return np.asarray(values)
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    return out


def resample_weights(rng: np.random.Generator, n_items: int, n_resamples: int) -> np.ndarray:
    """How often each item is drawn in each resample (n_items draws with replacement): [R, N]."""
    draws = rng.integers(0, n_items, size=(n_resamples, n_items))  # [R, N]
    flat = draws + (np.arange(n_resamples, dtype=np.int64) * n_items)[:, None]  # [R, N]
    return np.bincount(flat.ravel(), minlength=n_resamples * n_items).reshape(n_resamples, n_items).astype(np.float64)


def _seed_draws(rng: np.random.Generator, n_a: int, n_b: int, n_resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """Seed indices per resample ([R, n_a], [R, n_b]); the same ones for both when the counts match."""
    draws_a = rng.integers(0, n_a, size=(n_resamples, n_a))
    draws_b = draws_a if n_a == n_b else rng.integers(0, n_b, size=(n_resamples, n_b))
    return draws_a, draws_b


def _seed_mean(per_seed: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Mean over the drawn seeds of a per-seed, per-resample figure: [S, R] with draws [R, S'] -> [R]."""
    columns = np.arange(per_seed.shape[1])[:, None]  # [R, 1]
    return per_seed[draws, columns].mean(axis=1)


#: Differences smaller than this are rounding noise (mean of [0.2, 0.2, 0.2] - 0.2 = 4e-17), i.e. 0.
_NOISE = 1e-10


def _interval(delta: float, resampled: np.ndarray, level: float, method: str, n_items: int) -> Difference:
    delta = 0.0 if abs(delta) < _NOISE else delta
    finite = resampled[np.isfinite(resampled)]
    finite = np.where(np.abs(finite) < _NOISE, 0.0, finite)
    if finite.size == 0:
        return Difference(delta, math.nan, math.nan, math.nan, "n/a", n_items)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return Difference(delta, float(low), float(high), float(np.mean(finite <= 0.0)), method, n_items)


def paired_bootstrap(
    metric_fn: MetricFn,
    items_a_by_seed: Sequence[Mapping[str, Sequence[Any]]],
    items_b_by_seed: Sequence[Mapping[str, Sequence[Any]]],
    n_resamples: int = 1000,
    seed: int = 0,
    *,
    fields: Sequence[str] | None = None,
    level: float = 0.95,
    where: str = "items",
) -> Difference:
    """Difference ``metric(a) − metric(b)`` with a bootstrap interval over paired test items and seeds.

    ``items_*_by_seed``: one ``{"ids": [...], field: [...]}`` per run (seed) of each variant; items
    pair by id (the intersection over all runs, counted in ``n_items``). ``fields``: the fields the
    metric reads (default: every key but ``ids`` of the first run). Seeded: the same arguments give
    the same interval. ``method`` is ``n/a`` (NaN interval) when no item is shared or a variant has
    no run.
    """
    if not items_a_by_seed or not items_b_by_seed:
        return Difference(math.nan, math.nan, math.nan, math.nan, "n/a", 0)
    if fields is None:
        fields = [k for k in items_a_by_seed[0] if k != "ids"]
    aligned, n_items = align_items([*items_a_by_seed, *items_b_by_seed], fields, where=where)
    if n_items == 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, "n/a", 0)
    n_a = len(items_a_by_seed)
    full = np.ones((1, n_items))
    per_seed = np.array([float(metric_fn(run, full)[0]) for run in aligned])  # [S_a + S_b]
    delta = float(np.mean(per_seed[:n_a]) - np.mean(per_seed[n_a:]))
    rng = np.random.default_rng(seed)
    weights = resample_weights(rng, n_items, n_resamples)  # [R, N]
    resampled = np.stack([metric_fn(run, weights) for run in aligned])  # [S_a + S_b, R]
    draws_a, draws_b = _seed_draws(rng, n_a, len(aligned) - n_a, n_resamples)
    diff = _seed_mean(resampled[:n_a], draws_a) - _seed_mean(resampled[n_a:], draws_b)  # [R]
    return _interval(delta, diff, level, "items+seeds", n_items)


def seed_bootstrap(
    values_a: Sequence[float], values_b: Sequence[float], n_resamples: int = 1000, seed: int = 0, *, level: float = 0.95
) -> Difference:
    """Difference of the means over seeds with a bootstrap interval over the seeds only.

    Runs pair by position when both variants have as many; NaN values are dropped first. The
    interval is n/a (NaN, ``method="n/a"``) when a variant has fewer than 2 values.
    """
    a = np.asarray([v for v in values_a if v is not None and math.isfinite(v)], dtype=np.float64)  # [S_a]
    b = np.asarray([v for v in values_b if v is not None and math.isfinite(v)], dtype=np.float64)  # [S_b]
    if a.size == 0 or b.size == 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, "n/a", 0)
    delta = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Difference(0.0 if abs(delta) < _NOISE else delta, math.nan, math.nan, math.nan, "n/a", 0)
    rng = np.random.default_rng(seed)
    draws_a, draws_b = _seed_draws(rng, a.size, b.size, n_resamples)
    diff = a[draws_a].mean(axis=1) - b[draws_b].mean(axis=1)  # [R]
    return _interval(delta, diff, level, "seeds", 0)
