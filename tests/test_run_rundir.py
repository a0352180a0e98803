"""Run directory plumbing: atomic writes, the writer lock, stale temporaries, stage stamps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kept.errors import KeptError
from kept.rundir import (
    RunLock,
    atomic_dir,
    atomic_write_json,
    clean_stale_temporaries,
    read_json,
    stage_done,
    stamp_fingerprint,
    write_stamp,
)


def test_atomic_dir_keeps_the_old_version_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "encoded"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed while writing")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoded"]
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_atomic_json_and_clear_errors_for_corrupt_json(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "x" / "m.json", {"a": 1})
    assert read_json(path) == {"a": 1} and not list(path.parent.glob("*.tmp-*"))
    path.write_text("{truncated")
    with pytest.raises(KeptError, match="not valid JSON") as info:
        read_json(path, "metrics")
    assert str(path) in str(info.value)
    with pytest.raises(KeptError, match="not found"):
        read_json(tmp_path / "absent.json")


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    stale = tmp_path / f"documents.jsonl.tmp-{dead}"
    stale.write_text("half")
    stale_dir = tmp_path / f"encoded.tmp-{dead}"
    stale_dir.mkdir()
    mine = tmp_path / f"x.tmp-{os.getpid()}"
    mine.write_text("in progress")
    removed = clean_stale_temporaries(tmp_path)
    assert set(removed) == {stale, stale_dir} and mine.exists()
    # every writing command takes the lock, and taking it clears what a killed writer left (kept pretrain too)
    (tmp_path / "logs").mkdir()
    history = tmp_path / "logs" / f"train_history.json.tmp-{dead}"
    history.write_text("half")
    lock = RunLock(tmp_path, "test").acquire()
    try:
        assert not history.exists() and mine.exists()
    finally:
        lock.release()


def test_lock_is_exclusive_and_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    root, run = str(Path(__file__).resolve().parent.parent), str(tmp_path)
    code = (
        f"import sys, time; sys.path.insert(0, {root!r}); from kept.rundir import RunLock; "
        f"lock = RunLock({run!r}, 'holder').acquire(); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(KeptError, match=r"in use by `holder` \(pid \d+"):
            RunLock(tmp_path, "second").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(tmp_path, "third"):  # the kernel dropped the dead holder's lock
        pass


def test_stage_done_needs_outputs_and_a_matching_fingerprint(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("v1")
    output = tmp_path / "out.txt"
    fp = stamp_fingerprint({"k": 1}, [source])
    assert not stage_done(tmp_path, "s", fp, [output])
    output.write_text("x")
    write_stamp(tmp_path, "s", fp, {"k": 1})
    assert stage_done(tmp_path, "s", fp, [output])
    assert not stage_done(tmp_path, "s", stamp_fingerprint({"k": 2}, [source]), [output])
    time.sleep(0.01)
    source.write_text("v2 longer")
    assert stamp_fingerprint({"k": 1}, [source]) != fp  # a re-created input invalidates the stage
