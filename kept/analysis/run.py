"""A run directory as a whole: whether a path is one, and the configuration it ran with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kept.analysis.files import existing_dir
from kept.errors import KeptError


def is_run_dir(path: str | Path) -> bool:
    """A run directory has a config.yaml or at least one of the stage folders."""
    path = Path(path)
    return path.is_dir() and (
        (path / "config.yaml").is_file()
        or any((path / sub).is_dir() for sub in ("model", "encoded", "kg", "corpus", "eval"))
    )


def load_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved configuration ``config.yaml`` as a dict."""
    from kept.config import read_yaml

    path = existing_dir(run_dir) / "config.yaml"
    if not path.is_file():
        raise KeptError("config.yaml not found", where=path, fix="run `kept run CONFIG` to create the run directory")
    data = read_yaml(path)[0]  # the one YAML loader (file:line errors)
    if not isinstance(data, dict):
        raise KeptError("config.yaml must hold a mapping", where=path, fix="write `key: value` pairs at top level")
    return data
