"""`kept demo --out runs/demo`: the whole pipeline on the embedded Wikipedia sample, on the CPU, in minutes.

1. shared stages in OUT/ (one run directory): Wikipedia sample → KG + TransE → annotation
   (NER, noun chunks, gazetteer, gold links) → tokenizer → encoded sequences;
2. two continued-pretraining runs on the same budget from the packaged MiniLM-L6 checkpoint
   (``--model minilm``, the default: a real pretrained BERT without an MLM head), OUT/token (BERT token
   masking, no fusion) and OUT/entity_fusion (entity masking + KG fusion + dEA), sharing the shared
   stages' data; and OUT/reference, the checkpoint with no continued pretraining, evaluated the same way
   (``--model tiny`` trains the tiny preset from scratch instead, with a WordPiece tokenizer of its own,
   and has no reference);
3. evaluation of every run, a printed comparison table, and OUT/eval/report.md with figures.

Every step is a stage of :func:`kept.runner.run_pipeline`, so running the demo again skips what
is done; the configuration used is written to OUT/demo.yaml (``kept run OUT/demo.yaml`` works).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from kept.commands.common import SET_OPTION, console, flag_overrides, quiet_libraries
from kept.errors import KeptError

DEMO_CONFIG = """\
# KEPT demo: the embedded Wikipedia sample, {model_comment}, CPU-sized budget.
name: demo
data:
  source: wikipedia_sample
  max_documents: {documents}
kg:
  model: TransE
  dim: 32
  epochs: {kg_epochs}
  batch_size: 512
  learning_rate: 0.02
  evaluation_batch_size: 1024
annotation:
  detectors: [{{type: ner}}, {{type: noun_chunk}}, {{type: gazetteer}}, {{type: gold}}]
{tokenizer_and_model}encode:
  max_length: {max_length}
  validation_fraction: 0.1
  seed: 0
masking:
  strategy: entity
  mlm_probability: 0.15
train:
  max_steps: {steps}
  batch_size: 16
{learning_rate}  seed: 0
  eval_steps: {eval_steps}
  save_steps: {eval_steps}
  logging_steps: 10
  save_total_limit: 1
eval:
  mlm: {{max_examples: 128}}
  cloze: {{max_mentions: 128}}
  probe: {{max_facts: 100, max_candidates: 50}}
  relation: {{enabled: {relation}, max_relations: 5, {relation_size}}}
"""

@dataclass(frozen=True)
class DemoModel:
    """What `--model` changes in the demo's configuration (YAML fragments are formatted into DEMO_CONFIG)."""

    comment: str
    tokenizer_and_model: str  # the tokenizer: and model: sections; {checkpoint} is the packaged checkpoint
    learning_rate: str  # train.* lines, or "" for the values derived from the model size
    max_length: int
    steps: int
    relation_size: str  # eval.relation fields sizing the fine-tune


DEMO_MODELS: dict[str, DemoModel] = {
    # continued pretraining of a real checkpoint: its tokenizer, the learning rates derived from its size
    "minilm": DemoModel("continued pretraining of MiniLM-L6", "tokenizer:\n  base_model: {checkpoint}\n"
                        "model:\n  init_from: {checkpoint}\n  fusion: true\n", "", max_length=64, steps=60,
                        # 3 epochs of 90 sentences left every variant near chance (train loss 1.4 of ln 5 = 1.6)
                        relation_size="max_per_relation: 50, epochs: 8, max_length: 64"),
    "tiny": DemoModel("a tiny model from scratch", "tokenizer:\n  vocab_size: 8000\n  min_frequency: 2\n"
                      "model:\n  preset: tiny\n  fusion: true\n", "  learning_rate: 0.001\n  warmup_ratio: 0.06\n",
                      max_length=128, steps=300, relation_size="max_per_relation: 30, epochs: 2"),
}

#: (directory, masking strategy, fusion) of the compared variants: same data, model size and budget.
VARIANTS: tuple[tuple[str, str, bool], ...] = (("token", "token", False), ("entity_fusion", "entity", True))
SHARED = ("kg", "corpus", "tokenizer", "encoded")


