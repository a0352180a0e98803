"""Errors of the fusion package: each says where (file:line or field) and what to do."""

from __future__ import annotations

from pathlib import Path


class FusionError(ValueError):
    """Bad model input or checkpoint. ``str(error)`` is one line: ``where: what. fix``."""

    def __init__(self, what: str, *, where: str | Path | None = None, line: int | None = None,
                 fix: str | None = None) -> None:
        self.what = what
        self.where = str(where) if where is not None else None
        self.line = line
        self.fix = fix
        location = self.where or ""
        if line is not None:
            location = f"{location}:{line}" if location else f"line {line}"
        text = f"{location}: {what}" if location else what
        if fix:
            text = f"{text.rstrip('.')}. {fix}"
        super().__init__(text)
