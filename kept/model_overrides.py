"""``model.overrides``: fields of ``fusion.KeptConfig`` set from a run configuration, checked before a model is
built.

:func:`validate_model_overrides` checks every key is a ``KeptConfig`` field (:func:`kept_config_fields`;
a misspelt one gets the closest name, :func:`closest_name`), every value of its type and in its range
(:func:`override_range_problem`), and head counts that divide their widths. Its problems are key paths
(:class:`kept.config_errors._ExternalError`) that the run configuration reports with the file and line.
:mod:`kept.config` re-exports these names.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from kept.config_errors import _ExternalError
from kg.config_model import boolean_number_problem


def kept_config_fields() -> dict[str, Any]:
    """The fields ``model.overrides`` may set: ``fusion.KeptConfig``'s own fields with their types, and the
    fields it inherits from transformers' ``PreTrainedConfig`` (not type-checked here: ``Any``)."""
    import dataclasses
    import sys

    from fusion.configuration_kept import KeptConfig

    own = vars(sys.modules[KeptConfig.__module__])
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(KeptConfig):
        if not field.init:
            continue
        annotation: Any = Any
        if field.name in KeptConfig.__annotations__:
            annotation = field.type
            if isinstance(annotation, str):  # postponed annotations of fusion/configuration_kept.py
                annotation = eval(annotation, own)  # noqa: S307 - our own source's annotation text
        fields[field.name] = annotation
    return fields


def closest_name(name: str, names: Iterable[str]) -> str | None:
    """The known name closest to a misspelt one (``hiden_size`` → ``hidden_size``), or None."""
    import difflib

    found = difflib.get_close_matches(str(name), list(names), n=1, cutoff=0.6)
    return found[0] if found else None


@functools.cache
def _override_ranges() -> dict[str, tuple[float, bool, float | None]]:
    """Ranges of model.overrides values: (lowest, lowest allowed itself?, highest or None): the sizes and counts
    ``KeptConfig.validate_sizes`` checks (fusion's lists, imported when first needed: fusion loads transformers)
    plus fields it does not range-check itself."""
    from fusion.configuration_kept import NON_NEGATIVE_COUNTS, POSITIVE_SIZES

    positive = (*POSITIVE_SIZES, "type_vocab_size", "layer_norm_eps", "max_entity_slots")
    non_negative = (*NON_NEGATIVE_COUNTS, "initializer_range", "mlm_weight", "dea_weight", "sop_weight", "red_weight")
    probabilities = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")
    return {
        **{name: (0, False, None) for name in positive},
        **{name: (0, True, None) for name in non_negative},
        **{name: (0, True, 1) for name in probabilities},
    }


def override_range_problem(key: str, value: Any) -> str | None:
    """What is wrong with the (type-checked) value of ``model.overrides.<key>``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    bounds = _override_ranges().get(key)
    if bounds is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, inclusive, high = bounds
    if value < low or (value == low and not inclusive):
        return f"must be {'at least' if inclusive else 'greater than'} {low:g}, got {value}"
    if high is not None and value > high:
        return f"must be between {low:g} and {high:g} (a probability), got {value}"
    return None


def _head_problems(validated: dict[str, Any], preset: str | None) -> list[tuple[tuple, str, str]]:
    """A head count that does not divide its width, the other from the overrides or else the preset."""
    from fusion.configuration_kept import HEAD_DIVISORS, PRESETS

    base = PRESETS.get(preset or "", {})
    problems: list[tuple[tuple, str, str]] = []
    for width_key, heads_key in HEAD_DIVISORS:
        if width_key not in validated and heads_key not in validated:
            continue
        width, heads = validated.get(width_key, base.get(width_key)), validated.get(heads_key, base.get(heads_key))
        if isinstance(width, int) and isinstance(heads, int) and width > 0 and heads > 0 and width % heads:
            key = heads_key if heads_key in validated else width_key
            problems.append(
                (
                    (key,),
                    "value_error",
                    f"{heads_key} {heads} does not divide {width_key} {width}"
                    f"{'' if width_key in validated and heads_key in validated else f' (preset {preset})'}"
                    f"; choose a head count that divides {width_key}",
                )
            )
    return problems


def validate_model_overrides(value: Any, preset: str | None = None) -> dict[str, Any]:
    """Check ``model.overrides`` against ``fusion.KeptConfig``: every key a field, every value of its type
    (booleans are no numbers) and range (sizes positive, dropouts in [0, 1], head counts dividing their width,
    the width or head count not overridden taken from ``preset``); returns the values as validated (``"8"``
    for an int field becomes 8)."""
    from pydantic import TypeAdapter

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of fusion.KeptConfig fields, got {type(value).__name__}")
    if not value:
        return {}
    fields = kept_config_fields()
    problems: list[tuple[tuple, str, str]] = []
    validated: dict[str, Any] = {}
    for key, item in value.items():
        if key not in fields:
            close = closest_name(key, fields)
            hint = f"did you mean '{close}'? " if close else ""
            problems.append(
                (
                    (key,),
                    "extra_forbidden",
                    f"{hint}model.overrides takes fusion.KeptConfig fields (e.g. hidden_size, "
                    "num_hidden_layers, entity_dim, use_sop)",
                )
            )
            continue
        problem = boolean_number_problem(fields[key], item)
        if problem:
            problems.append(((key,), "value_error", problem))
            continue
        try:
            validated[key] = TypeAdapter(fields[key]).validate_python(item)
        except ValidationError as error:
            problems.append(((key,), "value_error", error.errors()[0]["msg"]))
            continue
        problem = override_range_problem(key, validated[key])
        if problem:
            problems.append(((key,), "value_error", problem))
            del validated[key]
    if not problems:
        problems = _head_problems(validated, preset)
    if problems:
        raise _ExternalError(problems)
    return validated
