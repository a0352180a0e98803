"""File helpers shared by every package (kg imports nothing of ours, so masking and kept may use them).

Atomic writes: write ``name.tmp-<pid>`` in the same directory, then ``os.replace`` it, so a process
killed while writing leaves the previous artifact or nothing, never half of one. A failed write
(disk full, read-only, no permission) removes the temporary, leaves the old file as it was and
raises ``error`` (an :class:`InputError` subclass; each package passes its own) naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kg.errors import InputError, KGError

#: errno values of a failed write that the user fixes on the machine, not in the code.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG})


def tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


#: how libraries that wrap the OSError in their own exception (torch's RuntimeError from its zip writer,
#: safetensors' SafetensorError) spell a full disk in the message.
_DISK_FULL_WORDS = ("No space left on device", "code: 28,", "StorageFull", "file write failed", "Disk quota exceeded")


def write_failure(error: BaseException) -> OSError | None:
    """The machine's write failure behind ``error`` (disk full, read-only, no permission), else None: an
    OSError with one of :data:`WRITE_ERRNOS` in the exception or its causes, or a torch/safetensors error
    whose message says the disk is full (torch's ``PytorchStreamWriter failed writing file ...: file write
    failed`` carries no errno; a full disk is its usual cause)."""
    if isinstance(error, InputError):  # already one line naming its file (e.g. from a nested atomic write)
        return None
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in WRITE_ERRNOS:
            return cause
        if not isinstance(cause, (OSError, InputError)) and any(word in str(cause) for word in _DISK_FULL_WORDS):
            quota = "Disk quota exceeded" in str(cause)
            code = errno.EDQUOT if quota else errno.ENOSPC
            return OSError(code, os.strerror(code))
        cause = cause.__cause__ or cause.__context__
    return None


def write_error(error: OSError, path: str | Path, error_type: type[InputError] = KGError) -> InputError:
    """The one-line error for a failed write, naming the file."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = (
            f"free disk space (df -h {Path(path).parent}; or raise the quota), then re-run the command "
            "(files written before are unchanged)"
        )
    else:
        fix = "fix the permissions (or mount it writable), then re-run the command (files written before are unchanged)"
    return error_type(f"cannot write: {error.strerror or error}", where=path, fix=fix)


def make_parents(path: Path) -> list[Path]:
    """Create the missing parent directories of ``path``; returns the ones made, deepest first."""
    missing: list[Path] = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def remove_empty(directories: list[Path]) -> None:
    """Remove ``directories`` (deepest first) as long as they are empty: a failed write leaves no new, empty
    folder behind (e.g. ``corpus/``)."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def atomic_path(path: str | Path, *, error: type[InputError] = KGError) -> Iterator[Path]:
    """Yield the temporary file to write; on a clean exit move it onto ``path``. On a failure, the folders
    made for it are removed again."""
    path = Path(path)
    tmp = tmp_name(path)
    made: list[Path] = []
    done = False
    try:
        made = make_parents(path)
        yield tmp
        os.replace(tmp, path)
        done = True
    except OSError as os_error:
        raise write_error(os_error, path, error) from os_error
    except Exception as other:  # torch/safetensors wrap a full disk in their own error types
        failure = write_failure(other)
        if failure is None:
            raise
        raise write_error(failure, path, error) from other
    finally:
        if tmp.exists():
            tmp.unlink()
        if not done:
            remove_empty(made)


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "wb", encoding: str | None = None, *, error: type[InputError] = KGError
) -> Iterator[Any]:
    """Open the temporary file of ``path``; on a clean exit fsync it and move it into place."""
    with atomic_path(path, error=error) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_with(path: str | Path, writer: Callable[[Path], None], *, error: type[InputError] = KGError) -> Path:
    """Let ``writer(tmp_path)`` produce the file (e.g. safetensors' ``save_file``), then move it into place."""
    with atomic_path(path, error=error) as tmp:
        writer(tmp)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes, *, error: type[InputError] = KGError) -> Path:
    with atomic_open(path, error=error) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, error: type[InputError] = KGError) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), error=error)


def atomic_write_json(path: str | Path, obj: Any, *, error: type[InputError] = KGError, **dump_kwargs: Any) -> Path:
    """``obj`` as JSON (indented, UTF-8 unescaped unless ``dump_kwargs`` say otherwise) plus a newline."""
    options: dict[str, Any] = {"indent": 2, "ensure_ascii": False, **dump_kwargs}
    return atomic_write_text(path, json.dumps(obj, **options) + "\n", error=error)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, error: type[InputError] = KGError) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` (the old one is removed).

    On an exception the temporary directory is removed and ``path`` is left as it was; an OSError
    of the machine (:data:`WRITE_ERRNOS`) becomes ``error``, any other stays as it is (a bug, not input).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException as failed:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(failed) if isinstance(failed, Exception) else None
        if failure is not None:  # an OSError of the machine (WRITE_ERRNOS), or torch/safetensors wrapping one
            raise write_error(failure, path, error) from failed
        raise
    _swap_in(tmp, path, error)


def _swap_in(tmp: Path, path: Path, error: type[InputError]) -> None:
    """Move ``tmp`` onto ``path``, putting the previous artifact back if the move fails."""
    old = path.with_name(f"{path.name}.old-{os.getpid()}")
    if path.exists() or path.is_symlink():
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError as os_error:
        if old.exists() or old.is_symlink():
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        if os_error.errno in WRITE_ERRNOS:
            raise write_error(os_error, path, error) from os_error
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif old.exists() or old.is_symlink():
        old.unlink()


def write_tsv(path: str | Path, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> Path:
    lines = ["\t".join(header)]
    lines.extend("\t".join(str(cell) for cell in row) for row in rows)
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """Read a text file; undecodable bytes raise KGError naming the file and line."""
    path = Path(path)
    if not path.exists():
        raise KGError("file not found", where=path, fix="check the path")
    if path.is_dir():
        raise KGError("expected a file, got a directory", where=path, fix="pass the file inside it")
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise KGError(
            f"bytes {data[error.start : error.end]!r} are not valid {encoding}",
            where=path,
            line=line,
            fix=f"re-save the file as {encoding} (or pass encoding=...)",
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def clean_cell(value: str) -> str:
    """A value safe for one TSV cell: tabs and newlines become spaces."""
    if "\t" in value or "\n" in value or "\r" in value:
        value = " ".join(value.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())
    return value
