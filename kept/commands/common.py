"""Helpers shared by the kept/ product commands: flag → configuration overrides, console."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.console import Console

console = Console(stderr=True)

SET_OPTION = typer.Option(None, "--set", help="Override any configuration field: --set train.max_steps=50 (repeatable).")


def flag_overrides(flags: dict[str, Any], sets: Optional[list[str]] = None) -> dict[str, Any]:
    """Dotted keys of the flags that were given (None = not given), then the ``--set`` pairs (which win)."""
    from kept.config import parse_overrides

    out = {key: value for key, value in flags.items() if value is not None}
    for path, value in parse_overrides(sets or []):
        out[".".join(path)] = value
    return out
