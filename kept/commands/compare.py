"""`kept compare CONFIG`: masking strategies × fusion on/off × seeds on the same data and budget."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kept.commands.common import stdout_console


def compare_command(
    config: Path = typer.Argument(..., help="YAML: a run configuration plus a `compare:` section."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Compare directory (default: compare.out or runs_dir/name)."
    ),
    force: Optional[str] = typer.Option(None, "--force", help="Comma-separated stages to re-run in every run."),
    set_: Optional[list[str]] = typer.Option(
        None, "--set", help="Override a base configuration field: --set train.max_steps=50 (repeatable)."
    ),
) -> None:
    """Prepare the data once, train and evaluate every variant × seed, print mean ± std per metric.

    Writes OUT/compare/summary.json, summary.md and figures/*.png; each run lives in OUT/runs/.
    """
    import datasets
    from rich.console import Console

    from kept.compare import load_compare_config, run_compare

    console = Console(stderr=True)
    datasets.disable_progress_bars()
    plan = load_compare_config(config, set_ or ())
    if out is not None:
        plan.out = out
    split = [s.strip() for s in force.split(",") if s.strip()] if force else []
    result = run_compare(plan, force=split)
    from kept.commands.tables import compare_table

    stdout_console().print(compare_table(result))
    stdout_console().print(f"[bold]what it shows[/]: {result.verdict()}", highlight=False)
    console.print(f"wrote {plan.out / 'compare' / 'summary.json'}, summary.md and figures/")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)
