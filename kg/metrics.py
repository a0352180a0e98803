"""Rank metrics (MRR, mean rank, hits@k): one definition for KG link prediction and the LM probes.

kg imports nothing of ours, so kept.evaluate (the probes) takes it from here; the names of the
figures are the same whether PyKEEN ranked the triples or we did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

#: our figure name -> PyKEEN's rank-based metric name
PYKEEN_METRICS = {
    "mrr": "inverse_harmonic_mean_rank",
    "hits_at_1": "hits_at_1",
    "hits_at_3": "hits_at_3",
    "hits_at_10": "hits_at_10",
    "mean_rank": "arithmetic_mean_rank",
}


def rank_metrics(source: Any, ks: Sequence[int] = (1, 3, 10)) -> dict[str, float]:
    """MRR, mean rank and hits@k, from a PyKEEN metric result or from a list of ranks (1 = best).

    A PyKEEN result gives its figures (both sides, realistic, filtered) under :data:`PYKEEN_METRICS`'
    names; ranks give the same names plus ``count`` (empty input: NaN figures, count 0).
    """
    if hasattr(source, "get_metric"):  # pykeen.evaluation.MetricResults: let PyKEEN do the arithmetic
        return pykeen_rank_metrics(source)
    return ranks_to_metrics(source, ks)


def pykeen_rank_metrics(metric_results: Any) -> dict[str, float]:
    return {key: float(metric_results.get_metric(f"both.realistic.{name}")) for key, name in PYKEEN_METRICS.items()}


def ranks_to_metrics(ranks: Sequence[float] | torch.Tensor, ks: Sequence[int] = (1, 3, 10)) -> dict[str, float]:
    ranks_t = torch.as_tensor(list(ranks) if not isinstance(ranks, torch.Tensor) else ranks, dtype=torch.float64)
    if ranks_t.numel() == 0:
        return {"mrr": math.nan, "mean_rank": math.nan, **{f"hits_at_{k}": math.nan for k in ks}, "count": 0}
    result = {"mrr": float((1.0 / ranks_t).mean()), "mean_rank": float(ranks_t.mean())}
    for k in ks:
        result[f"hits_at_{k}"] = float((ranks_t <= k).double().mean())
    result["count"] = int(ranks_t.numel())
    return result
