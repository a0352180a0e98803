"""A test hook: stop training after a global step (and save), to test interruption and resume."""

from __future__ import annotations

from transformers import TrainerCallback


class StopAtStep(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = True
        return control
