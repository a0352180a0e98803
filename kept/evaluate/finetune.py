"""Fine-tuning for the downstream tasks through ``transformers.Trainer`` (shared by the task modules).

:func:`finetune` trains a task model (its ``forward`` takes the collated batch, ``labels`` included,
and returns ``loss`` and ``logits``) with AdamW, linear warm-up and decay, gradient clipping and the
given seed, evaluates on a dev split after every epoch and keeps the best epoch's weights (in memory:
nothing is written to disk). :func:`predict_logits` runs the trained model over a test split.

    >>> result = finetune(model, train, dev, collate=collate, compute_metrics=scores, metric="micro_f1",
    ...                   settings=FinetuneSettings(epochs=3, learning_rate=5e-5, seed=0))
    >>> logits = predict_logits(result.trainer, test)                       # [N, num_labels]
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class FinetuneSettings:
    """Optimisation settings of a downstream fine-tune."""

    epochs: int = 3
    learning_rate: float = 5e-5
    batch_size: int = 16
    warmup_ratio: float = 0.1  # share of the optimisation steps with a linear warm-up
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "cpu"


@dataclass
class FinetuneResult:
    """The trainer (its model holds the best dev epoch's weights), the dev figures of every epoch."""

    trainer: Any
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None  # 1-based; None without a dev split (the last epoch's weights)
    best_metric: float = math.nan
    train_loss: float = math.nan


class _BestStateCallback:
    """Keeps a CPU copy of the weights of the best evaluation so far (``metric`` higher is better)."""

    def __init__(self, metric: str) -> None:
        from transformers import TrainerCallback

        # a subclass made here keeps the transformers import out of module import time
        outer = self

        class _Callback(TrainerCallback):
            def on_evaluate(
                self,
                args: Any,
                state: Any,
                control: Any,
                metrics: Mapping[str, float] | None = None,
                model: torch.nn.Module | None = None,
                **kwargs: Any,
            ) -> None:
                outer.record(state, metrics or {}, model)

        self.callback = _Callback()
        self.metric = metric
        self.best: float = -math.inf
        self.best_epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []

    def record(self, state: Any, metrics: Mapping[str, float], model: torch.nn.Module | None) -> None:
        value = float(metrics.get(f"eval_{self.metric}", math.nan))
        epoch = int(round(state.epoch or 0))
        self.history.append(
            {
                "epoch": epoch,
                **{k.removeprefix("eval_"): float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
            }
        )
        if model is not None and math.isfinite(value) and value > self.best:
            self.best, self.best_epoch = value, epoch
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def freeze_sparse_embeddings(model: torch.nn.Module) -> None:
    """Keep sparse embedding tables (a trainable KG entity table) fixed: AdamW takes no sparse gradients."""
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) and module.sparse:
            module.weight.requires_grad_(False)


def finetune(
    model: torch.nn.Module,
    train: Sequence[Mapping[str, Any]],
    dev: Sequence[Mapping[str, Any]],
    *,
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    compute_metrics: Callable[[Any], dict[str, float]],
    metric: str,
    settings: FinetuneSettings,
) -> FinetuneResult:
    """Train ``model`` on ``train`` with ``transformers.Trainer``; evaluate on ``dev`` after each epoch
    (``compute_metrics(EvalPrediction) -> {name: value}``) and restore the epoch with the highest
    ``metric``. Without dev items the last epoch's weights are kept."""
    from transformers import PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    freeze_sparse_embeddings(model)
    best = _BestStateCallback(metric)
    has_dev = len(dev) > 0
    device = torch.device(settings.device)
    with tempfile.TemporaryDirectory(prefix="kept-finetune-") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            num_train_epochs=settings.epochs,
            per_device_train_batch_size=settings.batch_size,
            per_device_eval_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=settings.warmup_ratio,
            weight_decay=settings.weight_decay,
            max_grad_norm=settings.max_grad_norm,
            seed=settings.seed,
            data_seed=settings.seed,
            eval_strategy="epoch" if has_dev else "no",
            save_strategy="no",  # the best weights are kept in memory by the callback
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            remove_unused_columns=False,
            label_names=["labels"],
            dataloader_num_workers=0,
            dataloader_pin_memory=device.type == "cuda",
            use_cpu=device.type == "cpu",
        )
        before = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            trainer = Trainer(
                model=model,
                args=args,
                train_dataset=list(train),
                eval_dataset=list(dev) if has_dev else None,
                data_collator=collate,
                compute_metrics=compute_metrics,
                callbacks=[best.callback],
            )
            trainer.remove_callback(PrinterCallback)  # the figures go to the result, not to stdout
            output = trainer.train()
        finally:
            hf_logging.set_verbosity(before)
    if best.state is not None:
        model.load_state_dict(best.state)  # the Trainer trains this very module
    return FinetuneResult(
        trainer=trainer,
        history=best.history,
        best_epoch=best.best_epoch,
        best_metric=best.best if best.state is not None else math.nan,
        train_loss=float(output.training_loss),
    )


def predict_logits(trainer: Any, items: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """Logits [N, num_labels] of the trainer's model on ``items`` (in order)."""
    if not items:
        return torch.empty(0, 0)
    output = trainer.predict(list(items))
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return torch.as_tensor(logits).float()
