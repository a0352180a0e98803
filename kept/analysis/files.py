"""How the loaders read a run directory's JSON files, and how the writers make values JSON-safe.

Every reader raises :class:`kept.errors.KeptError` naming the file (and, for invalid JSON, the line) and
saying which step rewrites it, so a notebook or a command shows what to do instead of a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kept.atomic_io import read_json
from kept.errors import KeptError


def existing_dir(path: str | Path) -> Path:
    """``path`` as a Path when it is an existing directory; else a KeptError saying what to pass."""
    path = Path(path)
    if not path.exists():
        raise KeptError("directory not found", where=path, fix="pass an existing run directory (runs/NAME)")
    if not path.is_dir():
        raise KeptError("not a directory", where=path, fix="pass a run directory, not a file")
    return path


def read_json_object(path: Path, what: str, fix: str, rerun: str) -> dict[str, Any]:
    """:func:`kept.atomic_io.read_json` for files that must hold one JSON object; ``rerun`` says which step
    rewrites it."""
    data = read_json(path, what, fix)
    if not isinstance(data, dict):
        raise KeptError(f"{what} must be a JSON object", where=path, fix=rerun)
    return data


def check_format(data: Any, path: Path, fmt: str, version: int, fix: str) -> None:
    """A KeptError unless ``data`` carries the format marker ``fmt`` at ``version`` (another kept wrote it)."""
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise KeptError(
            f"not a {fmt} file (format={data.get('format') if isinstance(data, dict) else None!r})", where=path, fix=fix
        )
    found = data.get("format_version")
    if found != version:
        raise KeptError(
            f"written by another version of kept (format_version {found}, this kept reads {version})",
            where=path,
            fix=fix,
        )


def json_safe(value: Any) -> Any:
    """NaN and ±inf (not valid JSON) become None, recursively; everything else is unchanged."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def finite(value: Any) -> bool:
    """A finite int or float (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
