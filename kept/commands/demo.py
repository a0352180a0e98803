"""`kept demo --out runs/demo`: the whole pipeline on the embedded Wikipedia sample, on the CPU, in minutes.

A packaged `kept compare` configuration (kept/demos/LANG-MODEL.yaml, see :mod:`kept.demo`): the shared
stages once in OUT/prepared (Wikipedia sample → KG + TransE → annotation → tokenizer → encoded), then
OUT/runs/token-seed0 (BERT token masking, no fusion) and OUT/runs/entity_fusion-seed0 (entity masking +
KG fusion + dEA) on the same budget, and with ``--model minilm`` (the default) OUT/runs/reference-seed0,
the packaged MiniLM-L6 checkpoint with no continued pretraining; the comparison in OUT/compare/ and
OUT/eval/report.md. Running it again skips what is done.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from kept.commands.common import SET_OPTION, console, quiet_libraries, stdout_console


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output directory (a compare directory)."),
    lang: str = typer.Option("en", "--lang", help="en | zh: the language of the packaged demo."),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        help="minilm (the default where the language has it): continue the packaged "
        "MiniLM-L6 checkpoint (60 steps); tiny: the tiny preset from scratch "
        "(300 steps).",
    ),
    documents: Optional[int] = typer.Option(None, "--documents", help="data.max_documents (default 30)."),
    steps: Optional[int] = typer.Option(
        None, "--steps", help="train.max_steps of each pretraining run (default: 60 for minilm, 300 for tiny)."
    ),
    kg_epochs: Optional[int] = typer.Option(None, "--kg-epochs", help="kg.epochs of TransE (default 30)."),
    relation: bool = typer.Option(
        True,
        "--relation/--no-relation",
        help="Relation classification on FewRel NYT when the data is beside the checkout.",
    ),
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Run the whole KEPT pipeline on the embedded Wikipedia sample and compare token vs entity+fusion."""
    import torch

    from kept.demo import default_model, demo_config_path, demo_overrides, run_demo

    model = model or default_model(lang)
    demo_config_path(lang, model)  # an unknown language or model: one line before anything loads
    quiet_libraries()
    if os.environ.get("OMP_NUM_THREADS") is None and model == "tiny":
        torch.set_num_threads(1)  # the tiny model: one intra-op thread is as fast and does not spin on a busy machine
    overrides = demo_overrides(documents=documents, steps=steps, kg_epochs=kg_epochs, relation=relation)
    outcome = run_demo(
        out,
        lang=lang,
        model=model,
        overrides=[*overrides, *(set_ or [])],
    )
    result, plan = outcome["result"], outcome["plan"]
    from kept.commands.tables import compare_table

    stdout_console().print(compare_table(result))
    stdout_console().print(f"[bold]what it shows[/]: {result.verdict()}", highlight=False)
    console.print(
        f"wrote {plan.out / 'compare' / 'summary.json'}, summary.md and figures/; "
        f"[green]report[/] {outcome['report']}; runs in {plan.out / 'runs'}  "
        f"(total {outcome['seconds']:.0f}s)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
