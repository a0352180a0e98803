"""How a comparison is shown: the markdown table, the one-line verdict, the bar figures and the saved
``summary.json`` / ``summary.md`` / ``figures/*.png`` (the terminal table is the CLI's:
:func:`kept.commands.tables.compare_table`).

Every function takes a :class:`kept.compare_result.CompareResult`; its methods of the same names
(``to_markdown``, ``verdict``, ``legend``, ``plot``, ``save``) call these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kept.analysis.files import json_safe
from kept.compare_result import LOWER_IS_BETTER, VERDICT_METRICS

if TYPE_CHECKING:  # pragma: no cover
    from kept.compare_result import CompareResult


def verdict(result: CompareResult, metric: str | None = None) -> str:
    """One line saying what the comparison shows on ``metric`` (default: the first of
    :data:`VERDICT_METRICS`, else of the headline metrics, that has differences), e.g. ``relation.macro_f1 vs token (0.800): entity+fusion +0.012 [-0.030, 0.050]
    (interval includes 0: no difference shown); reference +0.045 [0.010, 0.080]* (better)``."""
    if metric is None:
        metric = next(
            (
                m
                for m in (*VERDICT_METRICS, *result.shown_metrics())
                if any(m in rows for rows in result.differences.values())
            ),
            None,
        )
    if metric is None or result.baseline is None:
        return "no difference to a baseline was computed (one variant, or no shared metric)"
    lower = metric in LOWER_IS_BETTER
    parts = []
    for variant in result.variants:
        difference = result.differences.get(variant, {}).get(metric)
        if variant == result.baseline or difference is None or not math.isfinite(difference.delta):
            continue
        if not difference.significant:
            word = (
                "interval includes 0: no difference shown"
                if math.isfinite(difference.ci_low)
                else "no interval: one run each without per-item outcomes"
            )
        else:
            word = "better" if (difference.delta < 0) == lower else "worse"
        parts.append(f"{variant} {difference.format()} ({word})")
    base = result.table[result.baseline].get(metric)
    base_text = f" ({base.mean:.3f})" if base is not None and base.n else ""
    return f"{metric} vs {result.baseline}{base_text}: " + ("; ".join(parts) or "no other variant has it")


def legend(result: CompareResult) -> str:
    """One line on how the differences were computed (empty without a baseline)."""
    if result.baseline is None or not result.differences:
        return ""
    paired: dict[str, int] = {}
    for rows in result.differences.values():
        for metric, difference in rows.items():
            if difference.method == "items+seeds":
                section = metric.split(".")[0]
                paired[section] = min(paired.get(section, difference.n_items), difference.n_items)
    over = (
        "over paired test items and seeds where the runs store per-item outcomes (paired items: "
        + ", ".join(f"{section} {count}" for section, count in paired.items())
        + "), else over seeds"
        if paired
        else "over seeds (no run stores per-item outcomes)"
    )
    return (
        f"Difference to `{result.baseline}` (variant − baseline) with a bootstrap 95% interval "
        f"({result.bootstrap.get('resamples')} resamples, seed {result.bootstrap.get('seed')}) {over}; "
        "* the interval excludes 0; n/a: fewer than 2 seeds."
    )


def markdown_table(result: CompareResult, metrics: Sequence[str] | None = None) -> str:
    """Metrics as rows, variants as columns (runs per variant in the header), best in bold."""
    metrics = list(metrics) if metrics is not None else result.shown_metrics()
    header = "| metric | " + " | ".join(f"{v} (n={len(result.runs.get(v, []))})" for v in result.variants) + " |"
    lines = [header, "|" + "---|" * (len(result.variants) + 1)]
    for metric in metrics:
        cells = []
        best = result.best(metric) if len(result.variants) > 1 else None
        for variant in result.variants:
            text, difference = result.cell(variant, metric)
            text = f"**{text}**" if variant == best else text
            cells.append(f"{text} {difference}" if difference else text)
        arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
        lines.append(f"| {metric} {arrow} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("mean ± sample std over seeds (n runs per variant); best in bold; ↑ higher is better, ↓ lower.")
    if legend(result):
        lines.extend(["", legend(result), "", f"What it shows: {verdict(result)}."])
    return "\n".join(lines) + "\n"


def plot(result: CompareResult, out_dir: str | Path, metrics: Sequence[str] | None = None) -> list[Path]:
    """Bar charts with error bars (one PNG per metric group), written atomically."""
    from kept.figures import metric_bars_figure, save_figure

    metrics = list(metrics) if metrics is not None else result.shown_metrics()
    out_dir = Path(out_dir)
    paths = []
    groups: dict[str, list[str]] = {}
    for metric in metrics:
        groups.setdefault(metric.split(".")[0], []).append(metric)
    for group, names in groups.items():
        figure = metric_bars_figure(result, names, title=f"{group}: mean ± std over seeds")
        paths.append(save_figure(figure, out_dir / f"compare_{group}.png"))
    return paths


def save(result: CompareResult, out_dir: str | Path, figures: bool = True) -> dict[str, Path]:
    """Write summary.json, summary.md and figures/*.png under ``out_dir`` (atomically)."""
    from kept.rundir import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    written = {"summary.json": atomic_write_json(out_dir / "summary.json", json_safe(result.to_dict()))}
    text = "# KEPT comparison\n\n" + markdown_table(result) + "\n## Runs\n\n"
    text += "\n".join(f"- **{v}**: " + ", ".join(f"`{r}`" for r in result.runs.get(v, [])) for v in result.variants)
    written["summary.md"] = atomic_write_text(out_dir / "summary.md", text + "\n")
    if figures:
        for path in plot(result, out_dir / "figures"):
            written[f"figures/{path.name}"] = path
    return written
