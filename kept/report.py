"""`kept report PATH`: a markdown report with PNG figures for a run or a compare directory.

Run directory → ``RUN_DIR/eval/report.md`` and ``RUN_DIR/eval/figures/``: the figures of
eval/metrics.json, learning curves from the Trainer's log history, annotation statistics
(spans by source and kind, linked fraction), cloze and probe examples.
Compare directory → ``COMPARE_DIR/eval/report.md``: the mean ± std table, bars with error bars per
metric group, and the learning curves of every run. Everything is written atomically; matplotlib
runs with the Agg backend (no display needed).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kept import analysis
from kept.errors import KeptError

if TYPE_CHECKING:  # pragma: no cover
    from kept.compare import CompareResult

__all__ = [
    "annotation_figure",
    "learning_curve_figure",
    "metric_bars_figure",
    "report",
    "report_compare_dir",
    "report_run_dir",
    "run_metrics_figure",
    "save_figure",
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


# ------------------------------------------------------------------ figures


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
    from kept.compare import LOWER_IS_BETTER

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


# ------------------------------------------------------------------ markdown helpers


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return _fmt(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _skipped_lines(metrics: Mapping[str, Any]) -> list[str]:
    return [
        f"- **{name}** skipped: {section['skipped']}"
        for name, section in metrics.items()
        if isinstance(section, Mapping) and "skipped" in section
    ]


# ------------------------------------------------------------------ run report


def report_run_dir(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/eval/report.md`` and ``RUN_DIR/eval/figures/*.png``; return the report path."""
    from kept.compare import HEADLINE_METRICS
    from kept.rundir import atomic_write_text

    run_dir = Path(run_dir)
    data = analysis.load_metrics(run_dir)  # KeptError naming eval/metrics.json when missing
    metrics = data.get("metrics", {})
    flat = analysis.flatten_metrics(data)
    figures_dir = run_dir / "eval" / "figures"
    parts = [f"# KEPT report: {data.get('run', run_dir.name)}\n"]
    model = data.get("model", {})
    parts.append(
        f"Model: strategy **{model.get('strategy')}**, fusion **{model.get('fusion')}**, "
        f"{model.get('num_parameters', 0):,} parameters; evaluated {data.get('created_at', '')} "
        f"with kept {data.get('kept_version', '?')}.\n"
    )

    # headline figures
    parts.append("## Metrics\n")
    shown = [m for m in HEADLINE_METRICS if m in flat]
    parts.append(_md_table(["metric", "value"], [(m, flat[m]) for m in shown]))
    bar_metrics = [m for m in shown if not m.endswith("loss")]
    if bar_metrics:
        save_figure(
            run_metrics_figure(flat, bar_metrics, title=str(data.get("run", run_dir.name))), figures_dir / "metrics.png"
        )
        parts.append("\n![metrics](figures/metrics.png)\n")
    skipped = _skipped_lines(metrics)
    if skipped:
        parts.append("\n" + "\n".join(skipped) + "\n")
    typing = metrics.get("typing")
    if isinstance(typing, Mapping) and "micro_f1" in typing:
        parts.append(
            "\n"
            + _md_table(
                [
                    "entity typing",
                    "types",
                    "train / dev / test",
                    "micro-F1",
                    "macro-F1",
                    "strict accuracy",
                    "types from",
                ],
                [
                    (
                        typing.get("data"),
                        typing.get("num_types"),
                        f"{typing.get('num_train')} / {typing.get('num_dev')} / {typing.get('num_test')}",
                        typing.get("micro_f1"),
                        typing.get("macro_f1"),
                        typing.get("strict_accuracy"),
                        typing.get("type_source", "the data file"),
                    )
                ],
            )
        )
    others = [(m, v) for m, v in flat.items() if m not in shown]
    if others:
        parts.append(
            "\n<details><summary>all figures</summary>\n\n" + _md_table(["metric", "value"], others) + "\n</details>\n"
        )

    # learning curves
    parts.append("\n## Learning curves\n")
    try:
        history = analysis.load_log_history(run_dir)
        source = analysis.log_history_path(run_dir)
        save_figure(learning_curve_figure({run_dir.name: history}), figures_dir / "learning_curves.png")
        parts.append(
            f"From `{source.relative_to(run_dir) if source else '?'}` ({len(history)} log entries).\n\n"
            "![learning curves](figures/learning_curves.png)\n"
        )
    except KeptError as error:
        parts.append(f"No learning curves: {error}\n")

    # annotation statistics
    parts.append("\n## Annotation\n")
    try:
        stats = analysis.load_annotation_stats(run_dir)
        scalars = [
            (k, v)
            for k, v in stats.items()
            if (isinstance(v, (int, float, str)) and not isinstance(v, bool)) or (v is None and k != "counts")
        ]
        if scalars:
            parts.append(_md_table(["statistic", "value"], scalars))
        figure = annotation_figure(stats)
        if figure is not None:
            save_figure(figure, figures_dir / "annotation.png")
            parts.append("\n![annotation](figures/annotation.png)\n")
    except KeptError as error:
        parts.append(f"No annotation statistics: {error}\n")

    # examples
    examples = data.get("examples", {})
    if examples.get("cloze"):
        parts.append("\n## Entity cloze examples\n")
        parts.append(
            _md_table(
                ["context", "gold", "prediction", "ok"],
                [
                    (e.get("context", "")[-160:], e.get("gold"), e.get("prediction"), "✓" if e.get("correct") else "✗")
                    for e in examples["cloze"]
                ],
            )
        )
    probe = metrics.get("probe", {})
    if isinstance(probe, Mapping) and probe.get("per_relation"):
        parts.append("\n## KG probe by relation\n")
        if probe.get("note"):
            parts.append(
                f"{probe['note']}; {probe.get('num_facts')} facts, score = {probe.get('score')} "
                f"of piece log-probs, filtered = {probe.get('filtered')}.\n\n"
            )
        rows = sorted(probe["per_relation"].items(), key=lambda item: -item[1].get("count", 0))
        parts.append(
            _md_table(
                ["relation", "facts", "hits@1", "MRR"],
                [(r, v.get("count"), v.get("hits_at_1"), v.get("mrr")) for r, v in rows[:30]],
            )
        )
    if examples.get("probe"):
        parts.append("\n## KG probe examples\n")
        parts.append(
            _md_table(
                ["prompt", "gold", "prediction", "rank", "candidates"],
                [
                    (e.get("prompt"), e.get("gold"), e.get("prediction"), e.get("rank"), e.get("num_candidates"))
                    for e in examples["probe"]
                ],
            )
        )
    timings = data.get("timings_s")
    if timings:
        parts.append("\n## Evaluation time\n")
        parts.append(_md_table(["metric", "seconds"], list(timings.items())))
    path = run_dir / "eval" / "report.md"
    atomic_write_text(path, "\n".join(parts))
    return path


