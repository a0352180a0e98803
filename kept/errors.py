"""The one error type the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

from pathlib import Path


class KeptError(Exception):
    """A problem with the user's input or environment, said where and how to fix it.

    ``where`` is a file (optionally ``file:line``) or a configuration field; ``fix`` says
    what the user should do. ``str(error)`` is one line: ``where: what. fix``.
    """

    def __init__(self, what: str, *, where: str | Path | None = None, line: int | None = None,
                 fix: str | None = None) -> None:
        self.what = what
        self.where = str(where) if where is not None else None
        self.line = line
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        location = self.where or ""
        if self.line is not None:
            location = f"{location}:{self.line}" if location else f"line {self.line}"
        text = f"{location}: {self.what}" if location else self.what
        if self.fix:
            text = f"{text.rstrip('.')}. {self.fix}"
        return " ".join(text.split()) if "\n" in text or "\r" in text else text  # always one line


class Interrupted(Exception):
    """The user stopped a command (Ctrl-C, SIGINT): the CLI prints this one line and exits with 130.

    Raised instead of letting ``KeyboardInterrupt`` through where the command knows how far it got,
    e.g. ``interrupted at step 40; re-run to resume``.
    """

    EXIT_CODE = 130

    def __init__(self, what: str = "interrupted", fix: str = "re-run to resume") -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what}; {fix}")
