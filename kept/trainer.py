"""KeptTrainer: the ``transformers.Trainer`` of `kept pretrain`, logging the loss components.

Training logs get ``mlm_loss``/``dea_loss``/``sop_loss``/...: means over the batches since the previous
log (weighted by batch size), next to the Trainer's total ``loss``; evaluations get ``eval_mlm_loss``/...
over the evaluated set, and with SOP labels ``sop_accuracy``/``eval_sop_accuracy``. A component the model
does not return (``dea_loss`` without fusion, ``sop_loss`` without SOP) is left out. Sums stay on the
device until a log (no per-step synchronisation) and are summed over processes in distributed runs.

Evaluation uses its own collator (``eval_collator``: the same seeded masks at every evaluation) and
runs on isolated RNG states, so evaluating does not change what training draws next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from transformers import Trainer

#: Loss components of a KeptForPreTraining output, logged beside the total loss.
LOSS_COMPONENTS: tuple[str, ...] = ("mlm_loss", "dea_loss", "sop_loss", "kg_loss")
#: What the training logs and evaluations report beside the loss: the components and SOP accuracy.
LOGGED_FIGURES: tuple[str, ...] = LOSS_COMPONENTS + (
    "sop_accuracy",
    "generator_mlm_loss",
    "rtd_loss",
    "rtd_accuracy",
    "red_loss",
    "red_accuracy",
)  # ELECTRA / WKLM (kept.electra)


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block on the current RNG states and put them back afterwards: Python's ``random``, numpy's global
    RNG and torch's (CPU and every CUDA device). What the block draws (an evaluation's dEA negatives, its
    dataloader's base seed) then leaves training's random sequence as if the block had not run."""
    import random

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class KeptTrainer(Trainer):
    """See the module docstring. ``eval_collator``: the collator of evaluations (None: ``data_collator``).

    ``logged_figures``: the output entries logged beside the loss, in this order (a subclass training another
    model, e.g. ``kept distill``'s, lists its own)."""

    logged_figures: tuple[str, ...] = LOGGED_FIGURES

    def __init__(self, *args: Any, eval_collator: Callable | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eval_collator = eval_collator
        self._component_sums: dict[bool, torch.Tensor | None] = {True: None, False: None}  # by training mode

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        if self.eval_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        order = inputs.get("sentence_order_label")  # [B]
        if order is not None and getattr(outputs, "sop_logits", None) is not None:  # sop_logits [B, 2]
            outputs["sop_accuracy"] = (outputs.sop_logits.detach().argmax(-1) == order).float().mean()
        self._accumulate(bool(model.training), outputs, int(inputs["input_ids"].shape[0]))
        return (loss, outputs) if return_outputs else loss

    def _accumulate(self, training: bool, outputs: Any, batch_size: int) -> None:
        values = [
            outputs.get(name) if isinstance(outputs, dict) else getattr(outputs, name, None)
            for name in self.logged_figures
        ]
        if all(v is None for v in values):
            return
        device = next(v for v in values if v is not None).device
        row = torch.zeros(2, len(self.logged_figures), device=device)  # [sum of loss * batch, batch] x component
        for i, value in enumerate(values):
            if value is not None:
                row[0, i] = value.detach().float().mean() * batch_size
                row[1, i] = batch_size
        previous = self._component_sums[training]
        self._component_sums[training] = row if previous is None else previous + row.to(previous.device)

    def _component_means(self, training: bool, prefix: str) -> dict[str, float]:
        sums, self._component_sums[training] = self._component_sums[training], None
        if sums is None and self.args.world_size <= 1:
            return {}
        if sums is None:  # this rank saw no batch; still take part in the reduction
            sums = torch.zeros(2, len(self.logged_figures), device=self.args.device)
        if self.args.world_size > 1:
            sums = self.accelerator.reduce(sums.to(self.args.device), reduction="sum")
        total, count = sums.cpu().tolist()
        return {f"{prefix}{name}": total[i] / count[i] for i, name in enumerate(self.logged_figures) if count[i] > 0}

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # a training log (evaluation keys carry a prefix)
            logs = {**logs, **self._component_means(True, "")}
        super().log(logs, *args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        with isolated_rng():  # dEA negatives and the dataloader's seed must not advance training's RNG
            return super().evaluate(*args, **kwargs)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        self._component_sums[False] = None
        output = super().evaluation_loop(
            dataloader,
            description,
            prediction_loss_only=prediction_loss_only,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        output.metrics.update(self._component_means(False, f"{metric_key_prefix}_"))
        return output
