"""What a comparison found: per-variant statistics of evaluated runs and each variant's difference to the baseline.

:func:`compare_runs` aggregates already evaluated runs, ``{variant: [run_dir, ...]}`` →
:class:`CompareResult`: mean ± std (sample std, ddof 1, :func:`summarize`) of every figure per variant,
and each variant's difference to the baseline variant with a bootstrap 95% interval
(:func:`difference_to_baseline`, :mod:`kept.significance`): over test items and seeds for figures with
per-item outcomes in ``eval/metrics.json`` ``items`` (cloze, probe, relation), over seeds only for the
others. :class:`CompareResult` formats itself (markdown, a rich table, a one-line verdict, bar figures) and
saves ``summary.json`` (format ``kept.compare.summary``), ``summary.md`` and ``figures/*.png`` through
:mod:`kept.compare_render`.

The compare YAML is :mod:`kept.compare_plan`; running `kept compare` is :mod:`kept.compare`, which re-exports these names.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kept.analysis import flatten_metrics, load_metrics
from kept.analysis.compare_summary import COMPARE_FORMAT, COMPARE_FORMAT_VERSION
from kept.errors import KeptError
from kept.significance import ITEM_METRICS, Difference, paired_bootstrap, seed_bootstrap

#: Figures shown in the printed table, the markdown summary and the figures (when present).
HEADLINE_METRICS: tuple[str, ...] = (
    "mlm.token.loss",
    "mlm.token.accuracy",
    "mlm.token.accuracy_by_kind.entity",
    "mlm.strategy.accuracy",
    "cloze.accuracy",
    "probe.hits_at_1",
    "probe.mrr",
    "relation.accuracy",
    "relation.macro_f1",
    "typing.micro_f1",
    "linkpred.mrr",
    "objectives.rtd_accuracy",
    "objectives.red_accuracy",  # ELECTRA / WKLM runs only (kept.electra)
)
#: The figure a one-line verdict speaks of: the first of these that the comparison has (a downstream task
#: before the intrinsic figures), else the first headline figure.
VERDICT_METRICS: tuple[str, ...] = (
    "relation.macro_f1",
    "typing.micro_f1",
    "cloze.accuracy",
    "probe.mrr",
    "mlm.token.accuracy",
)
#: Figures where lower is better (everything else: higher is better).
LOWER_IS_BETTER: frozenset[str] = frozenset(
    {
        "mlm.token.loss",
        "mlm.strategy.loss",
        "mlm.token.perplexity",
        "mlm.strategy.perplexity",
        "probe.mean_rank",
        "linkpred.mean_rank",
        "objectives.generator_mlm_loss",
        "objectives.rtd_loss",
        "objectives.red_loss",
    }
)
#: Bookkeeping figures left out of the comparison.
_COUNTS = ("num_", "count", "seed", "epochs", "mlm_probability", "chance", "dim", "mean_candidates")


class BootstrapSection(BaseModel):
    """``compare.bootstrap``: the resampling behind the intervals of the differences to the baseline."""

    model_config = ConfigDict(extra="forbid")

    resamples: int = Field(1000, ge=10, description="bootstrap resamples per metric and variant")
    seed: int = Field(0, description="seed of the resampling (the same intervals on every call)")


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int

    def format(self, digits: int = 3) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}" if self.n > 1 else f"{self.mean:.{digits}f}"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def summarize(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (0 for a single value) of the finite values."""
    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not finite:
        return Stat(math.nan, math.nan, 0)
    return Stat(statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0, len(finite))


