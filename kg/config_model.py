"""ConfigModel: the one base of KEPT's configuration classes (pydantic; kg, masking and kept sections).

A configuration is data: fields with their constraints (``Field(ge=1)``, ``Literal[...]``), validators only
for rules between fields. Every model refuses unknown keys, booleans where a number belongs (pydantic would
read ``true`` as 1) and re-validates on assignment. A bad value is the package's
:class:`~kg.errors.InputError` (``error_class``), one line naming the first problem's field; its
``problems`` list every problem as (key path, pydantic error type, message), which ``kept.config`` turns
into file:line errors when the model is a section of a run configuration (pydantic validates a nested
model with a custom ``__init__`` by calling it, so this is the one path).
"""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from kg.errors import InputError


def boolean_number_problem(annotation: Any, value: Any) -> str | None:
    """Why ``value`` does not fit a number field: a boolean where ``int``/``float`` (or Optional of
    them) belongs. None when it fits (or the field takes booleans)."""
    options = (
        typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    )
    if isinstance(value, bool) and {int, float} & set(options) and bool not in options:
        return f"expected a number, got the boolean {str(value).lower()}"
    return None


class ConfigModel(BaseModel):
    """A configuration section (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: the error a bad value built from Python raises (None: pydantic's ValidationError)
    error_class: ClassVar[type[InputError] | None] = None
    #: the name of the section in a run configuration (``masking``): the prefix of the field in errors
    section: ClassVar[str] = ""

    def __init__(self, **data: Any) -> None:
        if self.error_class is None:
            super().__init__(**data)
            return
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise config_error(error, self.error_class, self.section, type(self).__name__) from None

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        problem = (
            boolean_number_problem(cls.model_fields[info.field_name].annotation, value) if info.field_name else None
        )
        if problem:
            raise ValueError(problem)
        return value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def config_error(error: ValidationError, error_class: type[InputError], section: str, name: str) -> InputError:
    """The first problem of a ValidationError as one line: ``section.field: message. fix``."""
    problems = [(tuple(e["loc"]), e["type"], e["msg"].removeprefix("Value error, ")) for e in error.errors()]
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    where = ".".join(part for part in (section, field) if part) or name
    what = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    more = len(error.errors()) - 1
    if more:
        what += f" (and {more} more problem{'s' if more > 1 else ''})"
    found = error_class(what, where=where, fix=f"see {name} for the fields and their ranges")
    found.problems = problems  # type: ignore[attr-defined]
    return found
