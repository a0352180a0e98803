"""The one error type the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

from kg.errors import InputError


class KeptError(InputError):
    """A problem with the user's input or environment, said where and how to fix it (the CLI prints
    it as one line and exits with 2). The formatting is :class:`kg.errors.InputError`'s."""


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
