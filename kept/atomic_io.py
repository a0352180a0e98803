"""Atomic writes of run-directory files, bound to :class:`~kept.errors.KeptError`, and reading them back.

:func:`atomic_write_text` / :func:`atomic_write_json` / :func:`atomic_write_bytes` write ``name.tmp-<pid>``
in the same directory and ``os.replace`` it; :func:`atomic_dir` does the same for a whole directory
(``datasets.save_to_disk``, ``save_pretrained``), so a process killed while writing leaves the previous
artifact or nothing, never half of one. The mechanism is ``kg._io``'s (one copy for every package).
:func:`clean_stale_temporaries` removes what killed writers left; :func:`read_json` reads a file back with
an error naming it (:mod:`kept.rundir` re-exports these names). :func:`decode_utf8` gives the text of a user's
file (corpus, configuration) with the line of a byte that is not UTF-8.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from kept.errors import KeptError
from kg import _io


def write_error(error: OSError, path: str | Path) -> KeptError:
    """A KeptError for a failed write (disk full, read-only, no permission) naming the file."""
    return _io.write_error(error, path, KeptError)  # type: ignore[return-value]


def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None) -> contextlib.AbstractContextManager:
    """Open ``path.tmp-<pid>`` for writing; on a clean exit fsync it and ``os.replace`` it onto ``path``.

    A failing write (disk full, ...) or an exception in the block leaves ``path`` as it was and
    removes the temporary file; an ``OSError`` becomes a :class:`KeptError` naming ``path``.
    """
    return _io.atomic_open(path, mode, encoding, error=KeptError)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _io.atomic_write_bytes(path, data, error=KeptError)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _io.atomic_write_text(path, text, error=KeptError)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return _io.atomic_write_json(path, obj, error=KeptError, default=str)


def atomic_dir(path: str | Path) -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` (old one removed).

    On an exception the temporary directory is removed and ``path`` is left as it was.
    """
    return _io.atomic_dir(path, error=KeptError)


def decode_utf8(data: bytes, path: str | Path, fix: str) -> str:
    """The UTF-8 text of a file's bytes without a leading BOM; bytes that are not UTF-8 raise a KeptError naming
    the file, the line and the byte, with ``fix``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise KeptError(f"not UTF-8 text (byte {error.start})", where=path, line=line, fix=fix) from None
    return text[1:] if text.startswith("\ufeff") else text


def read_json(path: str | Path, what: str = "JSON file", fix: str | None = None) -> Any:
    """The JSON in ``path``; a KeptError naming ``what`` when it is missing (with ``fix``) or not valid JSON
    (with the line). The one reader of a run directory's JSON files (stages, commands and the analysis loaders)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise KeptError(f"{what} not found", where=path, fix=fix) from None
    except json.JSONDecodeError as error:
        raise KeptError(
            f"{what} is not valid JSON: {error.msg}",
            where=path,
            line=error.lineno,
            fix="delete it and re-run the stage that writes it",
        ) from None


def clean_stale_temporaries(root: str | Path) -> list[Path]:
    """Remove ``*.tmp-<pid>`` / ``*.old-<pid>`` leftovers of killed processes under ``root``."""
    removed: list[Path] = []
    root = Path(root)
    if not root.exists():
        return removed
    for candidate in list(root.rglob("*.tmp-*")) + list(root.rglob("*.old-*")):
        suffix = candidate.name.rsplit("-", 1)[-1]
        if not suffix.isdigit() or _pid_alive(int(suffix)):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        elif candidate.exists() or candidate.is_symlink():
            candidate.unlink()
        removed.append(candidate)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
