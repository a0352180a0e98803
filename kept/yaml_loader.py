"""The one reader of kept's YAML configurations (run, compare, annotation): safe, strict, and able to say
where in the file a key is.

:func:`read_yaml` reads a file and :func:`parse_yaml` a text with :class:`_ConfigLoader`, a
``yaml.SafeLoader`` that refuses aliases, duplicate keys and nesting deeper than :data:`MAX_YAML_DEPTH`
(:class:`RefusedYaml`, with the line); :func:`_yaml_line` finds the line of a key path, for errors that
name ``file:line``. :mod:`kept.config` re-exports these names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kept.atomic_io import decode_utf8
from kept.errors import KeptError


class RefusedYaml(yaml.YAMLError):
    """YAML that parses but that kept refuses (an alias, a duplicate key); ``line`` is 1-based."""

    def __init__(self, problem: str, line: int, fix: str) -> None:
        self.problem, self.line, self.fix = problem, line, fix
        super().__init__(problem)


#: The deepest nesting of a configuration's YAML (sections, mappings and lists within each other).
MAX_YAML_DEPTH = 64


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases, without duplicate keys and at most :data:`MAX_YAML_DEPTH` levels
    deep (see :func:`read_yaml`)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RefusedYaml(
                f"YAML alias '*{event.anchor}' is not allowed in a configuration",
                event.start_mark.line + 1,
                "write the values out in full (kept refuses aliases, so a small file cannot expand into a huge one)",
            )
        depth = getattr(self, "_depth", 0)
        if depth >= MAX_YAML_DEPTH:  # PyYAML composes recursively: deeper nesting ends in a RecursionError
            raise RefusedYaml(
                f"YAML nested more than {MAX_YAML_DEPTH} levels deep",
                self.peek_event().start_mark.line + 1,
                "a configuration is a few levels deep; check the brackets and the indentation",
            )
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception as error:  # noqa: BLE001 - PyYAML's constructors fail on odd tagged values (`!!int ''`)
            raise _unreadable(node, error) from None

    def construct_document(self, node: Any) -> Any:
        try:  # collections are filled in after construct_object returned (generators)
            return super().construct_document(node)
        except yaml.YAMLError:
            raise
        except Exception as error:  # noqa: BLE001 - as in construct_object
            raise _unreadable(node, error) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if not isinstance(node, yaml.MappingNode):  # e.g. `!!set` on a list: SafeLoader says so
            return super().construct_mapping(node, deep=deep)
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            try:
                key = self.construct_object(key_node, deep=True)
                hash(key)
            except TypeError:
                continue  # unhashable: SafeLoader reports it
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise RefusedYaml(
                    f"duplicate key '{key}' (lines {first_line[key]} and {line})",
                    line,
                    "keep one of them (merge the two into one section)",
                )
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _unreadable(node: Any, error: Exception) -> RefusedYaml:
    """A value PyYAML's constructors fail on with a plain exception (``!!int ''`` is an IndexError)."""
    tag = str(node.tag).rsplit(":", 1)[-1]
    value = f" {node.value[:40]!r}" if isinstance(node, yaml.ScalarNode) else ""
    return RefusedYaml(
        f"the value{value} cannot be read as a YAML {tag} ({type(error).__name__})",
        node.start_mark.line + 1,
        "write a plain value (or remove the `!!` tag)",
    )


def parse_yaml(text: str) -> Any:
    """Parse YAML text with kept's one configuration loader (safe; no aliases; no duplicate keys)."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - _ConfigLoader is a SafeLoader


def read_yaml(path: str | Path) -> tuple[Any, str]:
    """Read a YAML configuration file: the one loader of configurations (run, compare, annotation).

    Refused with a :class:`KeptError` naming the file and line: a missing file or a directory, text
    that is not UTF-8, a YAML syntax error, a file with no content (empty or only comments: an empty
    ``--config`` would silently mean "all defaults"), a key given twice in one mapping (e.g. two
    ``train:`` sections; both lines are named), nesting deeper than :data:`MAX_YAML_DEPTH` levels (PyYAML
    would end in a RecursionError) and any alias (``*name``, ``<<: *name``). Aliases are refused outright
    rather than bounded: configurations are small, and a file of a few lines must not expand into millions
    of nodes ("billion laughs"). Anchors alone are harmless and allowed.
    """
    path = Path(path)
    if not path.exists():
        raise KeptError("configuration file not found", where=path, fix="give the path of a YAML run configuration")
    if path.is_dir():
        raise KeptError(
            "expected a YAML file, got a directory", where=path, fix="give the path of a YAML run configuration"
        )
    text = decode_utf8(path.read_bytes(), path, fix="save the configuration as UTF-8")
    try:
        data = parse_yaml(text)
    except RefusedYaml as error:
        raise KeptError(error.problem, where=path, line=error.line, fix=error.fix) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise KeptError(
            f"not valid YAML: {problem}",
            where=path,
            line=mark.line + 1 if mark else None,
            fix="fix the YAML syntax (indentation, brackets, quotes)",
        ) from None
    if data is None:
        raise KeptError(
            "the configuration file is empty (no settings)",
            where=path,
            fix="write the settings to change (e.g. `train: {max_steps: 50}`), or leave out the file "
            "to use the run's own config.yaml",
        )
    return data, text


def _yaml_line(text: str | None, loc: tuple) -> int | None:
    """The 1-based line of a key path in YAML text (the deepest key that exists)."""
    if not text:
        return None
    try:
        node = yaml.compose(text, Loader=_ConfigLoader)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            node = node.value[key]  # a list item: its own line
            line = node.start_mark.line + 1
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if key_node.value == str(key):
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            break
    return line
