"""File helpers shared by the kg modules: atomic writes and decoding with line numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from kg.errors import KGError


def _write_error(error: OSError, path: Path) -> KGError:
    return KGError(f"cannot write: {error.strerror or error}", where=path,
                   fix="free disk space or fix the permissions, then re-run (files written before are unchanged)")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via ``path.tmp-<pid>`` in the same directory and ``os.replace``."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write_with(path, write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def atomic_write_with(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Let ``writer(tmp_path)`` produce the file, then move it into place."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(tmp)
        os.replace(tmp, path)
    except OSError as error:
        raise _write_error(error, path) from error
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
        raise KGError(f"bytes {data[error.start:error.end]!r} are not valid {encoding}", where=path, line=line,
                      fix=f"re-save the file as {encoding} (or pass encoding=...)") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def clean_cell(value: str) -> str:
    """A value safe for one TSV cell: tabs and newlines become spaces."""
    if "\t" in value or "\n" in value or "\r" in value:
        value = " ".join(value.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())
    return value
