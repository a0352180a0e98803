"""`kept distill TEACHER_RUN --student PRESET|BERT_DIR`: the recipe, top to bottom.

1. The configuration is the teacher run's (its ``masking``, ``train`` and ``eval`` sections) with the ``distill``
   section and overrides; it is saved in OUT as a run configuration of a model without fusion.
2. OUT is a run directory: ``tokenizer/`` copied from the teacher, ``encoded/`` and ``kg/`` links to the
   teacher's (the student is trained and evaluated on the same data; ``kept evaluate OUT`` reads them).
3. The teacher (``KeptForPreTraining``, entity inputs from the batch) and the student (a ``BertForMaskedLM``)
   see the same batches of the run's masking collator, reseeded per batch as in pretraining; dEA corruption is
   off (the teacher gets the true alignments; the masked mentions' own entities stay hidden).
4. The HF Trainer trains the student + projections (:mod:`kept.distill.trainer`); checkpoints in
   ``OUT/checkpoints`` resume (refused when the distillation settings or data changed: ``--restart``);
   ``logs/train_history.json`` has every loss component.
5. ``OUT/model/`` = the student (``save_pretrained`` + tokenizer + ``kept_distill.json``), atomically: a plain
   ``BertForMaskedLM`` that transformers loads without KEPT; ``OUT/distill_metrics.json`` = teacher vs student.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kept.config import RunConfig, save_config
from kept.distill.resume import SNAPSHOT_FILE, check_resume, finished_state, load_checkpoint_weights, snapshot
from kept.errors import Interrupted, KeptError
from kept.rundir import (
    RunPaths,
    atomic_dir,
    atomic_write_json,
    check_run_format,
    is_main_process,
    run_paths,
)

logger = logging.getLogger(__name__)

RECORD_FILE = "kept_distill.json"


@dataclass
class DistillResult:
    out: Path
    model_dir: Path
    steps: int
    train_loss: float | None
    eval_loss: float | None
    resumed_from: str | None
    metrics: dict[str, Any] = field(default_factory=dict)  # distill_metrics.json


def student_run_config(config: RunConfig, out: Path) -> RunConfig:
    """The configuration saved in OUT: the teacher's, named after OUT, the model without fusion (the student
    takes no entity input, so ``kept evaluate OUT`` feeds it none)."""
    model = config.model.model_copy(update={"fusion": False})
    return config.model_copy(update={"name": out.name, "runs_dir": out.parent, "model": model})


def default_out(teacher_run: Path, student: str) -> Path:
    """``runs/<teacher>-distill-<preset or student dir name>``."""
    tag = Path(student).name if Path(student).expanduser().is_dir() else student
    return teacher_run.parent / f"{teacher_run.name}-distill-{tag}"


def link_teacher_data(teacher: RunPaths, out: RunPaths) -> None:
    """OUT/tokenizer (a copy), OUT/encoded and OUT/kg (links to the teacher's, absolute)."""
    if not out.tokenizer.exists():
        with atomic_dir(out.tokenizer) as tmp:
            shutil.copytree(teacher.tokenizer, tmp, dirs_exist_ok=True)
    for name in ("encoded", "kg"):
        source, link = (teacher.root / name).resolve(), out.root / name
        if link.is_symlink() and link.resolve() == source:
            continue
        if link.exists() or link.is_symlink():
            raise KeptError(
                f"{name}/ exists and is not the teacher's",
                where=link,
                fix="distil into a new directory (--out), or remove it",
            )
        if source.exists():
            os.symlink(source, link, target_is_directory=True)


def distill_run(
    teacher_run: str | Path,
    config: RunConfig,
    out: str | Path | None = None,
    *,
    restart: bool = False,
    progress: bool = False,
) -> DistillResult:
    """Distil the teacher run's model into ``config.distill.student``; returns losses and the report."""
    import torch

    from kept.batches import INDEX_KEY, BatchSeededCollator
    from kept.callbacks import HistoryCallback
    from kept.checkpoints import check_resume_state
    from kept.distill.losses import layer_map
    from kept.distill.student import build_student, load_teacher
    from kept.distill.trainer import DistillationModel, distillation_trainer
    from kept.encode import load_encoded
    from kept.evaluate import untrained_mlm_head
    from kept.pretrain import last_logged, resolve_bf16
    from kept.resume import complete_checkpoints, remove_incomplete_checkpoints
    from kept.tokenizer import load_run_tokenizer
    from kept.train_setup import training_arguments
    from masking import KnowledgeMaskingCollator

    teacher_paths = run_paths(teacher_run)
    check_run_format(teacher_paths.root)
    d = config.distill
    if d.student is None:
        raise KeptError(
            "no student given",
            where="distill.student",
            fix="pass --student PRESET|BERT_DIR (presets: tiny, half, small)",
        )
    if not any(w > 0 for w in (d.kd_weight, d.hidden_weight, d.attention_weight, d.mlm_weight)):
        raise KeptError(
            "every loss weight is 0",
            where="distill",
            fix="set distill.kd_weight, hidden_weight, attention_weight or mlm_weight above 0",
        )
    untrained = untrained_mlm_head(teacher_paths.root)
    if untrained is not None and d.kd_weight > 0:  # KD would distil a random projection
        raise KeptError(
            f"the teacher's MLM logits cannot be distilled: {untrained}",
            where="distill.kd_weight",
            fix="set distill.kd_weight: 0 (hidden-state and attention transfer only), or distil from a "
            "run whose MLM head was trained",
        )
    out_dir = Path(out) if out is not None else default_out(teacher_paths.root, d.student)
    if out_dir.resolve() == teacher_paths.root.resolve():
        raise KeptError("the output is the teacher run itself", where=out_dir, fix="give another --out directory")
    paths = run_paths(out_dir)
    started = time.time()
    fusion = bool(config.model.fusion)
    weights = {
        "kd_loss": d.kd_weight,
        "hidden_loss": d.hidden_weight,
        "attention_loss": d.attention_weight,
        "mlm_loss": d.mlm_weight,
    }
    attentions = d.attention_weight > 0

    tokenizer = load_run_tokenizer(teacher_paths.tokenizer)
    train_data = load_encoded(teacher_paths.root, "train")
    validation = load_encoded(teacher_paths.root, "validation") if teacher_paths.encoded_validation.exists() else None
    if validation is not None and len(validation) == 0:
        validation = None
    teacher = load_teacher(teacher_paths, fusion, attentions)
    student = build_student(
        d.student,
        teacher,
        tokenizer,
        overrides=d.student_overrides,
        rule=d.layer_map,
        init_from_teacher=d.init_from_teacher,
        attentions=attentions,
        seed=config.train.seed,
        max_length=config.encode.max_length,
    )
    teacher_layers = int(teacher.config.num_hidden_layers) + int(teacher.config.num_knowledge_layers)
    mapped = layer_map(d.layer_map, int(student.model.config.num_hidden_layers), teacher_layers)
    logger.info(f"layer map (student -> teacher layer): {dict(enumerate(mapped, start=1))}")
    torch.manual_seed(config.train.seed)
    model = DistillationModel(
        student.model, int(teacher.config.hidden_size), mapped, weights, d.temperature, d.attention_loss
    )

    if is_main_process():
        paths.root.mkdir(parents=True, exist_ok=True)
        link_teacher_data(teacher_paths, paths)
        if restart and paths.checkpoints.exists():
            shutil.rmtree(paths.checkpoints)
        remove_incomplete_checkpoints(paths.checkpoints)
    current = snapshot(config, teacher_paths)
    check_resume(paths, current)
    checkpoints = complete_checkpoints(paths.checkpoints)
    resume = str(checkpoints[-1]) if checkpoints else None
    if resume:
        check_resume_state(checkpoints[-1])
    if is_main_process():
        save_config(student_run_config(config, out_dir), out_dir)
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_json(paths.checkpoints / SNAPSHOT_FILE, current)

    # entity_ids for the teacher; the alignments as they are (no dEA corruption)
    masking = config.masking.model_copy(update={"dea": fusion, "dea_replace_prob": 0.0, "dea_remove_prob": 0.0})
    collate = BatchSeededCollator(KnowledgeMaskingCollator(tokenizer, config=masking), config.train.seed, salt=0)
    eval_collate = BatchSeededCollator(KnowledgeMaskingCollator(tokenizer, config=masking), config.train.seed, salt=1)
    columns = [
        c
        for c in ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids", "token_type_ids")
        if c in train_data.column_names
    ]

    def indexed(data: Any) -> Any:
        data = data.select_columns([c for c in columns if c in data.column_names])
        return data.add_column(INDEX_KEY, list(range(len(data))))

    args = training_arguments(
        config,
        paths,
        bf16=resolve_bf16(config.train.bf16),
        warmup_steps=int(round(d.warmup_ratio * d.max_steps)),
        report_to=[],
        evaluate=validation is not None,
        max_steps=d.max_steps,
        batch_size=d.batch_size,
        learning_rate=d.learning_rate,
        progress=progress,
    )
    trainer_class = distillation_trainer(teacher, fusion, eval_collate)
    trainer = trainer_class(
        model=model,
        args=args,
        data_collator=collate,
        train_dataset=indexed(train_data),
        eval_dataset=indexed(validation) if validation is not None else None,
        callbacks=[HistoryCallback(paths.logs / "train_history.json")],
    )
    if not progress:  # without its bar (disable_tqdm) transformers prints every log as a dict instead
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    finished = finished_state(resume, d.max_steps)
    if resume is not None and finished is not None:  # the Trainer would take one more step: load the checkpoint
        logger.info(f"already trained ({resume}); writing the model and the report")
        load_checkpoint_weights(model, Path(resume))
        history, steps, train_loss_mean = finished["log_history"], int(finished["global_step"]), None
    else:
        if resume:
            logger.info(f"resuming from {resume}")
        try:
            output = trainer.train(resume_from_checkpoint=resume)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted at step {trainer.state.global_step}") from None
        history, steps = trainer.state.log_history, trainer.state.global_step
        train_loss_mean = float(output.training_loss)
    eval_loss = last_logged(history, "eval_loss")
    record: dict[str, Any] = {
        "teacher": str(teacher_paths.root.resolve()),
        "student": student.source,
        "student_new_tensors": student.new,
        "student_from_teacher_layers": student.from_teacher,
        "layer_map": mapped,
        "weights": weights,
        "temperature": d.temperature,
        "fusion_teacher": fusion,
        "global_step": steps,
        "max_steps": d.max_steps,
        "train_loss": last_logged(history, "loss"),
        "train_loss_mean": train_loss_mean,
        "eval_loss": eval_loss,
        "resumed_from": resume,
        "runtime_s": round(time.time() - started, 2),
        "num_parameters": int(sum(p.numel() for p in student.model.parameters())),
    }
    if not is_main_process():
        return DistillResult(paths.root, paths.model, steps, record["train_loss"], eval_loss, resume)
    atomic_write_json(
        paths.logs / "train_history.json", {"global_step": steps, "max_steps": d.max_steps, "log_history": history}
    )
    trained = trainer.accelerator.unwrap_model(trainer.model).student
    with atomic_dir(paths.model) as tmp:
        trained.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / RECORD_FILE, record)
    atomic_write_json(paths.logs / "distill_train_metrics.json", record)
    metrics = report(config, teacher_paths, paths, teacher, trained, tokenizer, validation, fusion)
    return DistillResult(paths.root, paths.model, steps, record["train_loss"], eval_loss, resume, metrics)


