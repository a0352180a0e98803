"""The run directory: paths, atomic writes, a writer lock and stage stamps.

Every stage reads and writes ``runs/NAME/`` (layout in DESIGN.md). This module is the one
place that knows the layout, so commands, notebooks and tests agree on it.

* Atomic writes (:mod:`kept.atomic_io`): :func:`atomic_write_text` / :func:`atomic_write_json` write
  ``name.tmp-<pid>`` in the same directory and ``os.replace`` it; :func:`atomic_dir` does the
  same for a whole directory, so a process killed while writing leaves the previous artifact or nothing.
* Every command that writes a run directory holds its :class:`RunLock`; taking it also checks
  (and records) the run-directory format version (``.kept-run.json``), so a directory written by
  an incompatible kept is refused before anything in it changes.
* :class:`RunLock`: an ``fcntl`` lock on ``RUN_DIR/.kept.lock``; the kernel drops it when the
  process dies (even with SIGKILL), so a stale lock never blocks the next run.
* Stage stamps (:mod:`kept.stamps`, ``RUN_DIR/stamps/<stage>.json``): a fingerprint of the configuration
  sections a stage depends on plus its inputs; a stage is done when its outputs exist and the stamp's
  fingerprint equals the current one.

This module holds the paths, the run-directory checks, the format version and the lock; the names of
:mod:`kept.atomic_io` and :mod:`kept.stamps` stay importable from here.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# re-exported: kept.rundir's names before the split (RunLock uses clean_stale_temporaries and atomic_write_json)
from kept.atomic_io import (  # noqa: F401
    _pid_alive,
    atomic_dir,
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_stale_temporaries,
    read_json,
    write_error,
)
from kept.errors import KeptError
from kept.processes import is_main_process  # noqa: F401 - re-exported: the run-dir writers ask it here
from kept.stamps import fingerprint, path_fingerprint, read_stamp, stage_done, stamp_fingerprint, write_stamp  # noqa: F401
from kg._io import WRITE_ERRNOS  # noqa: F401 - re-exported: kept.cli reads it from here

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".kept.lock"
#: ``RUN_DIR/.kept-run.json``: which layout version of the run directory this is (written under the lock).
FORMAT_FILE = ".kept-run.json"
RUN_FORMAT = "kept.run"
RUN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunPaths:
    """Every path of a run directory (DESIGN.md layout)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def kg(self) -> Path:
        return self.root / "kg"

    @property
    def embeddings(self) -> Path:
        return self.kg / "embeddings.safetensors"

    @property
    def kg_metrics(self) -> Path:
        return self.kg / "kg_metrics.json"

    @property
    def aliases(self) -> Path:
        return self.kg / "aliases.tsv"

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def documents(self) -> Path:
        return self.corpus / "documents.jsonl"

    @property
    def annotated(self) -> Path:
        return self.corpus / "annotated"

    @property
    def annotation_stats(self) -> Path:
        return self.corpus / "annotation_stats.json"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def encoded(self) -> Path:
        return self.root / "encoded"

    @property
    def encoded_train(self) -> Path:
        return self.encoded / "train"

    @property
    def encoded_validation(self) -> Path:
        return self.encoded / "validation"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def train_history(self) -> Path:
        return self.root / "logs" / "train_history.json"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def stamps(self) -> Path:
        return self.root / "stamps"

    def stamp(self, stage: str) -> Path:
        return self.stamps / f"{stage}.json"


def run_paths(run_dir: str | Path) -> RunPaths:
    return RunPaths(Path(run_dir))


