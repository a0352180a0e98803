"""A run's training log history (the Trainer's ``log_history``) and the file it is read from."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kept.analysis.files import existing_dir
from kept.atomic_io import read_json
from kept.errors import KeptError


def _checkpoint_step(path: Path) -> int:
    match = re.search(r"checkpoint-(\d+)$", path.name)
    return int(match.group(1)) if match else -1


def log_history_path(run_dir: str | Path) -> Path | None:
    """The file the training log history is read from, or None: ``logs/train_history.json`` first,
    then log_history.json / trainer_state.json of the run, the model or the latest checkpoint."""
    run_dir = Path(run_dir)
    candidates = [
        run_dir / "logs" / "train_history.json",
        run_dir / "log_history.json",
        run_dir / "trainer_state.json",
        run_dir / "checkpoints" / "log_history.json",
        run_dir / "checkpoints" / "trainer_state.json",
        run_dir / "model" / "trainer_state.json",
    ]
    checkpoints = (
        sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=_checkpoint_step, reverse=True)
        if (run_dir / "checkpoints").is_dir()
        else []
    )
    candidates += [c / "trainer_state.json" for c in checkpoints]
    return next((c for c in candidates if c.is_file()), None)


def load_log_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The HF Trainer's ``log_history``: a list of dicts with step, epoch, loss/eval_loss, learning_rate...

    Read from ``log_history.json`` (a list, or an object with ``log_history``) or a ``trainer_state.json``.
    """
    path = log_history_path(existing_dir(run_dir))
    if path is None:
        raise KeptError(
            "no training log history (log_history.json or trainer_state.json)",
            where=Path(run_dir) / "checkpoints",
            fix="pretrain the run first (`kept run CONFIG`)",
        )
    data = read_json(path, "training log history", "re-run pretraining")
    history = data.get("log_history") if isinstance(data, dict) else data
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        raise KeptError("log history must be a list of objects", where=path, fix="re-run pretraining")
    return history
