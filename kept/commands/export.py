"""`kept export RUN_DIR --to bert OUT`: the run's model as a plain transformers directory (see kept.export)."""

from __future__ import annotations

from pathlib import Path

import typer


def export_command(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/NAME) with a pretrained model/."),
    out: Path = typer.Argument(..., help="Directory to write (new, empty, or an earlier export, which is replaced)."),
    to: str = typer.Option(
        "bert", "--to", help="Target: bert (a transformers BertForMaskedLM with the run's tokenizer)."
    ),
    text_only: bool = typer.Option(
        False,
        "--text-only",
        help="Export a fusion model's text path (token side of every layer), dropping "
        "the knowledge layers' entity path.",
    ),
) -> None:
    """Write a model that transformers loads without KEPT (AutoModelForMaskedLM, pipeline("fill-mask"))."""
    from kept.commands.common import console, quiet_libraries
    from kept.errors import KeptError
    from kept.export import NOTE_FILE, export_run

    if not run_dir.is_dir():
        raise KeptError("run directory not found", where=run_dir, fix="pass a run directory (runs/NAME)")
    quiet_libraries()
    result = export_run(run_dir, out, to=to, text_only=text_only)
    console.print(
        f"wrote {result.out}: {result.architecture}, {result.layers} layers, with the run's tokenizer", highlight=False
    )
    if result.fusion:
        console.print(f"text path only, dropped: {'; '.join(result.dropped)} (see {NOTE_FILE})", highlight=False)
    elif not result.dropped:  # the run's model was a BERT already (a `kept distill` student)
        console.print(f"{result.note} (see {NOTE_FILE})", highlight=False)
    else:
        console.print(f"pretrained without fusion: logits equal the KEPT model's (see {NOTE_FILE})", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
