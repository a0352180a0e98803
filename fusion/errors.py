"""Errors of the fusion package: each says where (file:line or field) and what to do, on one line.

The shared base is ``kg.errors.InputError``; fusion imports nothing of ours (DESIGN.md: the model
package stands alone), so this is the one deliberate copy of its formatting. tests/test_errors.py
holds the two to the same output.
"""

from __future__ import annotations

from pathlib import Path


class FusionError(ValueError):
    """Bad model input or checkpoint. ``str(error)`` is one line: ``where: what. fix``."""

    def __init__(
        self, what: str, *, where: str | Path | None = None, line: int | None = None, fix: str | None = None
    ) -> None:
        self.what = what
        self.where = str(where) if where is not None else None
        self.line = line
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        # same rule as kg.errors.one_line_message (copied: fusion may not import kg)
        location = self.where or ""
        if self.line is not None:
            location = f"{location}:{self.line}" if location else f"line {self.line}"
        text = f"{location}: {self.what}" if location else self.what
        if self.fix:
            text = f"{text.rstrip('.')}. {self.fix}"
        return " ".join(text.split()) if "\n" in text or "\r" in text else text
