"""How a run configuration's problems are reported: one :class:`~kept.errors.KeptError` naming the key path and
the file and line it came from (or the command line, for a key a flag or ``--set`` gave).

:func:`non_finite_number` finds a ``.inf``/``.nan`` before validation; :class:`_ExternalError` carries
problems found outside pydantic's own checks (``model.overrides``, the ``eval`` section) as key paths;
:func:`_flatten_validation` and :func:`_describe` turn a pydantic ``ValidationError`` into those key paths
and one sentence; :func:`_config_error` places it. :func:`kept.config.validate_config` uses them.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kept.errors import KeptError
from kept.yaml_loader import _yaml_line


def non_finite_number(data: Any, loc: tuple = ()) -> tuple | None:
    """The key path of the first ``.inf``/``.nan`` in a raw configuration (no field takes one), or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return loc
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found = non_finite_number(value, (*loc, key))
        if found is not None:
            return found
    return None


def non_string_key(data: Any, loc: tuple = ()) -> tuple | None:
    """The key path of the first mapping key that is not a string (``null:``, ``1:``, ``[a]:`` in YAML), or None."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        if isinstance(data, dict) and not isinstance(key, str):
            return (*loc, repr(key))
        found = non_string_key(value, (*loc, key))
        if found is not None:
            return found
    return None


#: pydantic's message for an unknown key; a validator that knows better says its own (a hint, used as the fix).
_PYDANTIC_EXTRA = "Extra inputs are not permitted"


class _ExternalError(ValueError):
    def __init__(self, problems: list[tuple[tuple, str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, _, msg in problems))


def _describe(errors: list[tuple[tuple, str, str]]) -> tuple[tuple, str]:
    loc, kind, msg = errors[0]
    path = ".".join(str(part) for part in loc if part not in ("function-after", "function-before"))
    if kind == "extra_forbidden":
        what = f"unknown key '{path}'"
    elif kind == "missing":
        what = f"missing key '{path}'"
    else:
        what = f"invalid value for '{path}': {msg}"
    if len(errors) > 1:
        what += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return loc, what


def _flatten_validation(error: ValidationError) -> list[tuple[tuple, str, str]]:
    problems: list[tuple[tuple, str, str]] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        ctx_error = (item.get("ctx") or {}).get("error")
        sub_problems = getattr(ctx_error, "problems", None)
        if isinstance(sub_problems, list):  # _ExternalError, a ConfigModel's InputError
            problems.extend((loc + sub_loc, kind, msg) for sub_loc, kind, msg in sub_problems)
        elif isinstance(ctx_error, KeptError):
            problems.append((loc, "value_error", ctx_error.what))
        else:
            problems.append((loc, item["type"], item["msg"].removeprefix("Value error, ")))
    return problems


def _config_error(
    what: str,
    loc: tuple,
    fix: str,
    source: str | Path | None,
    text: str | None,
    overridden: Collection[tuple[str, ...]],
) -> KeptError:
    """A configuration error at key path ``loc``: on the command line when a flag or ``--set`` gave that key
    (or a section above it), else in ``source`` at the key's line."""
    keys = tuple(str(part) for part in loc)
    if any(keys[: len(key)] == tuple(key) for key in overridden):
        return KeptError(what, where="command line", fix=fix)
    return KeptError(what, where=source or "config", line=_yaml_line(text, loc), fix=fix)
