"""Resuming `kept distill`: what the checkpoints were made with (refused when it changed), a finished run, and
loading a checkpoint's student + projections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kept.config import RunConfig, changed_keys, flatten, training_view
from kept.errors import KeptError
from kept.rundir import RunPaths, path_fingerprint, read_json

SNAPSHOT_FILE = "kept_distill.json"
#: distill fields that do not change what is learned (may differ when resuming).
NON_TRAINING_FIELDS: frozenset[str] = frozenset({"distill.report_relation", "distill.speed_batches"})


def snapshot(config: RunConfig, teacher: RunPaths) -> dict[str, Any]:
    """What the checkpoints were made with: the distill section (minus reporting), masking, the train settings
    the Trainer reads, and fingerprints of the teacher's weights, data and tokenizer."""
    train = {k: v for k, v in training_view(config).items() if k.startswith("train.")}
    settings = {
        **train,
        **{
            k: v
            for k, v in flatten(
                {"distill": config.distill.model_dump(mode="json"), "masking": config.masking.to_dict()}
            ).items()
            if k not in NON_TRAINING_FIELDS
        },
    }
    inputs = path_fingerprint([teacher.model / "model.safetensors", teacher.encoded_train, teacher.tokenizer])
    return {"config": settings, "inputs": {Path(k).name: v for k, v in inputs.items()}}


def check_resume(out: RunPaths, current: dict[str, Any]) -> None:
    file = out.checkpoints / SNAPSHOT_FILE
    from kept.resume import complete_checkpoints

    if not complete_checkpoints(out.checkpoints) or not file.exists():
        return
    saved = read_json(file, "distillation snapshot")
    keys = changed_keys(saved.get("config", {}), current["config"]) + [
        f"input {k}" for k in changed_keys(saved.get("inputs", {}), current["inputs"])
    ]
    if keys:
        raise KeptError(
            f"the checkpoints were made with other settings or data ({', '.join(keys[:6])} changed)",
            where=out.checkpoints,
            fix="restore them, or start over with --restart (deletes the checkpoints)",
        )


def finished_state(checkpoint: str | None, max_steps: int) -> dict[str, Any] | None:
    """The trainer state of ``checkpoint`` when it is at ``max_steps`` or beyond (nothing left to train), else None."""
    if checkpoint is None:
        return None
    state = read_json(Path(checkpoint) / "trainer_state.json", "trainer state")
    return state if int(state.get("global_step", 0)) >= max_steps else None


def load_checkpoint_weights(model: Any, checkpoint: Path) -> None:
    """The student + projections of a checkpoint (tied weights saved once: tied again after loading)."""
    from safetensors.torch import load_file

    result = model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=False)
    missing = set(result.missing_keys) - set(model._keys_to_ignore_on_save)
    if missing or result.unexpected_keys:
        raise KeptError(
            f"the checkpoint does not fit the student ({len(missing)} missing, "
            f"{len(result.unexpected_keys)} unexpected tensors)",
            where=checkpoint,
            fix="start over with --restart (deletes the checkpoints)",
        )
    model.tie_weights()
