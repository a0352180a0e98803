"""Checkpoints to resume: the complete ones, the half-written ones removed, and the training-relevant
configuration they were made with (``checkpoints/kept_training.json``): resuming with another one is
refused, naming the keys that changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kept.checkpoints import check_resume_state
from kept.config import RunConfig, changed_keys, training_view
from kept.errors import KeptError
from kept.optim import resolve_train_defaults
from kept.rundir import is_main_process, path_fingerprint, read_json, run_paths

TRAINING_SNAPSHOT = "kept_training.json"


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Checkpoint dirs whose trainer_state.json (written last by the Trainer) is readable, oldest first."""
    if not checkpoint_dir.exists():
        return []
    found = []
    for path in checkpoint_dir.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if not path.is_dir() or not suffix.isdigit():
            continue
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        found.append((int(suffix), path))
    return [p for _, p in sorted(found)]


def remove_incomplete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Delete checkpoint dirs a killed process left half-written (no valid trainer_state.json)."""
    complete = set(complete_checkpoints(checkpoint_dir))
    removed = []
    if checkpoint_dir.exists():
        for path in checkpoint_dir.glob("checkpoint-*"):
            if path.is_dir() and path not in complete:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def training_snapshot(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    config, _ = resolve_train_defaults(config)  # derived values compare as the values they resolve to
    paths = run_paths(run_dir)
    inputs = path_fingerprint([paths.encoded_train, paths.tokenizer])
    if config.model.fusion:
        inputs.update(path_fingerprint([paths.embeddings]))
    return {
        "config": training_view(config),
        "inputs": {
            str(Path(k).relative_to(run_dir)) if Path(k).is_relative_to(run_dir) else k: v for k, v in inputs.items()
        },
    }


def check_resume_compatible(config: RunConfig, run_dir: Path) -> None:
    """Refuse to resume checkpoints made with a configuration or data that changes training."""
    paths = run_paths(run_dir)
    snapshot_file = paths.checkpoints / TRAINING_SNAPSHOT
    if not complete_checkpoints(paths.checkpoints) or not snapshot_file.exists():
        return
    saved = read_json(snapshot_file, "training snapshot")
    current = training_snapshot(config, run_dir)
    keys = changed_keys(saved.get("config", {}), current["config"])
    if keys:
        details = ", ".join(
            f"{k}: {saved['config'].get(k, '<unset>')!r} -> {current['config'].get(k, '<unset>')!r}" for k in keys[:8]
        )
        raise KeptError(
            f"the checkpoints were made with a different configuration ({details}{', ...' if len(keys) > 8 else ''})",
            where=paths.checkpoints,
            fix="restore those values, or start over with --restart (deletes the checkpoints)",
        )
    changed_inputs = [
        k
        for k in set(saved.get("inputs", {})) | set(current["inputs"])
        if saved.get("inputs", {}).get(k) != current["inputs"].get(k)
    ]
    if changed_inputs:
        raise KeptError(
            f"the checkpoints were made from other data ({', '.join(sorted(changed_inputs))} changed since)",
            where=paths.checkpoints,
            fix="start over with --restart (deletes the checkpoints)",
        )


# ------------------------------------------------------------------ model


def prepare_checkpoints(config: RunConfig, run_dir: Path, restart: bool) -> str | None:
    """The checkpoint to resume, or None: ``restart`` deletes them all, a half-written one is removed, and
    checkpoints made with another training configuration or data are refused (see check_resume_compatible)."""
    paths = run_paths(run_dir)
    if restart and is_main_process() and paths.checkpoints.exists():
        shutil.rmtree(paths.checkpoints)
    if is_main_process():
        remove_incomplete_checkpoints(paths.checkpoints)
    check_resume_compatible(config, run_dir)
    checkpoints = complete_checkpoints(paths.checkpoints)
    if not checkpoints:
        return None
    check_resume_state(checkpoints[-1])
    return str(checkpoints[-1])