def require(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` if it exists, else a KeptError naming it and the command that makes it."""
    if not path.exists():
        raise KeptError(f"{what} not found", where=path, fix=fix)
    return path


#: Longest name of one file or folder (bytes) that Linux and macOS file systems take (NAME_MAX).
NAME_MAX = 255


def check_run_dir(run_dir: str | Path) -> Path:
    """Refuse a path that cannot be a run directory, before anything is made: a name in it longer than
    :data:`NAME_MAX`, or it (or a folder above it, e.g. ``runs_dir``) is a file."""
    path = Path(run_dir)
    for part in path.parts:
        if len(part.encode("utf-8", "surrogatepass")) > NAME_MAX:
            raise KeptError(
                f"the name '{part[:24]}...' is {len(part)} characters long; a file system takes at most {NAME_MAX}",
                where="run directory",
                fix="choose a shorter run name or directory",
            )
    for folder in (path, *path.parents):
        if folder.is_dir():
            return path
        if folder.exists() or folder.is_symlink():
            inside = "" if folder == path else f", so the run directory {path} cannot be made inside it"
            raise KeptError(
                f"is a file, not a directory{inside}",
                where=folder,
                fix="give a directory (runs_dir and the run directory are folders), or move the file away",
            )
    return path


def make_run_dir(run_dir: str | Path) -> Path:
    """The run directory, made if missing, after :func:`check_run_dir`."""
    path = check_run_dir(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def inside_run_dir(run_dir: str | Path, subpath: str | Path, field: str) -> Path:
    """``run_dir / subpath``, refused when it would leave the run directory (``..``, absolute, symlinks)."""
    root = Path(run_dir).resolve()
    sub = Path(subpath)
    target = (root / sub).resolve()
    if sub.is_absolute() or not target.is_relative_to(root):
        raise KeptError(
            f"'{subpath}' points outside the run directory {root}",
            where=field,
            fix="give a relative path inside the run directory (no '..', not absolute)",
        )
    return Path(run_dir) / sub


# ----------------------------------------------------------------------------- format version


def check_run_format(run_dir: str | Path) -> dict[str, Any] | None:
    """Refuse a run directory written by a kept with another run-directory layout.

    Returns the format record (None for a directory that has none yet: new, or made before the
    record existed; both are this layout).
    """
    path = check_run_dir(run_dir) / FORMAT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise KeptError(
            "the run-directory format record is unreadable",
            where=path,
            fix="delete it if this directory was made by this version of kept, else use a new run directory",
        ) from None
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
        raise KeptError("not a kept run-directory format record", where=path, fix="use a new run directory") from None
    version = record.get("format_version")
    if version != RUN_FORMAT_VERSION:
        made_by = record.get("kept_version", "?")
        raise KeptError(
            f"the run directory was written by kept {made_by} (run format {version}); this kept "
            f"reads run format {RUN_FORMAT_VERSION}",
            where=Path(run_dir),
            fix=f"use kept {made_by} for this run, or start a new run directory (kept run CONFIG --out NEW)",
        )
    return record


def write_run_format(run_dir: str | Path) -> None:
    """Record this kept's run-directory layout (once; the caller holds the lock)."""
    path = Path(run_dir) / FORMAT_FILE
    if path.exists():
        return
    from kept import __version__

    atomic_write_json(path, {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "kept_version": __version__})


# ----------------------------------------------------------------------------- lock


class RunLock:
    """An exclusive writer lock on a run directory (``fcntl.flock``; released when the process dies).

    Only the main process (rank 0) takes it; other ranks of a distributed job get a no-op lock.
    ``shared=True`` takes a shared lock instead (``kept annotate --num-shards``: shards of one run run side by
    side, every exclusive writer is refused meanwhile); a shared holder neither records itself in the lock
    file nor removes temporaries (a sibling shard, maybe on another machine, may be writing them).
    """

    def __init__(self, run_dir: str | Path, command: str = "kept", *, shared: bool = False) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.command = command
        self.shared = shared
        self._handle: Any = None

    def acquire(self) -> RunLock:
        if not is_main_process():
            return self
        import fcntl

        make_run_dir(self.path.parent)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process (e.g. `kept annotate --num-shards` shards)"
            handle.close()
            raise KeptError(
                f"the run directory is in use by {holder}",
                where=self.path.parent,
                fix="wait for that command to finish, or use another run directory",
            ) from None
        if self.shared:
            self._handle = handle
            try:
                check_run_format(self.path.parent)
            except BaseException:
                self.release()
                raise
            return self
        handle.seek(0)
        handle.truncate()
        try:  # unbuffered: a full disk fails here, not later when the handle is closed
            os.write(handle.fileno(), f"`{self.command}` (pid {os.getpid()} on {socket.gethostname()})\n".encode())
        except OSError as error:  # the holder line only informs; the command's own writes name their files
            if error.errno not in WRITE_ERRNOS:
                handle.close()
                raise
        self._handle = handle
        try:
            check_run_format(self.path.parent)
            write_run_format(self.path.parent)
            # the writer holds the lock now: what a killed writer left half-written can go (every command)
            clean_stale_temporaries(self.path.parent)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._handle is not None:
            import fcntl

            if not self.shared:
                self._handle.seek(0)
                self._handle.truncate()
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
