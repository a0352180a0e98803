"""Errors of KEPT: each says where (file:line or field) and what to do, on one line.

:class:`InputError` is the one base. It lives here because kg imports nothing of ours, so masking
and kept (which may import kg) can subclass it without breaking the layering (DESIGN.md). fusion may
not import kg, so ``fusion.errors.FusionError`` keeps a standalone copy of this formatting;
tests/test_errors.py holds the two to the same output.
"""

from __future__ import annotations

from pathlib import Path


def one_line_message(what: str, where: str | None, line: int | None, fix: str | None) -> str:
    """``where:line: what. fix`` with any newline folded, so a CLI can print it as one line."""
    location = where or ""
    if line is not None:
        location = f"{location}:{line}" if location else f"line {line}"
    text = f"{location}: {what}" if location else what
    if fix:
        text = f"{text.rstrip('.')}. {fix}"
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


class InputError(Exception):
    """A problem with the user's input or environment, said where and how to fix it.

    ``where`` is a file (optionally ``file:line``) or a configuration field; ``fix`` says what the
    user should do. ``str(error)`` is one line: ``where: what. fix``.
    """

    def __init__(
        self, what: str, *, where: str | Path | None = None, line: int | None = None, fix: str | None = None
    ) -> None:
        self.what = what
        self.where = str(where) if where is not None else None
        self.line = line
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        return one_line_message(self.what, self.where, self.line, self.fix)


class KGError(InputError, ValueError):
    """Bad knowledge-graph input (a ValueError, as before the shared base)."""
