"""`kept run CONFIG`: every stage of a run configuration, skipping what is done and current."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kept.commands.common import SET_OPTION, console, flag_overrides, quiet_libraries


def run_command(
    config: Path = typer.Argument(..., help="YAML run configuration."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Run directory (default: runs_dir/name from the config)."
    ),
    stages: Optional[str] = typer.Option(
        None, "--stages", help="Comma-separated subset: data,kg,annotate,encode,pretrain,evaluate,report."
    ),
    force: Optional[str] = typer.Option(None, "--force", help="Comma-separated stages to re-run even when done."),
    restart_pretrain: bool = typer.Option(False, "--restart-pretrain", help="Delete pretraining checkpoints first."),
    name: Optional[str] = typer.Option(None, "--name", help="name (the run directory under runs_dir)."),
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Run data → kg embed → annotate → encode → pretrain → evaluate → report."""
    from rich.table import Table

    from kept.commands.progress import cli_pretrain_callbacks
    from kept.config import load_config
    from kept.rundir import is_main_process
    from kept.runner import run_pipeline

    quiet_libraries()
    cfg = load_config(config, flag_overrides({"name": name}, set_))

    def split(text: str | None) -> list[str] | None:
        return [s.strip() for s in text.split(",") if s.strip()] if text else None

    result = run_pipeline(
        cfg,
        out,
        stages=split(stages),
        force=split(force) or (),
        restart_pretrain=restart_pretrain,
        progress=False,  # the rich bar below instead of transformers' own
        pretrain_callbacks=cli_pretrain_callbacks(),
    )
    if is_main_process():
        table = Table(title=f"kept run {result.run_dir}")
        for column in ("stage", "status", "seconds"):
            table.add_column(column)
        for outcome in result.outcomes:
            table.add_row(outcome.stage, outcome.status, f"{outcome.seconds:.1f}" if outcome.status == "ran" else "")
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
