"""`kept run CONFIG`: every stage of a run configuration, skipping what is already done and valid.

Stages, in order (:data:`STAGE_TABLE`, one row each): ``data`` (corpus/documents.jsonl + kg/) → ``kg``
(KG embeddings) → ``annotate`` (corpus/annotated) → ``encode`` (tokenizer + encoded/) → ``pretrain``
(model/) → ``evaluate`` (eval/metrics.json) → ``report`` (eval/report.md).

A stage is *done* when its outputs exist and its stamp (``stamps/<stage>.json``) records the
fingerprint of the configuration part it depends on plus its inputs (names, sizes and mtimes
of the files it reads). Change that part, or re-create an input, and that stage and every stage
after it run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kept.config import RunConfig, save_config
from kept.datasources import has_kg, prepare_data
from kept.errors import KeptError
from kept.rundir import (
    RunLock,
    RunPaths,
    is_main_process,
    make_run_dir,
    run_paths,
    stage_done,
    stamp_fingerprint,
    write_stamp,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageContext:
    """What a stage's ``run`` gets besides the run directory and the configuration."""

    progress: bool = True
    restart_pretrain: bool = False
    pretrain_callbacks: tuple[Any, ...] = ()  # extra Trainer callbacks (the CLI's progress bar)


@dataclass(frozen=True)
class Stage:
    """One stage of a run: what it depends on, what it reads and writes, and how it runs.

    ``config``: the configuration part it depends on (fingerprinted into its stamp); ``inputs`` and
    ``outputs``: the files it reads and writes; ``run``: does the work; ``needed``: False where the run
    has nothing for it to do (``why_not`` says why).
    """

    name: str
    config: Callable[[RunConfig], Any]
    inputs: Callable[[RunConfig, RunPaths], list[Path]]
    outputs: Callable[[RunConfig, RunPaths], list[Path]]
    run: Callable[[Path, RunConfig, StageContext], None]
    needed: Callable[[RunConfig], bool] = lambda config: True
    why_not: str = ""


@dataclass
class StageOutcome:
    stage: str
    status: str  # "ran", "skipped" (done and current), "not needed"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class RunResult:
    run_dir: Path
    outcomes: list[StageOutcome] = field(default_factory=list)

    def ran(self) -> list[str]:
        return [o.stage for o in self.outcomes if o.status == "ran"]

    def skipped(self) -> list[str]:
        return [o.stage for o in self.outcomes if o.status == "skipped"]


def annotation_config(config: RunConfig) -> Any:
    """``config.annotation`` with the words of token_coverage from ``encode.segmenter`` unless it names its own."""
    if config.annotation.segmenter is not None:
        return config.annotation
    return config.annotation.model_copy(update={"segmenter": config.encode.segmenter})


# ------------------------------------------------------------------ what each stage reads


def _kg_files(paths: RunPaths) -> list[Path]:
    return [paths.kg / "entities.tsv", paths.kg / "relations.tsv", paths.kg / "triples.tsv"]


def _data_inputs(config: RunConfig, paths: RunPaths) -> list[Path]:
    data = config.data
    return [
        p for p in (data.corpus, data.wikipedia_dump, data.kg_triples, data.kg_labels, data.kg_aliases) if p is not None
    ]


def _encode_part(config: RunConfig) -> dict[str, Any]:
    c = config.to_dict()
    return {"tokenizer": c["tokenizer"], "encode": c["encode"], "init_from": config.model.init_from}


def _encode_inputs(config: RunConfig, paths: RunPaths) -> list[Path]:
    from kept.config import resolve_init_from

    init_from = resolve_init_from(config.model.init_from, config.runs_dir)
    return [paths.annotated] + ([init_from / "tokenizer.json"] if init_from else [])


def _pretrain_part(config: RunConfig) -> Any:
    from kept.config import training_view
    from kept.optim import resolve_train_defaults

    # null train.* defaults compare as the values they resolve to: pretrain writes them into config.yaml
    resolved, _ = resolve_train_defaults(config)
    return training_view(resolved)


def _pretrain_inputs(config: RunConfig, paths: RunPaths) -> list[Path]:
    inputs = [paths.encoded_train, paths.encoded_validation, paths.tokenizer]
    return inputs + ([paths.embeddings] if config.model.fusion else [])


