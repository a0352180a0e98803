"""Helpers shared by the kept/ product commands: flag → configuration overrides, console."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def stdout_console() -> Console:
    """A console for results on stdout: the terminal's width, or unlimited when stdout is a pipe or a
    file (rich would cut tables to 80 columns there)."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=100_000, soft_wrap=True)


SET_OPTION = typer.Option(
    None, "--set", help="Override any configuration field: --set train.max_steps=50 (repeatable)."
)


def flag_overrides(flags: dict[str, Any], sets: Optional[list[str]] = None) -> dict[str, Any]:
    """Dotted keys of the flags that were given (None = not given), then the ``--set`` pairs (which win)."""
    from kept.config import parse_overrides

    out = {key: value for key, value in flags.items() if value is not None}
    for path, value in parse_overrides(sets or []):
        out[".".join(path)] = value
    return out


def quiet_libraries() -> None:
    """Turn off the per-file progress bars of datasets/transformers (our own rich bars stay)."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
