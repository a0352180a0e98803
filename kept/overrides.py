"""Overrides of a raw configuration mapping: ``--set KEY=VALUE`` strings or a mapping of dotted keys.

:func:`parse_overrides` reads ``KEY=VALUE`` strings (values parsed as YAML), :func:`override_pairs` takes
either form, :func:`apply_overrides` sets the keys in the mapping before it is validated. Used by the run
configuration (:mod:`kept.config`, which re-exports these names) and the compare YAML (:mod:`kept.compare_plan`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from kept.errors import KeptError
from kept.yaml_loader import parse_yaml


def parse_overrides(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``["train.max_steps=50", "model.fusion=false"]`` → key paths and YAML-parsed values."""
    parsed = []
    for item in items:
        if "=" not in item:
            raise KeptError(
                f"override '{item}' is not KEY=VALUE", where="--set", fix="write e.g. --set train.max_steps=50"
            )
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise KeptError(f"override '{item}' has an empty key", where="--set")
        try:
            value = parse_yaml(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parsed.append((key.split("."), value))
    return parsed


def override_pairs(overrides: Iterable[str] | dict[str, Any]) -> list[tuple[list[str], Any]]:
    """Key paths and values of overrides: a mapping of dotted keys, or ``KEY=VALUE`` strings (``--set``)."""
    if isinstance(overrides, dict):
        return [(key.split("."), value) for key, value in overrides.items()]
    return parse_overrides(overrides)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str] | dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a raw configuration mapping (creating sections as needed)."""
    for path, value in override_pairs(overrides):
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise KeptError(f"cannot set '{'.'.join(path)}': '{part}' is not a section", where="--set")
            node = child
        node[path[-1]] = value
    return data