# ------------------------------------------------------------------ what each stage does


def _run_data(run_dir: Path, config: RunConfig, context: StageContext) -> None:
    info = prepare_data(run_dir, config)
    entities = f", {info['entities']} entities" if "entities" in info else ""
    logger.info(f"data: {info.get('documents', '?')} documents{entities}")


def _run_kg(run_dir: Path, config: RunConfig, context: StageContext) -> None:
    from kept.graphs import embed_run_dir

    metrics = embed_run_dir(run_dir, config.kg)
    logger.info(f"kg: {config.kg.model} embeddings, MRR {metrics.get('mrr', float('nan')):.3f}")


def _run_annotate(run_dir: Path, config: RunConfig, context: StageContext) -> None:
    from kept.annotation import annotate_run_dir

    stats = annotate_run_dir(run_dir, annotation_config(config))
    logger.info(f"annotate: {stats.get('documents', '?')} documents annotated")


def _run_encode(run_dir: Path, config: RunConfig, context: StageContext) -> None:
    from kept.encode import encode_run

    encode_run(run_dir, config)


def _run_pretrain(run_dir: Path, config: RunConfig, context: StageContext) -> None:
    from kept.pretrain import pretrain_run

    result = pretrain_run(
        run_dir,
        config,
        progress=context.progress,
        restart=context.restart_pretrain,
        extra_callbacks=context.pretrain_callbacks,
    )
    logger.info(f"pretrain: {result.steps} steps, train loss {result.train_loss}, eval loss {result.eval_loss}")


def _run_evaluate(run_dir: Path, config: RunConfig, context: StageContext) -> None:
    from kept.evaluate import evaluate_run_dir

    evaluate_run_dir(run_dir, config)
    logger.info(f"evaluate: {run_paths(run_dir).eval / 'metrics.json'}")


def _run_report(run_dir: Path, config: RunConfig, context: StageContext) -> None:
    from kept.report import report_run_dir

    report_run_dir(run_dir)
    logger.info(f"report: {run_paths(run_dir).eval / 'report.md'}")


#: Every stage of a run, in order. The configuration parts are what the stamps fingerprint: changing
#: one makes the run directories made before count that stage (and the ones after it) as stale.
STAGE_TABLE: tuple[Stage, ...] = (
    Stage(
        "data",
        config=lambda c: c.to_dict()["data"],
        inputs=_data_inputs,
        outputs=lambda c, p: [p.documents] + (_kg_files(p) if has_kg(c) else []),
        run=_run_data,
    ),
    Stage(
        "kg",
        config=lambda c: c.to_dict()["kg"],
        inputs=lambda c, p: _kg_files(p),
        outputs=lambda c, p: [p.embeddings, p.kg_metrics],
        run=_run_kg,
        needed=has_kg,
        why_not="no KG in this run",
    ),
    Stage(
        "annotate",
        config=lambda c: annotation_config(c).model_dump(mode="json"),
        inputs=lambda c, p: [p.documents] + ([p.aliases, p.kg / "entities.tsv"] if has_kg(c) else []),
        outputs=lambda c, p: [p.annotated, p.annotation_stats],
        run=_run_annotate,
    ),
    Stage(
        "encode",
        config=_encode_part,
        inputs=_encode_inputs,
        outputs=lambda c, p: [p.tokenizer, p.encoded_train, p.encoded_validation],
        run=_run_encode,
    ),
    Stage(
        "pretrain",
        config=_pretrain_part,
        inputs=_pretrain_inputs,
        outputs=lambda c, p: [p.model / "config.json"],
        run=_run_pretrain,
    ),
    Stage(
        "evaluate",
        config=lambda c: c.to_dict()["eval"],
        inputs=lambda c, p: [p.model, p.encoded_validation],
        outputs=lambda c, p: [p.eval / "metrics.json"],
        run=_run_evaluate,
    ),
    Stage(
        "report",
        config=lambda c: {},
        inputs=lambda c, p: [p.eval / "metrics.json"],
        outputs=lambda c, p: [p.eval / "report.md"],
        run=_run_report,
    ),
)
#: The stage names, in order.
STAGES: tuple[str, ...] = tuple(stage.name for stage in STAGE_TABLE)


