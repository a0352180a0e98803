"""A disk that fills up while an artefact or a checkpoint is written (issue 14): one line naming the file and
what to do, the temporary removed, the previous complete artefact or checkpoint intact."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from kept.checkpoints import checkpoint_write_guard
from kept.errors import KeptError
from kg._io import atomic_dir, atomic_write_json, atomic_write_with, write_failure
from kg.errors import KGError

TORCH_FULL = RuntimeError(
    "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: file write failed"
)
SAFETENSORS_FULL = RuntimeError(
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
)


def enospc(*_: object, **__: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_write_failure_sees_through_torch_and_safetensors_wrappers() -> None:
    assert write_failure(OSError(errno.ENOSPC, "full")).errno == errno.ENOSPC
    assert write_failure(TORCH_FULL).errno == errno.ENOSPC
    assert write_failure(SAFETENSORS_FULL).errno == errno.ENOSPC
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "quota")
    assert write_failure(wrapped).errno == errno.EDQUOT
    assert write_failure(RuntimeError("CUDA out of memory")) is None
    assert write_failure(OSError(errno.ENOENT, "no such file")) is None


@pytest.mark.parametrize("failure", [TORCH_FULL, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))])
def test_atomic_file_write_keeps_the_old_file(tmp_path: Path, failure: BaseException) -> None:
    target = tmp_path / "weights.pt"
    target.write_bytes(b"old")

    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise failure

    with pytest.raises(KGError) as info:
        atomic_write_with(target, writer)
    message = str(info.value)
    assert "weights.pt" in message and "No space left on device" in message and "free disk space" in message
    assert "\n" not in message
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["weights.pt"]


def test_atomic_dir_keeps_the_old_directory_when_torch_fails(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("{}")
    with pytest.raises(KGError, match=r"model.*No space left on device"):
        with atomic_dir(target) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise SAFETENSORS_FULL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]


def test_atomic_json_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "stats.json"
    atomic_write_json(target, {"a": 1})
    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(KGError, match=r"stats.json.*No space left"):
        atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1} and len(list(tmp_path.iterdir())) == 1


def _checkpoint(root: Path, step: int, complete: bool) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_checkpoint_guard_removes_the_partial_checkpoint_and_keeps_the_previous(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    previous = _checkpoint(checkpoints, 5, complete=True)
    with pytest.raises(KeptError) as info:
        with checkpoint_write_guard(checkpoints):
            _checkpoint(checkpoints, 10, complete=False)
            raise TORCH_FULL
    message = str(info.value)
    assert "checkpoint-10" in message and "No space left on device" in message and "resumes" in message
    assert ".kept.lock" not in message and "\n" not in message
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-5"]
    assert (previous / "trainer_state.json").exists()


def test_checkpoint_guard_leaves_other_errors_alone(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a bug"):
        with checkpoint_write_guard(tmp_path):
            raise ValueError("a bug")
    with pytest.raises(KeptError, match="already one line"):
        with checkpoint_write_guard(tmp_path):
            raise KeptError("already one line")


def test_run_lock_on_a_full_disk_is_still_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kept.rundir import RunLock

    run = tmp_path / "run"
    run.mkdir()
    (run / "run_format.json").write_text("")  # keep write_run_format from writing
    monkeypatch.setattr(os, "write", enospc)
    lock = RunLock(run, "kept pretrain")
    try:
        monkeypatch.setattr("kept.rundir.write_run_format", lambda _: None)
        monkeypatch.setattr("kept.rundir.check_run_format", lambda _: None)
        lock.acquire()
    finally:
        monkeypatch.undo()
        lock.release()


@pytest.mark.slow
def test_pretrain_on_a_disk_that_fills_at_the_second_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kept pretrain`, torch.save failing as a full disk does at the second checkpoint: exit 2, one line naming
    checkpoint-2, no checkpoint-2 left, checkpoint-1 complete; a re-run resumes from checkpoint-1."""
    import torch

    from kept.cli import main
    from kept.config import load_run_config
    from kept.encode import encode_run
    from kept.tiny import make_tiny_run

    run = make_tiny_run(tmp_path / "tiny", n_docs=12, steps=3, save_steps=1)
    encode_run(run, load_run_config(run))
    real_save = torch.save

    def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        if "checkpoint-2" in str(f):
            Path(str(f)).write_bytes(b"half")
            raise TORCH_FULL
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", str(run)])
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "checkpoint-2" in err and "No space left on device" in err and "resumes" in err, err
    assert "Traceback" not in err and ".kept.lock" not in err
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-1"]
    assert (checkpoints / "checkpoint-1" / "trainer_state.json").exists()
