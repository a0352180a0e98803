"""The CLI's training progress bar: a rich bar as a Trainer callback (library code shows transformers' own
bar, ``progress=True``, or none)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class RichProgressCallback(TrainerCallback):
    """A rich progress bar for training (rank 0), with the last logged loss."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.task: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("pretrain"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is not None and logs:
            parts = [f"{k}={v:.4g}" for k, v in logs.items() if k in ("loss", "eval_loss") and isinstance(v, float)]
            if parts:
                self.progress.update(self.task, info=" ".join(parts))

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def cli_pretrain_callbacks() -> tuple[Any, ...]:
    """The callbacks the CLI adds to pretraining: the rich bar on the main process, none on the others."""
    from kept.rundir import is_main_process

    return (RichProgressCallback(),) if is_main_process() else ()