def stage(name: str) -> Stage:
    """The row of :data:`STAGE_TABLE` named ``name``."""
    check_stage_names([name], "--stages")
    return next(s for s in STAGE_TABLE if s.name == name)


def stage_fingerprint(row: Stage, config: RunConfig, paths: RunPaths) -> str:
    """The fingerprint a stage's stamp records: its configuration part plus its inputs as they are now."""
    return stamp_fingerprint(row.config(config), row.inputs(config, paths))


def check_stage_names(stages: Sequence[str], option: str) -> None:
    """Refuse a stage name that is not one of :data:`STAGES`, naming the option it came with."""
    for name in stages:
        if name not in STAGES:
            raise KeptError(f"unknown stage '{name}'", where=option, fix=f"choose from {', '.join(STAGES)}")


def run_pipeline(
    config: RunConfig,
    run_dir: str | Path | None = None,
    *,
    stages: Sequence[str] | None = None,
    force: Sequence[str] = (),
    restart_pretrain: bool = False,
    progress: bool = True,
    pretrain_callbacks: Sequence[Any] = (),
) -> RunResult:
    """Run the configured stages in order; skip the ones whose outputs and stamp are current.

    ``stages``: a subset to consider (default: all). ``force``: stages to run even when done (and
    therefore every stage after them). ``progress``: transformers' progress bar while pretraining;
    ``pretrain_callbacks``: Trainer callbacks added to pretraining. Holds the run directory's lock for the
    whole run.
    """
    run_dir = Path(run_dir) if run_dir is not None else config.run_dir()
    wanted = list(stages) if stages else list(STAGES)
    check_stage_names(wanted, "--stages")
    check_stage_names(force, "--force")
    _check_config(config)
    result = RunResult(run_dir)
    context = StageContext(
        progress=progress, restart_pretrain=restart_pretrain, pretrain_callbacks=tuple(pretrain_callbacks)
    )
    make_run_dir(run_dir)
    with RunLock(run_dir, "kept run"):  # the lock also clears a killed writer's temporaries
        save_config(config, run_dir)
        paths = run_paths(run_dir)
        dirty = False  # once a stage runs, every later stage runs too
        for row in STAGE_TABLE:
            if row.name not in wanted:
                continue
            if not row.needed(config):
                result.outcomes.append(StageOutcome(row.name, "not needed", detail=row.why_not))
                continue
            part, inputs = row.config(config), row.inputs(config, paths)
            if (
                not dirty
                and row.name not in force
                and stage_done(run_dir, row.name, stamp_fingerprint(part, inputs), row.outputs(config, paths))
            ):
                result.outcomes.append(StageOutcome(row.name, "skipped", detail="done and current"))
                logger.info(f"{row.name}: done, skipped")
                continue
            started, cpu_started = time.time(), time.process_time()
            row.run(run_dir, config, context)
            dirty = True
            if is_main_process():  # the stamp fingerprints the inputs as they are now (after the stage ran)
                write_stamp(
                    run_dir,
                    row.name,
                    stamp_fingerprint(part, inputs),
                    part,
                    extra={
                        "seconds": round(time.time() - started, 2),
                        "cpu_seconds": round(time.process_time() - cpu_started, 2),
                    },
                )
            result.outcomes.append(StageOutcome(row.name, "ran", round(time.time() - started, 2)))
    return result


def _check_config(config: RunConfig) -> None:
    """Problems that would only surface stages later."""
    if config.model.fusion and not has_kg(config):
        raise KeptError(
            "model.fusion is on but the run has no knowledge graph",
            where="data.kg_triples",
            fix="give data.kg_triples, or set model.fusion: false",
        )
    detectors = [d.type for d in config.annotation.detectors]
    if not has_kg(config) and "gazetteer" in detectors and config.annotation.missing_kg == "error":
        raise KeptError(
            "the annotation uses the KG gazetteer but the run has no knowledge graph",
            where="annotation.detectors",
            fix="give data.kg_triples, remove the gazetteer detector, or set annotation.missing_kg: skip",
        )
    if config.data.source in ("files", "fewrel") and config.data.corpus is None:
        raise KeptError(
            f"data.source '{config.data.source}' needs data.corpus",
            where="data.corpus",
            fix="give the corpus file or directory",
        )
    if config.model.init_from:
        from kept.config import resolve_init_from

        resolve_init_from(config.model.init_from, config.runs_dir)
