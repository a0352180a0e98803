"""The ``kept`` command line. Heavy imports stay inside commands so ``--help`` is instant."""

from __future__ import annotations

import importlib
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from kept import __version__

app = typer.Typer(
    name="kept",
    help="KEPT: knowledge-enhanced pretraining of language models (ERNIE-style masking + KG fusion).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

# Each module in kept.commands exposes ``register(app)``; listed here so the order of --help is stable.
COMMAND_MODULES: list[str] = [
    "kept.commands.data",
    "kept.commands.kg",
    "kept.commands.annotate",
    "kept.commands.corpus",
    "kept.commands.encode",
    "kept.commands.pretrain",
    "kept.commands.run",
    "kept.commands.demo",
    "kept.commands.evaluate",
    "kept.commands.compare",
    "kept.commands.report",
    "kept.commands.export",
    "kept.commands.distill",
]

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"kept {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    """KEPT command line."""
    from kept.commands.common import configure_logging

    _state["debug"] = debug
    configure_logging()


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Error types that mean 'bad input': printed as one line, exit code 2."""
    from kept.errors import KeptError

    types: list[type[BaseException]] = [KeptError]
    for module_name, attr in (
        ("kg.errors", "KGError"),
        ("masking.errors", "MaskingError"),
        ("fusion.errors", "FusionError"),
    ):
        try:
            types.append(getattr(importlib.import_module(module_name), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(types)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point of the console script."""
    from kept.errors import Interrupted

    code: object = None
    try:
        code = app(args=argv, prog_name="kept", standalone_mode=False)
    except SystemExit:
        raise
    except Interrupted as error:  # Ctrl-C where the command knows how far it got
        _exit_interrupted(error)
    except Exception as error:  # noqa: BLE001 - turn user errors into one line
        exits, aborts, usage_errors = _click_signal_types()
        if isinstance(error, exits):
            sys.exit(getattr(error, "exit_code", 0))
        if isinstance(error, aborts):
            console.print("Aborted.")
            sys.exit(130)
        if isinstance(error, usage_errors):
            _exit_usage_error(error)
        if not _state["debug"] and not isinstance(error, _user_error_types()):
            from kg._io import write_failure

            failure = write_failure(error)  # also torch's RuntimeError wrapping a full disk
            if failure is not None:  # disk full, read-only, permissions: the machine, not the code
                where = f"{failure.filename}: " if failure.filename else ""
                console.print(
                    f"[bold red]error:[/] {where}{failure.strerror or failure}. Free disk space or fix the "
                    "permissions, then re-run the command (files written before are unchanged)",
                    highlight=False,
                    soft_wrap=True,
                )
                sys.exit(2)
        if _state["debug"] or not isinstance(error, _user_error_types()):
            raise
        message = " ".join(str(error).split())  # one line, whatever the message holds
        console.print(f"[bold red]error:[/] {rich_escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    if code == Interrupted.EXIT_CODE:  # typer returns 130 for a KeyboardInterrupt anywhere else
        _exit_interrupted(Interrupted())


def _click_signal_types() -> tuple[tuple[type[BaseException], ...], ...]:
    """click's exit, abort and usage-error types as typer raises them: typer >= 0.20 raises those of its own
    copy of click (``typer.Exit``, ``typer.Abort``, subclasses of ``typer.TyperException``), older typer
    raises click's."""
    import click
    import typer

    usage = (click.ClickException,) + ((typer.TyperException,) if hasattr(typer, "TyperException") else ())
    return (click.exceptions.Exit, typer.Exit), (click.exceptions.Abort, typer.Abort), usage


def _exit_usage_error(error: BaseException) -> None:
    """A command line typer cannot parse (no argument, unknown option or command, bad value): one line and
    exit code 2, naming the command's --help. ``kept`` alone shows the help (``no_args_is_help``)."""
    if type(error).__name__ == "NoArgsIsHelpError":
        error.show()  # type: ignore[attr-defined]
        sys.exit(2)
    from kept.errors import KeptError

    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "kept"
    message = error.format_message() if hasattr(error, "format_message") else str(error)
    line = KeptError(message, where=command, fix=f"see `{command} --help`").render()
    console.print(f"[bold red]error:[/] {rich_escape(line)}", highlight=False, soft_wrap=True)
    sys.exit(2)


def _exit_interrupted(error: BaseException) -> None:
    """One line (``interrupted at step 40; re-run to resume``) and exit code 130, as a shell does for Ctrl-C."""
    from kept.errors import Interrupted

    console.print(" ".join(str(error).split()), highlight=False, soft_wrap=True, markup=False)
    sys.exit(Interrupted.EXIT_CODE)