# ------------------------------------------------------------------ compare report


def report_compare_dir(compare_dir: str | Path) -> Path:
    """Write ``COMPARE_DIR/eval/report.md`` with bars (error bars = std over seeds) and learning curves."""
    from kept.compare import CompareResult
    from kept.rundir import atomic_write_text

    compare_dir = Path(compare_dir)
    summary = analysis.load_compare(compare_dir)
    result = CompareResult.from_dict(summary)
    figures_dir = compare_dir / "eval" / "figures"
    parts = [
        f"# KEPT comparison report: {compare_dir.name}\n",
        f"{len(result.variants)} variants, {sum(len(r) for r in result.runs.values())} runs.\n",
        "## Mean ± std over seeds\n",
        result.to_markdown(),
    ]
    for path in result.plot(figures_dir):
        parts.append(f"![{path.stem}](figures/{path.name})\n")
    histories: dict[str, list[dict[str, Any]]] = {}
    missing = []
    for variant, run_dirs in result.runs.items():
        for run in run_dirs:
            run_path = Path(run) if Path(run).exists() else compare_dir / run
            try:
                histories[f"{variant}/{run_path.name}"] = [
                    {k: v for k, v in e.items() if k in ("step", "loss", "eval_loss", "learning_rate")}
                    for e in analysis.load_log_history(run_path)
                ]
            except KeptError:
                missing.append(str(run))
    parts.append("\n## Learning curves\n")
    if histories:
        save_figure(learning_curve_figure(histories, title="training loss by run"), figures_dir / "learning_curves.png")
        parts.append("![learning curves](figures/learning_curves.png)\n")
    if missing:
        parts.append(f"No log history for: {', '.join(missing)}\n")
    parts.append("\n## All figures\n")
    rows = [(m, *[result.table[v][m].format() for v in result.variants]) for m in result.metrics]
    parts.append(_md_table(["metric", *result.variants], rows))
    path = compare_dir / "eval" / "report.md"
    atomic_write_text(path, "\n".join(parts))
    return path


def report(path: str | Path) -> Path:
    """Report a compare directory or a run directory (decided by what it holds)."""
    path = Path(path)
    if not path.is_dir():
        raise KeptError("directory not found", where=path, fix="pass a run directory or a compare directory")
    if analysis.is_compare_dir(path):
        return report_compare_dir(path)
    return report_run_dir(path)
