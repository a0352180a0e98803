"""`kept evaluate RUN_DIR`: MLM, entity cloze, KG probe, relation classification, link prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def evaluate_command(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/NAME) with a trained model/."),
    overrides: Optional[list[str]] = typer.Option(
        None, "--set", help="Override a config field, e.g. --set eval.cloze.max_mentions=50 (repeatable)."
    ),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (default: eval.device)."),
) -> None:
    """Evaluate a run's final model; writes RUN_DIR/eval/metrics.json."""
    from kept.commands.common import console
    from kept.config import load_run_config
    from kept.evaluate import evaluate_run_dir, metrics_path
    from kept.rundir import RunLock

    if not run_dir.is_dir():
        from kept.errors import KeptError

        raise KeptError("run directory not found", where=run_dir, fix="pass a run directory (runs/NAME)")
    config = load_run_config(run_dir, overrides or ())
    eval_config = config.eval
    if device:
        eval_config = eval_config.model_copy(update={"device": device})
    with RunLock(run_dir, command="kept evaluate"):
        with console.status("evaluating"):  # each metric's line is logged above the spinner
            record = evaluate_run_dir(run_dir, eval_config)
    print_summary(record, console)
    console.print(f"wrote {metrics_path(run_dir)}")


def print_summary(record: dict, console: object) -> None:
    """A rich table of the headline figures and the skipped metrics."""
    from rich.table import Table

    from kept.analysis import flatten_metrics
    from kept.compare import HEADLINE_METRICS

    flat = flatten_metrics(record)
    table = Table(title=f"kept evaluate: {record.get('run')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric in HEADLINE_METRICS:
        if metric in flat:
            table.add_row(metric, f"{flat[metric]:.4f}")
    for name, section in record.get("metrics", {}).items():
        if isinstance(section, dict) and "skipped" in section:
            table.add_row(name, f"skipped: {section['skipped']}")
    console.print(table)  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