def demo_config_text(documents: int, steps: int | None, kg_epochs: int, relation: bool, model: str = "tiny",
                     checkpoint: Path | None = None) -> str:
    """The demo's run configuration; ``steps`` None: the model's default budget (see :data:`DEMO_MODELS`)."""
    chosen = DEMO_MODELS[model]
    steps = chosen.steps if steps is None else steps
    return DEMO_CONFIG.format(documents=documents, steps=steps, eval_steps=max(steps // 4, 1), kg_epochs=kg_epochs,
                              relation=str(relation).lower(), model_comment=chosen.comment,
                              tokenizer_and_model=chosen.tokenizer_and_model.format(checkpoint=checkpoint),
                              learning_rate=chosen.learning_rate, max_length=chosen.max_length,
                              relation_size=chosen.relation_size)


def _link_shared(base: Path, variant_dir: Path) -> None:
    """The variant run reads the shared stages' outputs through relative symlinks."""
    variant_dir.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        link = variant_dir / name
        if link.is_symlink() or link.exists():
            continue
        os.symlink(Path("..") / name, link)


def run_demo(out: Path, *, documents: int = 30, steps: int | None = None, kg_epochs: int = 30, relation: bool = True,
             model: str = "minilm", overrides: dict[str, Any] | None = None, log=print) -> dict[str, Any]:
    """Run the demo into ``out``; returns the comparison result and the report path."""
    from kept.checkpoints import offline_checkpoint_dir
    from kept.compare import REFERENCE, compare_runs, variant_name
    from kept.config import load_config
    from kept.report import report_compare_dir
    from kept.rundir import atomic_write_text
    from kept.runner import run_pipeline

    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "demo.yaml"
    if model not in DEMO_MODELS:
        raise KeptError(f"unknown demo model '{model}'", where="--model", fix=f"choose from {', '.join(DEMO_MODELS)}")
    checkpoint = offline_checkpoint_dir("minilm-l6") if model == "minilm" else None
    atomic_write_text(config_file, demo_config_text(documents, steps, kg_epochs, relation, model, checkpoint))
    overrides = dict(overrides or {})
    if relation and "eval.relation.data" not in overrides:
        fewrel = _fewrel_file()
        if fewrel is not None:
            overrides["eval.relation.data"] = str(fewrel)
    base = load_config(config_file, overrides)
    if relation and base.eval["relation"]["data"] is None:
        base = load_config(config_file, {**overrides, "eval.relation.enabled": False})
    timings: dict[str, float] = {}

    log("[bold]shared stages[/]: data → kg → annotate → encode")
    t0 = time.time()
    run_pipeline(base, out, stages=("data", "kg", "annotate", "encode"), log=log)
    timings["shared"] = time.time() - t0

    relation_off = {"eval.relation.enabled": False} if not base.eval["relation"]["enabled"] else {}
    plan = [(directory, variant_name(strategy, fusion), {"masking.strategy": strategy, "model.fusion": fusion},
             f"pretrain ({strategy} masking, fusion {'on' if fusion else 'off'})")
            for directory, strategy, fusion in VARIANTS]
    if base.model.init_from:  # the checkpoint as it is: what continued pretraining has to beat
        plan.append((REFERENCE, REFERENCE, {"masking.strategy": "token", "model.fusion": False, "train.max_steps": 0},
                     "the starting checkpoint, no continued pretraining"))
    runs: dict[str, list[Path]] = {}
    for directory, variant, settings, what in plan:
        variant_dir = out / directory
        _link_shared(out, variant_dir)
        config = load_config(config_file, {**overrides, "name": directory, **settings, **relation_off})
        log(f"[bold]{directory}[/]: {what} → evaluate")
        t0 = time.time()
        run_pipeline(config, variant_dir, stages=("pretrain", "evaluate", "report"), log=log)
        timings[directory] = time.time() - t0
        runs[variant] = [variant_dir]

    result = compare_runs(runs)
    # paths relative to the demo directory, so it can be moved
    result.runs = {v: [str(Path(r).relative_to(out)) for r in dirs] for v, dirs in result.runs.items()}
    result.per_run = {str(Path(r).relative_to(out)) if Path(r).is_relative_to(out) else r: flat
                      for r, flat in result.per_run.items()}
    result.save(out / "compare")
    report = report_compare_dir(out)
    timings["total"] = time.time() - started
    return {"result": result, "report": report, "timings": timings, "runs": runs}


def _fewrel_file() -> Path | None:
    """FewRel's NYT set beside the checkout, when present (relation classification in the demo)."""
    candidates = [Path.cwd().parent / "shared" / "data" / "fewrel" / "val_nyt.json",
                  Path(__file__).resolve().parents[3] / "shared" / "data" / "fewrel" / "val_nyt.json"]
    return next((c for c in candidates if c.is_file()), None)


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output directory."),
    documents: int = typer.Option(30, "--documents", help="data.max_documents: Wikipedia articles used."),
    model: str = typer.Option("minilm", "--model",
                              help="minilm: continue the packaged MiniLM-L6 checkpoint (60 steps by default); "
                                   "tiny: the tiny preset from scratch (300 steps)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="train.max_steps of each pretraining run "
                                                                "(default: 60 for minilm, 300 for tiny)."),
    kg_epochs: int = typer.Option(30, "--kg-epochs", help="kg.epochs of TransE."),
    relation: bool = typer.Option(True, "--relation/--no-relation",
                                  help="Relation classification on FewRel NYT when the data is beside the checkout."),
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Run the whole KEPT pipeline on the embedded Wikipedia sample and compare token vs entity+fusion."""
    import torch

    quiet_libraries()
    if os.environ.get("OMP_NUM_THREADS") is None:
        if model == "tiny":
            # the tiny model: one intra-op thread is as fast and does not spin on a busy machine
            torch.set_num_threads(1)
    outcome = run_demo(out, documents=documents, steps=steps, kg_epochs=kg_epochs, relation=relation, model=model,
                       overrides=flag_overrides({}, set_), log=lambda m: console.print(m, highlight=False))
    from rich.console import Console

    Console().print(outcome["result"].rich_table())
    console.print(f"[bold]what it shows[/]: {outcome['result'].verdict()}", highlight=False)
    timings = outcome["timings"]
    console.print(f"[green]report[/] {outcome['report']}  (total {timings['total']:.0f}s: "
                  + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items() if k != "total") + ")", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
