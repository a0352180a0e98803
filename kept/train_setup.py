"""What the pretraining Trainer is built from: the masking collators, the reporting integrations and the
``TrainingArguments`` of ``config.train`` (steps of the :mod:`kept.pretrain` recipe)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kept import joint_kg, replaced_entity
from kept.batches import BatchSeededCollator
from kept.config import RunConfig
from kept.errors import KeptError
from kept.rundir import RunPaths

#: The encoded columns the collators read (the last two only with encode.sentence_pairs).
COLUMNS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "unit_ids",
    "unit_kind",
    "entity_ids",
    "word_ids",
    "token_type_ids",
    "sentence_order_label",
)


def masking_collators(config: RunConfig, tokenizer: Any, run_dir: Path) -> tuple[Any, Any, list[Any]]:
    """(training collator, evaluation collator, callbacks they need): the masking collator of
    ``config.masking`` (no dEA without fusion) with the joint KG triples, reseeded per batch. Staged ERNIE
    masking follows the batches collated (exact across resumes) without DataLoader workers, else the steps."""
    from kept.callbacks import BatchCounter
    from masking import ErnieStageCallback, KnowledgeMaskingCollator

    masking = config.masking.model_copy(update={"dea": config.masking.dea and config.model.fusion})
    collator = KnowledgeMaskingCollator(tokenizer, config=masking)
    eval_collator = KnowledgeMaskingCollator(tokenizer, config=masking)
    staged = masking.strategy == "ernie" and masking.ernie_mixture is None
    by_batch = staged and config.train.dataloader_num_workers == 0
    total_batches = config.train.max_steps * config.train.gradient_accumulation_steps if by_batch else None
    staged_collator = collator  # the one ErnieStageCallback moves on (the wrappers below pass batches through it)
    collator, eval_collator = replaced_entity.wrap_collators(  # WKLM swaps, when on
        (collator, eval_collator), config, run_dir, tokenizer
    )
    train_collate = BatchSeededCollator(
        joint_kg.wrap_collator(collator, config, run_dir), config.train.seed, salt=0, total_batches=total_batches
    )
    eval_collate = BatchSeededCollator(
        joint_kg.wrap_collator(eval_collator, config, run_dir), config.train.seed, salt=1
    )
    callbacks: list[Any] = []
    if by_batch:
        callbacks.append(BatchCounter(train_collate))
    elif masking.strategy == "ernie":
        callbacks.append(ErnieStageCallback(staged_collator))  # with workers: progress by step (approximate)
    return train_collate, eval_collate, callbacks


def reporting(report_to: Sequence[str] | None, tensorboard_dir: Path) -> tuple[list[str], list[Any]]:
    """The Trainer's ``report_to`` and the callbacks kept adds for ``train.report_to`` (None: TensorBoard when
    installed). TensorBoard writes to ``tensorboard_dir`` (logs/tensorboard) through its own callback."""
    import importlib.util

    from transformers.integrations import TensorBoardCallback, is_tensorboard_available

    if report_to is None:
        report_to = ["tensorboard"] if is_tensorboard_available() else []
    modules = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
    for name in report_to:
        if importlib.util.find_spec(modules[name]) is None:
            raise KeptError(
                f"train.report_to names {name}, which is not installed",
                where="train.report_to",
                fix=f"pip install {name}, or remove it from train.report_to",
            )
    callbacks: list[Any] = []
    if "tensorboard" in report_to:
        tensorboard = TensorBoardCallback()
        tensorboard.logging_dir = str(tensorboard_dir)
        callbacks.append(tensorboard)
    return [name for name in report_to if name != "tensorboard"] or ["none"], callbacks


def training_arguments(
    config: RunConfig,
    paths: RunPaths,
    *,
    bf16: bool,
    warmup_steps: int,
    report_to: list[str],
    evaluate: bool,
    max_steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    progress: bool = False,
) -> Any:
    """The Trainer's arguments from ``config.train``: checkpoints under checkpoints/, every encoded column passed
    to the collator, seeded data order. ``max_steps``, ``batch_size`` and ``learning_rate`` replace train's when
    given (`kept distill` has its own); ``progress`` shows transformers' progress bar."""
    import torch
    from transformers import TrainingArguments

    tcfg = config.train
    learning_rate = learning_rate if learning_rate is not None else tcfg.learning_rate
    assert learning_rate is not None, "set by kept.optim.resolve_train_defaults before training"
    batch_size = batch_size or tcfg.batch_size
    return TrainingArguments(
        output_dir=str(paths.checkpoints),
        max_steps=max_steps if max_steps is not None else tcfg.max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=tcfg.eval_batch_size or batch_size,
        gradient_accumulation_steps=tcfg.gradient_accumulation_steps,
        learning_rate=learning_rate,
        lr_scheduler_type=tcfg.lr_scheduler,
        warmup_steps=warmup_steps,
        weight_decay=tcfg.weight_decay,
        max_grad_norm=tcfg.max_grad_norm,
        seed=tcfg.seed,
        data_seed=tcfg.seed,
        bf16=bf16,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=tcfg.eval_steps,
        save_strategy="steps",
        save_steps=tcfg.save_steps,
        save_total_limit=tcfg.save_total_limit,
        logging_strategy="steps",
        logging_steps=tcfg.logging_steps,
        report_to=report_to,
        disable_tqdm=not progress,
        remove_unused_columns=False,
        prediction_loss_only=True,
        label_names=["labels"],
        dataloader_num_workers=tcfg.dataloader_num_workers,
        use_cpu=tcfg.use_cpu,
        ddp_find_unused_parameters=False,
        save_only_model=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
