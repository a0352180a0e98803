"""`kept report PATH`: eval/report.md with PNG figures for a run or a compare directory."""

from __future__ import annotations

from pathlib import Path

import typer


def report_command(
    path: Path = typer.Argument(..., help="A run directory (needs eval/metrics.json) or a compare directory."),
) -> None:
    """Write PATH/eval/report.md and PATH/eval/figures/*.png."""
    from rich.console import Console

    from kept.report import report
    from kept.rundir import RunLock

    if not path.is_dir():
        from kept.errors import KeptError

        raise KeptError(
            "directory not found", where=path, fix="pass a run directory (runs/NAME) or a compare directory"
        )
    with RunLock(path, "kept report"):
        written = report(path)
    Console(stderr=True).print(f"wrote {written}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
