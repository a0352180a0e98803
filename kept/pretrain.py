"""`kept pretrain`: the Hugging Face Trainer with the knowledge-masking collator and the fusion model.

Reads ``tokenizer/``, ``encoded/train`` and ``encoded/validation`` (and ``kg/embeddings.safetensors``
when fusion is on), trains ``KeptForPreTraining`` and writes:

* ``checkpoints/checkpoint-N/`` (Trainer checkpoints; resumed automatically),
* ``checkpoints/kept_training.json`` (the training-relevant configuration the checkpoints were made
  with: resuming with a different one is refused, naming the keys that changed),
* ``logs/tensorboard/`` (TensorBoard), ``logs/train_history.json`` (the Trainer's log history, with
  the loss components ``mlm_loss``/``dea_loss``/``sop_loss`` and ``eval_mlm_loss``/... beside ``loss``),
  ``logs/pretrain_metrics.json`` (final train/eval loss, steps, runtime),
* ``model/`` (save_pretrained + tokenizer).

Fusion off = the same model without entity inputs and with dEA weight 0, on the same budget.

Exact resume: the data order comes from the Trainer's seeded sampler, model RNG states from the
checkpoint, and the masking collator is reseeded for every batch from (seed, the dataset indices
of the batch), so a resumed run draws the same masks as an uninterrupted one even though the
Trainer skips the already-seen batches without collating them.

Distributed: run the same command under ``torchrun`` / ``accelerate launch``; the Trainer handles
DDP, and only rank 0 writes run-directory artifacts.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kept import electra

# the recipe's steps live in their own modules; their names stay importable from here
from kept.batches import INDEX_KEY, BatchSeededCollator, batch_seed, with_index  # noqa: E402,F401
from kept.checkpoints import checkpoint_write_guard
from kept.config import RunConfig, save_config
from kept.errors import Interrupted, KeptError
from kept.model_build import (  # noqa: E402,F401
    INIT_TOKENIZER_FIX,
    LOADING_REPORT,
    build_model,
    build_model_and_origins,
    check_init_vocabulary,
    vocabulary_size_error,
)
from kept.optim import (
    OptimizerPlan,
    describe_derived,
    param_group_trainer,
    resolve_train_defaults,
)
from kept.processes import wait_for_everyone, world_size
from kept.resume import (  # noqa: E402,F401
    TRAINING_SNAPSHOT,
    check_resume_compatible,
    complete_checkpoints,
    prepare_checkpoints,
    remove_incomplete_checkpoints,
    training_snapshot,
)
from kept.rundir import (
    RunPaths,
    atomic_write_json,
    is_main_process,
    run_paths,
)
from kept.scale import resolve_warmup
from kept.train_setup import COLUMNS, masking_collators, reporting, training_arguments

logger = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    model_dir: Path
    steps: int
    train_loss: float | None
    eval_loss: float | None
    resumed_from: str | None
    runtime_s: float
    metrics: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ deterministic data plumbing


def resolve_bf16(value: bool | str) -> bool:
    import torch

    if value == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if value and not torch.cuda.is_available():
        raise KeptError(
            "bf16 was requested but there is no CUDA device",
            where="train.bf16",
            fix="use train.bf16: auto (bf16 only on a GPU)",
        )
    return bool(value)


def last_logged(history: list[dict[str, Any]], key: str) -> float | None:
    for entry in reversed(history):
        if key in entry:
            return float(entry[key])
    return None


def pretrain_run(
    run_dir: str | Path,
    config: RunConfig,
    *,
    restart: bool = False,
    progress: bool = True,
    extra_callbacks: Sequence[Any] = (),
) -> PretrainResult:
    """Train (or resume) the run's model; returns final losses and where the model is.

    The recipe: configuration → data → checkpoints to resume → model → collators → trainer → train → install.
    """
    from transformers import PrinterCallback

    from kept.callbacks import HistoryCallback, SkipEndOfTrainingEval
    from kept.encode import check_sentence_pairs, load_encoded
    from kept.tokenizer import load_run_tokenizer
    from kept.trainer import KeptTrainer

    run_dir = Path(run_dir)
    paths = run_paths(run_dir)
    started = time.time()

    # configuration: the derived train defaults resolved (and said)
    config, derived = resolve_train_defaults(config)
    if derived:
        logger.info(describe_derived(derived))

    # data
    tokenizer = load_run_tokenizer(paths.tokenizer)
    train_data = load_encoded(run_dir, "train")
    validation = load_encoded(run_dir, "validation") if paths.encoded_validation.exists() else None
    if validation is not None and len(validation) == 0:
        validation = None

    # checkpoints: the last complete one is resumed, if it was made with this configuration and data
    resume = prepare_checkpoints(config, run_dir, restart)

    # model
    model, origins = build_model_and_origins(config, run_dir, tokenizer)
    check_sentence_pairs(bool(model.config.use_sop), int(model.config.type_vocab_size), train_data, paths.encoded_train)
    if is_main_process():  # only now: a run refused above (init_from, entity dim) leaves config.yaml as it was
        save_config(config, run_dir)  # the configuration as run, derived train defaults resolved
    if config.train.max_steps == 0:
        return save_starting_model(paths, model, tokenizer, config, started, random_mlm_head=origins.random_mlm_head)
    model, origins = electra.wrap_objective(model, origins, config, config.train.seed)  # model.objective
    plan = OptimizerPlan.from_config(config, origins)
    if plan.ignored(config):
        logger.info(
            f"{', '.join(plan.ignored(config))} ignored: {'no parameter is new' if not origins.new else 'nothing is loaded'}"
        )
    logger.info(plan.describe())
    if is_main_process():
        atomic_write_json(
            paths.logs / LOADING_REPORT,
            {
                **origins.to_dict(),
                "optimizer": plan.to_dict(),
                "train_defaults": {d.key: {"value": d.value, "reason": d.reason} for d in derived},
            },
        )

    # collators: masks reseeded from each batch's indices (exact resume); evaluation has its own
    train_collate, eval_collate, masking_callbacks = masking_collators(config, tokenizer, run_dir)

    # trainer
    tcfg = config.train
    bf16 = resolve_bf16(tcfg.bf16)
    warmup = resolve_warmup(config)  # warmup_tokens -> steps (kept.scale)
    logger.info(warmup.describe())
    report_to, report_callbacks = reporting(tcfg.report_to, paths.logs / "tensorboard")
    args = training_arguments(
        config,
        paths,
        bf16=bf16,
        warmup_steps=warmup.steps,
        report_to=report_to,
        evaluate=validation is not None,
        progress=progress,  # transformers' own bar; the CLI passes its rich bar in extra_callbacks instead
    )
    callbacks = [
        HistoryCallback(paths.train_history),
        SkipEndOfTrainingEval(),
        *report_callbacks,
        *masking_callbacks,
        *extra_callbacks,
    ]
    trainer = param_group_trainer(KeptTrainer, plan)(
        model=model,
        args=args,
        data_collator=train_collate,
        eval_collator=eval_collate,
        train_dataset=with_index(train_data, COLUMNS),
        eval_dataset=with_index(validation, COLUMNS) if validation is not None else None,
        callbacks=callbacks,
    )
    if not progress:  # without its bar (disable_tqdm) transformers prints every log as a dict instead
        trainer.remove_callback(PrinterCallback)

    # train
    if is_main_process():
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_json(paths.checkpoints / TRAINING_SNAPSHOT, training_snapshot(config, run_dir))
    if resume:
        logger.info(f"resuming from {resume}")
    try:
        with checkpoint_write_guard(paths.checkpoints):  # disk full: one line, the partial checkpoint removed
            train_output = trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:  # Ctrl-C: the complete checkpoints stay; a re-run resumes from the last
        raise Interrupted(f"interrupted at step {trainer.state.global_step}") from None
    eval_loss, eval_examples = None, 0
    if validation is not None:
        eval_loss, eval_examples = final_evaluation(
            trainer, validation, COLUMNS, tcfg.final_eval_max_examples, tcfg.seed
        )

    # install: model/ with the tokenizer and the metrics (only after the last step)
    history = trainer.state.log_history
    stopped_early = trainer.state.global_step < tcfg.max_steps
    metrics = {
        "global_step": trainer.state.global_step,
        "max_steps": tcfg.max_steps,
        "train_loss": last_logged(history, "loss"),
        "train_loss_mean": float(train_output.training_loss),
        "eval_loss": eval_loss,
        "eval_examples": eval_examples,
        "fusion": config.model.fusion,
        "strategy": config.masking.strategy,
        "bf16": bf16,
        "resumed_from": resume,
        "runtime_s": round(time.time() - started, 2),
        "world_size": world_size(),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "train_steps_per_second": train_output.metrics.get("train_steps_per_second"),
        **electra.pretrain_metrics(config),
    }
    partial = paths.root / "model.partial"
    if is_main_process() and partial.exists():
        shutil.rmtree(partial)  # left by a process killed while saving
    if not stopped_early:
        # every rank takes part (FSDP/DeepSpeed gather); the Trainer writes on rank 0 only
        electra.save_final(trainer, model, str(partial), is_main_process())  # ELECTRA: the discriminator
    if is_main_process():
        atomic_write_json(
            paths.train_history,
            {"global_step": trainer.state.global_step, "max_steps": tcfg.max_steps, "log_history": history},
        )
        if not stopped_early:
            install_model(paths, partial, tokenizer, metrics)
    wait_for_everyone()
    return PretrainResult(
        paths.model, trainer.state.global_step, metrics["train_loss"], eval_loss, resume, metrics["runtime_s"], metrics
    )


# ------------------------------------------------------------------ installing the model


def install_model(paths: RunPaths, partial: Path, tokenizer: Any, metrics: dict[str, Any]) -> None:
    """Complete ``partial`` (a saved model) with the tokenizer and metrics and move it to ``model/``;
    a previous model is replaced only once the new one is whole."""
    tokenizer.save_pretrained(str(partial))
    atomic_write_json(partial / "kept_pretrain.json", metrics)
    old = paths.root / "model.old"
    if paths.model.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(paths.model, old)
    os.replace(partial, paths.model)
    shutil.rmtree(old, ignore_errors=True)
    atomic_write_json(paths.logs / "pretrain_metrics.json", metrics)


def save_starting_model(
    paths: RunPaths,
    model: Any,
    tokenizer: Any,
    config: RunConfig,
    started: float,
    random_mlm_head: bool = False,
) -> PretrainResult:
    """``train.max_steps: 0``: save the model as built (e.g. a BERT checkpoint through ``from_bert``) with
    no training, so the starting point is evaluated through the same steps as the trained variants.
    ``random_mlm_head`` (the checkpoint had none) is recorded: the evaluation then skips the figures read
    through the MLM head, which would score a random projection, and keeps the fine-tuned ones."""
    metrics: dict[str, Any] = {
        "global_step": 0,
        "max_steps": 0,
        "train_loss": None,
        "eval_loss": None,
        "fusion": config.model.fusion,
        "strategy": config.masking.strategy,
        "resumed_from": None,
        "runtime_s": round(time.time() - started, 2),
        "world_size": world_size(),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "note": "train.max_steps 0: the starting model, not trained",
        "random_mlm_head": random_mlm_head,
    }
    if is_main_process():
        partial = paths.root / "model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(str(partial))
        install_model(paths, partial, tokenizer, metrics)
    wait_for_everyone()
    logger.info("pretrain: train.max_steps is 0, saved the starting model without training")
    return PretrainResult(paths.model, 0, None, None, None, metrics["runtime_s"], metrics)


def final_evaluation(
    trainer: Any, validation: Any, columns: Sequence[str], max_examples: int | None, seed: int
) -> tuple[float, int]:
    """The validation loss after training and the number of sequences it was measured on.

    The periodic evaluation of the last step (every ``train.eval_steps``) is reused when there was one
    (the whole split, no extra pass). Otherwise the whole split is evaluated when it has at most
    ``max_examples`` sequences (logged as ``eval_loss``), else a seeded sample of ``max_examples`` of
    them (logged as ``final_eval_loss``, so that the ``eval_loss`` curve stays on the whole split).
    """
    history = trainer.state.log_history
    last = next((entry for entry in reversed(history) if "eval_loss" in entry), None)
    if last is not None and last.get("step") == trainer.state.global_step:
        return float(last["eval_loss"]), len(validation)
    prefix = "eval"
    if max_examples is not None and len(validation) > max_examples:
        rng = np.random.default_rng(seed)
        validation = validation.select(np.sort(rng.choice(len(validation), max_examples, replace=False)).tolist())
        prefix = "final_eval"
    metrics = trainer.evaluate(with_index(validation, columns), metric_key_prefix=prefix)
    return float(metrics[f"{prefix}_loss"]), len(validation)
