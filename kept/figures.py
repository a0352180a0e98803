"""The report's matplotlib figures: metric bars, learning curves, annotation statistics.

Every figure is drawn on a bare ``Figure`` (:func:`subplots`), never through pyplot, so no backend is
chosen and a notebook's inline backend stays as it is; :func:`save_figure` writes a PNG atomically.
Used by `kept report` (:mod:`kept.report`), the comparison's bar charts (:mod:`kept.compare_render`)
and the notebooks' views (:mod:`kept.explore`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from kept.compare_result import CompareResult

__all__ = [
    "annotation_figure",
    "learning_curve_figure",
    "metric_bars_figure",
    "run_metrics_figure",
    "save_figure",
    "subplots",
]


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``pyplot.subplots`` on a bare ``Figure``: no pyplot state and no backend chosen, so a notebook's
    inline backend stays as it is and nothing needs closing."""
    from matplotlib.figure import Figure

    figsize = kwargs.pop("figsize", None)
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*args, **kwargs)


def save_figure(figure: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    from kept.rundir import atomic_write_bytes

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def metric_bars_figure(result: CompareResult, metrics: Sequence[str], title: str = "") -> Any:
    """One panel per metric, one bar per variant, error bars = sample std over seeds (n under each bar)."""
    variants = result.variants
    columns = min(4, max(1, len(metrics)))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = subplots(
        rows, columns, figsize=(max(3.2 * columns, 1.1 * len(variants) * columns), 3.2 * rows), squeeze=False
    )
    from matplotlib import colormaps

    colors = [colormaps["tab10"](i % 10) for i in range(len(variants))]
    for index, metric in enumerate(metrics):
        axis = axes[index // columns][index % columns]
        stats = [result.table[v].get(metric) for v in variants]
        means = [s.mean if s is not None and s.n else 0.0 for s in stats]
        stds = [s.std if s is not None and s.n else 0.0 for s in stats]
        axis.bar(range(len(variants)), means, yerr=stds, capsize=4, color=colors)
        axis.set_xticks(range(len(variants)))
        axis.set_xticklabels(
            [f"{v}\n(n={s.n if s is not None else 0})" for v, s in zip(variants, stats)],
            rotation=20 if len(variants) > 3 else 0,
            fontsize=8,
        )
        arrow = "↓" if metric in _lower_is_better() else "↑"
        axis.set_title(f"{metric} {arrow}", fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    for index in range(len(metrics), rows * columns):
        axes[index // columns][index % columns].axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def _lower_is_better() -> frozenset[str]:
    # imported on use: kept.compare_result imports this module when it plots
    from kept.compare_result import LOWER_IS_BETTER

    return LOWER_IS_BETTER


def run_metrics_figure(flat: Mapping[str, float], metrics: Sequence[str], title: str = "") -> Any:
    """Horizontal bars of one run's headline figures (accuracies, hits, MRR: all in [0, 1])."""
    shown = [m for m in metrics if m in flat and not math.isnan(flat[m])]
    figure, axis = subplots(figsize=(6, 0.4 * max(2, len(shown)) + 1))
    axis.barh(range(len(shown)), [flat[m] for m in shown], color="#4C72B0")
    axis.set_yticks(range(len(shown)))
    axis.set_yticklabels(shown)
    axis.invert_yaxis()
    for i, m in enumerate(shown):
        axis.text(flat[m], i, f" {flat[m]:.3f}", va="center", fontsize=8)
    axis.set_title(title)
    axis.grid(axis="x", alpha=0.3)
    return figure


def learning_curve_figure(histories: Mapping[str, Sequence[Mapping[str, Any]]], title: str = "") -> Any:
    """Loss curves (every ``*loss`` key logged by the Trainer, by step) and the learning rate.

    ``histories``: {label: log_history}; several runs share the axes (compare reports).
    """
    figure, (loss_axis, lr_axis) = subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    for label, history in histories.items():
        keys = sorted(
            {
                k
                for entry in history
                for k, v in entry.items()
                if k.endswith("loss") and isinstance(v, (int, float)) and k != "train_loss"
            }
        )
        for key in keys:
            points = [
                (entry.get("step", i), entry[key])
                for i, entry in enumerate(history)
                if isinstance(entry.get(key), (int, float))
            ]
            if points:
                name = key if len(histories) == 1 else f"{label}: {key}"
                style = "--" if key.startswith("eval") else "-"
                loss_axis.plot(*zip(*points), style, marker="o" if len(points) < 20 else None, markersize=3, label=name)
        rates = [
            (entry.get("step", i), entry["learning_rate"])
            for i, entry in enumerate(history)
            if isinstance(entry.get("learning_rate"), (int, float))
        ]
        if rates:
            lr_axis.plot(*zip(*rates), label=label)
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title(title or "learning curves")
    loss_axis.grid(alpha=0.3)
    if loss_axis.get_legend_handles_labels()[0]:
        loss_axis.legend(fontsize=7)
    lr_axis.set_xlabel("step")
    lr_axis.set_title("learning rate")
    lr_axis.grid(alpha=0.3)
    lr_axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    figure.tight_layout()
    return figure


#: Panels of the annotation figure, in order (masking.stats.annotation_stats keys).
_ANNOTATION_TABLES = (
    "spans_by_source",
    "spans_by_kind",
    "candidates_by_source",
    "gold.recall_exact",
    "gold.recall_overlap",
    "gold.link_accuracy",
)


def _count_tables(stats: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Every mapping of numbers in the annotation statistics (e.g. spans by source, by kind)."""
    tables: dict[str, dict[str, float]] = {}
    for key, value in stats.items():
        if key == "counts":  # raw counts behind the derived figures
            continue
        if isinstance(value, Mapping):
            numbers = {
                str(k): float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            if numbers and len(numbers) == len(value):
                tables[key] = numbers
            else:
                for sub, table in _count_tables(value).items():
                    tables[f"{key}.{sub}"] = table
    return tables


def annotation_figure(stats: Mapping[str, Any]) -> Any | None:
    """One bar panel per count table of annotation_stats.json (spans by source, by kind, ...)."""
    found = _count_tables(stats)
    preferred = [name for name in _ANNOTATION_TABLES if found.get(name)]
    tables = (
        {name: found[name] for name in preferred}
        if preferred
        else {k: v for k, v in found.items() if v and k.split(".")[0] not in ("shard", "config")}
    )
    if not tables:
        return None
    columns = min(3, len(tables))
    rows = math.ceil(len(tables) / columns)
    figure, axes = subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for index in range(len(tables), rows * columns):
        axes[index // columns][index % columns].axis("off")
    for index, (name, counts) in enumerate(tables.items()):
        axis = axes[index // columns][index % columns]
        labels = list(counts)[:20]
        axis.bar(range(len(labels)), [counts[k] for k in labels], color="#55A868")
        axis.set_xticks(range(len(labels)))
        axis.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        axis.set_title(name.replace("_", " "))
        axis.grid(axis="y", alpha=0.3)
    linked = _linked_fraction(stats)
    if linked is not None:
        figure.suptitle(f"annotation: linked fraction {linked:.1%}")
    figure.tight_layout()
    return figure


def _linked_fraction(stats: Mapping[str, Any]) -> float | None:
    for key in ("linked_fraction", "entity_linked_fraction", "linked_ratio"):
        value = stats.get(key)
        if isinstance(value, (int, float)):
            return float(value)
    return None
