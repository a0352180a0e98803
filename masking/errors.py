"""Errors of the masking package: the shared :class:`kg.errors.InputError`, under masking's name."""

from __future__ import annotations

from kg.errors import InputError


class MaskingError(InputError, ValueError):
    """Bad masking input (corpus, spans, detector configuration); a ValueError, as before the shared base."""