@dataclass
class CompareResult:
    """Per-variant statistics of every flat metric (``table[variant][metric] -> Stat``) and each
    variant's difference to the baseline (``differences[variant][metric] -> Difference``)."""

    variants: list[str]
    metrics: list[str]
    table: dict[str, dict[str, Stat]]
    runs: dict[str, list[str]]
    per_run: dict[str, dict[str, float]] = field(default_factory=dict)
    headline: list[str] = field(default_factory=lambda: list(HEADLINE_METRICS))
    baseline: str | None = None
    bootstrap: dict[str, int] = field(default_factory=lambda: BootstrapSection().model_dump())
    differences: dict[str, dict[str, Difference]] = field(default_factory=dict)
    shared_data: dict[str, str] = field(default_factory=dict)  # stage -> stamp fingerprint of the prepared data

    def shown_metrics(self) -> list[str]:
        """Headline metrics that some variant has, in headline order (all metrics if none)."""
        shown = [m for m in self.headline if m in self.metrics]
        return shown or list(self.metrics)

    def best(self, metric: str) -> str | None:
        """The variant with the best mean of ``metric`` (lower for losses/ranks); None on a tie."""
        candidates = [
            (v, self.table[v][metric].mean)
            for v in self.variants
            if metric in self.table[v] and self.table[v][metric].n > 0
        ]
        if not candidates:
            return None
        pick = min if metric in LOWER_IS_BETTER else max
        name, value = pick(candidates, key=lambda item: item[1])
        if sum(1 for _, other in candidates if math.isclose(other, value, rel_tol=1e-9, abs_tol=1e-12)) > 1:
            return None  # a tie: nobody is best
        return name

    def cell(self, variant: str, metric: str) -> tuple[str, str]:
        """``("0.400 ± 0.100", "+0.250 [0.100, 0.400]*")``: the statistic and the difference to the
        baseline ("" for the baseline itself and where no difference was computed)."""
        text = self.table[variant].get(metric, Stat(math.nan, math.nan, 0)).format()
        difference = self.differences.get(variant, {}).get(metric)
        return text, difference.format() if difference is not None else ""

    def to_dict(self) -> dict[str, Any]:
        def row(variant: str, metric: str, stat: Stat) -> dict[str, Any]:
            difference = self.differences.get(variant, {}).get(metric)
            return {**stat.to_dict(), **(difference.to_dict() if difference is not None else {})}

        return {
            "format": COMPARE_FORMAT,
            "format_version": COMPARE_FORMAT_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "variants": self.variants,
            "metrics": self.metrics,
            "headline": self.shown_metrics(),
            "runs": self.runs,
            "baseline": self.baseline,
            "bootstrap": dict(self.bootstrap),
            "table": {v: {m: row(v, m, s) for m, s in self.table[v].items()} for v in self.variants},
            "per_run": self.per_run,
            "lower_is_better": sorted(m for m in self.metrics if m in LOWER_IS_BETTER),
            "shared_data": dict(self.shared_data),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompareResult:
        """Read a summary.json (also one written before differences to a baseline existed)."""

        def number(value: Any) -> float:
            return math.nan if value is None else float(value)

        table = {
            v: {m: Stat(number(s["mean"]), number(s["std"]), int(s["n"])) for m, s in rows.items()}
            for v, rows in data["table"].items()
        }
        differences = {
            v: {m: Difference.from_dict(s) for m, s in rows.items() if "delta" in s}
            for v, rows in data["table"].items()
        }
        return cls(
            list(data["variants"]),
            list(data["metrics"]),
            table,
            dict(data["runs"]),
            dict(data.get("per_run", {})),
            list(data.get("headline", HEADLINE_METRICS)),
            data.get("baseline"),
            dict(data.get("bootstrap") or BootstrapSection().model_dump()),
            {v: rows for v, rows in differences.items() if rows},
            dict(data.get("shared_data") or {}),
        )

    # The text and figures of a result live in kept.compare_render (imported on use: it imports this module).

    def verdict(self, metric: str | None = None) -> str:
        """One line saying what the comparison shows on ``metric`` (default: the first of
        :data:`VERDICT_METRICS`, else of the headline metrics, that has differences), e.g. ``relation.macro_f1 vs token (0.800): entity+fusion +0.012 [-0.030, 0.050]
        (interval includes 0: no difference shown); reference +0.045 [0.010, 0.080]* (better)``."""
        from kept.compare_render import verdict

        return verdict(self, metric)

    def legend(self) -> str:
        """One line on how the differences were computed (empty without a baseline)."""
        from kept.compare_render import legend

        return legend(self)

    def to_markdown(self, metrics: Sequence[str] | None = None) -> str:
        """Metrics as rows, variants as columns (runs per variant in the header), best in bold."""
        from kept.compare_render import markdown_table

        return markdown_table(self, metrics)

    def plot(self, out_dir: str | Path, metrics: Sequence[str] | None = None) -> list[Path]:
        """Bar charts with error bars (one PNG per metric group), written atomically."""
        from kept.compare_render import plot

        return plot(self, out_dir, metrics)

    def save(self, out_dir: str | Path, figures: bool = True) -> dict[str, Path]:
        """Write summary.json, summary.md and figures/*.png under ``out_dir`` (atomically)."""
        from kept.compare_render import save

        return save(self, out_dir, figures)


def _is_compared(metric: str) -> bool:
    if ".predicted_by_kind." in f".{metric}.":
        return False
    leaf = metric.rsplit(".", 1)[-1]
    return not any(leaf.startswith(prefix) for prefix in _COUNTS)


def check_baseline(baseline: str | None, variants: Sequence[str]) -> str:
    """The baseline variant: ``baseline`` when it is one of ``variants``, the first variant when None."""
    if baseline is None:
        return str(variants[0])
    if baseline not in variants:
        raise KeptError(
            f"baseline '{baseline}' is not one of the compared variants",
            where="compare.baseline",
            fix=f"use one of: {', '.join(variants)}",
        )
    return baseline


def difference_to_baseline(
    metric: str,
    flats: Sequence[Mapping[str, float]],
    base_flats: Sequence[Mapping[str, float]],
    items: Sequence[Mapping[str, Any]],
    base_items: Sequence[Mapping[str, Any]],
    bootstrap: BootstrapSection,
    where: str = "items",
) -> Difference:
    """A variant's difference to the baseline on one metric: the paired bootstrap over test items and
    seeds when every run of both stores the metric's per-item outcomes (and they share items), else the
    bootstrap over seeds of the runs' figures (runs pair by position: the seed order)."""
    spec = ITEM_METRICS.get(metric)
    if spec is not None:
        section, fields, metric_fn = spec
        runs_a = [run[section] for run in items if isinstance(run.get(section), Mapping)]
        runs_b = [run[section] for run in base_items if isinstance(run.get(section), Mapping)]
        complete = len(runs_a) == len(items) and len(runs_b) == len(base_items)
        if complete and all("ids" in run for run in [*runs_a, *runs_b]):
            difference = paired_bootstrap(
                metric_fn,
                runs_a,
                runs_b,
                bootstrap.resamples,
                bootstrap.seed,
                fields=fields,
                where=f"{where}.{section}",
            )
            if difference.method != "n/a":
                return difference
    return seed_bootstrap(
        [f.get(metric, math.nan) for f in flats],
        [f.get(metric, math.nan) for f in base_flats],
        bootstrap.resamples,
        bootstrap.seed,
    )


def compare_runs(
    run_dirs_by_variant: Mapping[str, Sequence[str | Path]],
    headline: Sequence[str] = HEADLINE_METRICS,
    *,
    baseline: str | None = None,
    bootstrap: BootstrapSection | None = None,
) -> CompareResult:
    """Aggregate evaluated runs: every run needs ``eval/metrics.json`` (KeptError naming it if not).

    ``baseline``: the variant the others are compared to (default: the first). Each other variant
    gets, per metric, its difference to the baseline with a bootstrap interval (see
    :func:`difference_to_baseline`); runs of two variants pair by their position in the lists.
    """
    if not run_dirs_by_variant:
        raise KeptError("no runs to compare", where="compare", fix="give at least one variant with one run")
    baseline = check_baseline(baseline, [str(v) for v in run_dirs_by_variant])
    bootstrap = bootstrap or BootstrapSection()
    table: dict[str, dict[str, Stat]] = {}
    runs: dict[str, list[str]] = {}
    per_run: dict[str, dict[str, float]] = {}
    flats_of: dict[str, list[dict[str, float]]] = {}
    items_of: dict[str, list[dict[str, Any]]] = {}
    names: list[str] = []
    for variant, run_dirs in run_dirs_by_variant.items():
        if not run_dirs:
            raise KeptError(f"variant '{variant}' has no runs", where="compare", fix="give at least one run dir")
        flats, items = [], []
        for run_dir in run_dirs:
            record = load_metrics(run_dir)
            flat = {k: v for k, v in flatten_metrics(record).items() if _is_compared(k)}
            flats.append(flat)
            items.append(dict(record.get("items") or {}))
            per_run[str(run_dir)] = flat
            names.extend(k for k in flat if k not in names)
        runs[str(variant)] = [str(r) for r in run_dirs]
        flats_of[str(variant)], items_of[str(variant)] = flats, items
        table[str(variant)] = {m: summarize([f.get(m, math.nan) for f in flats]) for m in names}
    for variant in table:  # metrics first seen in later variants
        for metric in names:
            if metric not in table[variant]:
                table[variant][metric] = Stat(math.nan, math.nan, 0)
    ordered = [m for m in headline if m in names] + sorted(m for m in names if m not in headline)
    differences: dict[str, dict[str, Difference]] = {}
    for variant in table:
        if variant == baseline:
            continue
        where = f"eval/metrics.json items of the runs of '{variant}' and '{baseline}'"
        rows = {
            m: difference_to_baseline(
                m, flats_of[variant], flats_of[baseline], items_of[variant], items_of[baseline], bootstrap, where
            )
            for m in ordered
        }
        differences[variant] = {m: d for m, d in rows.items() if math.isfinite(d.delta)}
    return CompareResult(
        list(table), ordered, table, runs, per_run, list(headline), baseline, bootstrap.model_dump(), differences
    )
