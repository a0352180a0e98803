"""`kept distill TEACHER_RUN --student PRESET|BERT_DIR`: a plain BERT student of a KEPT run (see kept.distill)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kept.commands.common import SET_OPTION, console, flag_overrides, quiet_libraries


def distill_command(
    teacher_run: Path = typer.Argument(..., help="The teacher: a pretrained KEPT run directory (runs/NAME)."),
    student: Optional[str] = typer.Option(
        None, "--student", help="distill.student: a preset (tiny | half | small) or a BERT model directory."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output run directory (default: runs/<teacher>-distill-<student>)."
    ),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="distill.max_steps."),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="YAML run configuration (default: TEACHER_RUN/config.yaml)."
    ),
    restart: bool = typer.Option(False, "--restart", help="Delete the output's checkpoints and start over."),
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Distil the run's model into a BERT that needs no KG; writes OUT/model and OUT/distill_metrics.json."""
    quiet_libraries()
    from kept.commands.tables import distill_table
    from kept.config import resolve_run_config
    from kept.distill import distill_run
    from kept.distill.report import METRICS_FILE
    from kept.distill.run import default_out
    from kept.errors import KeptError
    from kept.rundir import RunLock, check_run_dir, is_main_process

    if not teacher_run.is_dir():
        raise KeptError("teacher run directory not found", where=teacher_run, fix="pass a pretrained run (runs/NAME)")
    overrides = flag_overrides({"distill.student": student, "distill.max_steps": max_steps}, set_)
    cfg = resolve_run_config(teacher_run, config, overrides)
    if cfg.distill.student is None:
        raise KeptError(
            "no student given", where="--student", fix="pass --student PRESET|BERT_DIR (presets: tiny, half, small)"
        )
    out = out if out is not None else default_out(teacher_run, cfg.distill.student)
    check_run_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out, "kept distill"):
        result = distill_run(teacher_run, cfg, out, restart=restart, progress=False)
    if is_main_process():
        console.print(
            f"[green]distilled[/] {result.steps} steps: train loss {result.train_loss}, eval loss "
            f"{result.eval_loss} -> {result.model_dir}",
            highlight=False,
        )
        console.print(distill_table(result.metrics))
        console.print(f"wrote {result.out / METRICS_FILE}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_command)
