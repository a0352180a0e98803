"""The CLI's rich tables of results: a comparison (`kept compare`, `kept demo`) and a distillation
(`kept distill`). Library code returns the data and markdown; these draw them in the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kept.compare_result import CompareResult


def compare_table(result: CompareResult, metrics: Sequence[str] | None = None) -> Any:
    """The comparison for the terminal: one row per metric, one column per variant (as ``to_markdown``)."""
    from rich.markup import escape
    from rich.table import Table

    from kept.compare_result import LOWER_IS_BETTER

    metrics = list(metrics) if metrics is not None else result.shown_metrics()
    title = "kept compare: mean ± std over seeds"
    if result.baseline is not None and result.differences:
        title += f"; Δ to {result.baseline} [95% bootstrap interval], * excludes 0"
    table = Table(title=title)
    table.add_column("metric", style="bold")
    for variant in result.variants:
        table.add_column(f"{variant}\n(n={len(result.runs.get(variant, []))})", justify="right")
    for metric in metrics:
        best = result.best(metric) if len(result.variants) > 1 else None
        row = [metric + (" ↓" if metric in LOWER_IS_BETTER else " ↑")]
        for variant in result.variants:
            text, difference = result.cell(variant, metric)
            text = f"[green]{text}[/]" if variant == best else text
            row.append(f"{text}\n{escape(difference)}" if difference else text)
        table.add_row(*row)
    return table


def distill_table(record: dict[str, Any]) -> Any:
    """Teacher vs student (``distill_metrics.json``): one row per figure, teacher and student columns."""
    from rich.table import Table

    from kept.distill.report import TABLE_ROWS  # torch: imported when a distillation is shown

    table = Table(
        title=f"teacher vs student ({record['speed']['device']}, batch {record['speed']['batch_size']} x "
        f"{record['speed']['sequence_length']} tokens)"
    )
    for column in ("", "teacher", "student"):
        table.add_column(column, justify="right" if column else "left")
    for label, key, form in TABLE_ROWS:
        cells = []
        for name in ("teacher", "student"):
            value = record[name].get(key)
            cells.append("-" if value is None else form.format(value))
        if key == "relation_macro_f1" and record["student"].get(key) is None:
            cells[1] = "skipped (see distill_metrics.json)" if "skipped" in record["student"]["relation"] else "-"
        table.add_row(label, *cells)
    table.add_row(
        "speed-up (MLM logits / encoder)",
        "",
        f"{record['speed']['speedup']:.2f}x / {record['speed']['encoder_speedup']:.2f}x",
    )
    return table