def report(
    config: RunConfig,
    teacher_paths: RunPaths,
    paths: RunPaths,
    teacher: Any,
    student: Any,
    tokenizer: Any,
    validation: Any,
    fusion: bool,
) -> dict[str, Any]:
    """Teacher vs student (quality and speed) into OUT/distill_metrics.json."""
    from kept.distill.report import METRICS_FILE, compare_models, relation_runner
    from kept.evaluate.common import resolve_device

    if validation is None:
        raise KeptError(
            "the teacher run has no validation split to compare teacher and student on",
            where=teacher_paths.encoded_validation,
            fix="set encode.validation_fraction above 0 and re-run `kept encode` on the teacher",
        )
    eval_config = config.eval
    device = resolve_device(eval_config.device)
    rows = validation.select(range(min(eval_config.mlm.max_examples, len(validation)))).to_list()
    data = eval_config.relation.data or config.data.fewrel
    finetune_seed = eval_config.finetune_seed if eval_config.finetune_seed is not None else config.train.seed
    entity_index = None
    if fusion and (teacher_paths.kg / "entities.tsv").is_file():
        from kept.analysis import load_kg_tables

        entities = load_kg_tables(teacher_paths.root)["entities"]
        entity_index = dict(zip(entities["name"], entities["id"].astype(int)))
    directories = {"teacher": (teacher_paths.model, entity_index), "student": (paths.model, None)}

    def relation(which: str) -> Callable[[], dict[str, Any]] | None:
        if not (config.distill.report_relation and eval_config.relation.enabled):
            return None
        model_dir, index = directories[which]
        logger.info(f"relation fine-tune of the {which}")
        return relation_runner(
            model_dir, paths.tokenizer, eval_config, data, eval_config.seed, finetune_seed, device, index
        )

    masking = config.masking.to_dict()
    metrics = compare_models(
        teacher,
        student,
        tokenizer,
        rows,
        fusion=fusion,
        strategy=str(masking.get("strategy")),
        mlm_probability=float(masking.get("mlm_probability") or 0.15),
        masking=masking,
        seed=eval_config.seed,
        batch_size=eval_config.batch_size,
        max_length=config.encode.max_length,
        speed_batch_count=config.distill.speed_batches,
        device=device,
        relation=relation,
    )
    metrics["teacher"]["path"], metrics["student"]["path"] = str(teacher_paths.model.resolve()), "model"
    atomic_write_json(paths.root / METRICS_FILE, metrics)
    return metrics


__all__ = ["DistillResult", "default_out", "distill_run", "student_run_config"]
