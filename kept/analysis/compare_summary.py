"""A compare directory's ``compare/summary.json`` (written by `kept compare`) and how to recognise one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kept.analysis.files import check_format, existing_dir
from kept.atomic_io import read_json

COMPARE_FORMAT = "kept.compare.summary"
COMPARE_FORMAT_VERSION = 1


def is_compare_dir(path: str | Path) -> bool:
    """A compare directory holds compare/summary.json, or summary.json with a format marker."""
    path = Path(path)
    for candidate in (path / "compare" / "summary.json", path / "summary.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8")).get("format") == COMPARE_FORMAT
            except (json.JSONDecodeError, AttributeError):
                return False
    return False


def load_compare(compare_dir: str | Path) -> dict[str, Any]:
    """``compare/summary.json`` of a compare directory (or ``summary.json`` given the compare/ folder)."""
    compare_dir = existing_dir(compare_dir)
    path = compare_dir / "compare" / "summary.json"
    if not path.is_file() and (compare_dir / "summary.json").is_file():
        path = compare_dir / "summary.json"
    fix = "run `kept compare CONFIG` first"
    data = read_json(path, "compare summary", fix)
    check_format(data, path, COMPARE_FORMAT, COMPARE_FORMAT_VERSION, fix)
    return data
