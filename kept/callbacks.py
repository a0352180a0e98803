"""The Trainer callbacks of `kept pretrain`: plain ``TrainerCallback`` classes, one job each.

* :class:`HistoryCallback` writes the log history to ``logs/train_history.json`` after every log;
* :class:`SkipEndOfTrainingEval` leaves the last step's evaluation to ``kept.pretrain.final_evaluation``;
* :class:`BatchCounter` starts the batch count of a :class:`kept.pretrain.BatchSeededCollator` (staged
  ERNIE masking by batch) at the batches already trained, also after a resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from kept.rundir import atomic_write_json


class HistoryCallback(TrainerCallback):
    """Writes the Trainer's log history to a JSON file (rank 0) after every log."""

    def __init__(self, history_path: Path) -> None:
        self.history_path = history_path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero:
            atomic_write_json(
                self.history_path,
                {"global_step": state.global_step, "max_steps": state.max_steps, "log_history": state.log_history},
            )


class SkipEndOfTrainingEval(TrainerCallback):
    """Cancels the Trainer's own evaluation of the whole validation split after the last step when that
    step is not a periodic evaluation step: ``kept.pretrain.final_evaluation`` measures it (capped) instead.
    Runs after the Trainer's DefaultFlowCallback, which asks for that evaluation."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and state.global_step % max(int(state.eval_steps or 1), 1):
            control.should_evaluate = False
        return control


class BatchCounter(TrainerCallback):
    """Sets ``collate.batches_seen`` to the batches trained so far when training (re)starts."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def on_train_begin(self, args, state, control, **kwargs):
        self.collate.batches_seen = state.global_step * args.gradient_accumulation_steps
