"""`kept report PATH`: a markdown report with PNG figures for a run or a compare directory.

Run directory → ``RUN_DIR/eval/report.md`` and ``RUN_DIR/eval/figures/``: the figures of
eval/metrics.json, learning curves from the Trainer's log history, annotation statistics
(spans by source and kind, linked fraction), cloze and probe examples.
Compare directory → ``COMPARE_DIR/eval/report.md``: the mean ± std table, bars with error bars per
metric group, and the learning curves of every run. Everything is written atomically; the figures come
from :mod:`kept.figures` (no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kept import analysis
from kept.analysis.compare_summary import is_compare_dir
from kept.analysis.history import log_history_path
from kept.errors import KeptError
from kept.figures import annotation_figure, learning_curve_figure, run_metrics_figure, save_figure

__all__ = [
    "report",
    "report_compare_dir",
    "report_run_dir",
]


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
    from kept.compare_result import HEADLINE_METRICS
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
        source = log_history_path(run_dir)
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
    from kept.compare_result import CompareResult
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
    if is_compare_dir(path):
        return report_compare_dir(path)
    return report_run_dir(path)
