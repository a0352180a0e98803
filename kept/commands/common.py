"""Helpers shared by the kept/ product commands: flag → configuration overrides, console, logging."""

from __future__ import annotations

import logging
from typing import Any, Optional

import typer
from rich.console import Console

console = Console(stderr=True)

#: The loggers of our packages: library code logs to ``logging.getLogger(__name__)``, the CLI shows them.
PACKAGE_LOGGERS = ("kept", "kg", "masking", "fusion")


class ConsoleHandler(logging.Handler):
    """Prints our packages' log records on the CLI's rich console (stderr): INFO as the bare message (main
    process only: one copy under torchrun), WARNING and above with their level from every process."""

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        from kept.rundir import is_main_process

        if record.levelno < logging.WARNING and not is_main_process():
            return
        try:
            message = escape(record.getMessage())
            if record.levelno >= logging.WARNING:
                message = f"[yellow]{record.levelname.lower()}:[/] {message}"
            console.print(message, highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - a log line must never stop a run
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Show our packages' log records on the console (idempotent: one handler per logger). They stop
    propagating: the CLI is where they are shown, and a root handler that a library installs on the way
    (``logging.info`` on the root logger does, pykeen's evaluator triggers it) would print each line twice."""
    for name in PACKAGE_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        if not any(isinstance(handler, ConsoleHandler) for handler in logger.handlers):
            logger.addHandler(ConsoleHandler())


def stdout_console() -> Console:
    """A console for results on stdout: the terminal's width, or unlimited when stdout is a pipe or a
    file (rich would cut tables to 80 columns there)."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=100_000, soft_wrap=True)


SET_OPTION = typer.Option(
    None, "--set", help="Override any configuration field: --set train.max_steps=50 (repeatable)."
)
#: ``--config`` of the commands that work on one run directory (its own config.yaml by default)
CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML run configuration (default: RUN_DIR/config.yaml).")


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
