"""Detectors added by name: a ``register_detector`` decorator, the ``kept.detectors`` entry-point group,
or a ``"package.module:factory"`` path given in the configuration.

A factory is any callable that returns a detector (``masking.detectors.base.Detector``: a ``name`` and
``detect(texts) -> [[Span, ...], ...]``, or a spaCy ``DocDetector``). It receives the ``options`` of its
configuration as keyword arguments, plus those of ``name``, ``alias_index`` and ``entity_labels`` that
its signature accepts (so a plug-in can link its mentions to the KG)::

    from masking.detectors import register_detector

    @register_detector("my_ner")
    def make_detector(*, name, alias_index=None, min_len=2): ...

    annotation:
      detectors: [{type: plugin, name: my_ner, factory: "my_pkg.detectors:make_detector", options: {min_len: 3}}]

A package can also announce factories in its metadata (``[project.entry-points."kept.detectors"]
my_ner = "my_pkg.detectors:make_detector"``); then ``{type: plugin, name: my_ner}`` finds it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

from masking.errors import MaskingError
from masking.spans import Span, check_spans

ENTRY_POINT_GROUP = "kept.detectors"
_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_detector(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a detector factory under ``name`` (a later registration replaces it)."""
    if not name or not isinstance(name, str):
        raise MaskingError(f"detector name {name!r}", where="register_detector", fix="give a non-empty string")

    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[name] = factory
        return factory

    return decorate


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def registered_detectors() -> list[str]:
    """Names of the registered plug-in detectors (decorator and entry points), sorted."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def import_factory(path: str, where: str) -> Callable[..., Any]:
    """``"package.module:attribute"`` -> the callable it names."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise MaskingError(
            f"factory {path!r} is not 'package.module:callable'",
            where=where,
            fix="write the module path, a colon and the function name, e.g. my_pkg.ner:make_detector",
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise MaskingError(
            f"cannot import factory {path!r} ({type(error).__name__}: {error})",
            where=where,
            fix="install the package or put its directory on PYTHONPATH",
        ) from None
    if not callable(target):
        raise MaskingError(
            f"factory {path!r} is a {type(target).__name__}, not a callable",
            where=where,
            fix="point at a function or class that returns a detector",
        )
    return target


def find_factory(name: str, factory: str | None = None, where: str = "detector plugin") -> Callable[..., Any]:
    """The factory at ``factory`` (a module path), else the one registered as ``name``."""
    if factory:
        return import_factory(factory, where)
    if name in _REGISTRY:
        return _REGISTRY[name]
    entry = _entry_points().get(name)
    if entry is None:
        known = registered_detectors()
        raise MaskingError(
            f"no detector plug-in is registered as {name!r} (registered: {', '.join(known) or 'none'})",
            where=where,
            fix="give factory: 'package.module:callable', register it with "
            f"@register_detector({name!r}), or install a package with a "
            f"{ENTRY_POINT_GROUP!r} entry point",
        )
    try:
        return entry.load()
    except Exception as error:  # noqa: BLE001 - a broken plug-in package: say which one
        raise MaskingError(
            f"cannot load the {ENTRY_POINT_GROUP} entry point {name}={entry.value} ({type(error).__name__}: {error})",
            where=where,
            fix="reinstall the package that provides it",
        ) from None


def code_digest(detectors: Sequence[Any]) -> str:
    """A digest of what a configuration's results depend on outside it: the source file of each plug-in's
    factory and each ``user_dict`` file, so the annotation cache notices an edited plug-in ("" if none)."""
    import hashlib

    digest = hashlib.sha256()
    for cfg in detectors:
        files: list[str] = []
        if getattr(cfg, "type", None) == "plugin":
            try:
                factory = find_factory(cfg.plugin or cfg.name, cfg.factory, f"detector {cfg.name}")
                files.append(inspect.getsourcefile(inspect.unwrap(factory)) or "")
            except (TypeError, OSError):  # a builtin or a C extension: nothing to read
                pass
        if getattr(cfg, "user_dict", None):
            files.append(cfg.user_dict)
        for path in files:
            try:
                with open(path, "rb") as handle:
                    digest.update(path.encode() + b"\0" + handle.read())
            except OSError:
                digest.update(path.encode())
    return digest.hexdigest() if digest.digest() != hashlib.sha256().digest() else ""


class CheckedDetector:
    """A plug-in's detector with its spans checked (offsets inside the text, a kind, the source set)."""

    def __init__(self, inner: Any, name: str) -> None:
        self.inner = inner
        self.name = name

    def detect(self, texts: Sequence[str]) -> list[list[Span]]:
        results = self.inner.detect(texts)
        if len(results) != len(texts):
            raise MaskingError(
                f"the plug-in returned {len(results)} span lists for {len(texts)} texts",
                where=f"detector {self.name}",
                fix="return one list of spans per text, in order",
            )
        checked: list[list[Span]] = []
        for index, (text, spans) in enumerate(zip(texts, results)):
            valid, _ = check_spans(
                text, list(spans), doc_id=str(index), field=f"detector {self.name} spans", default_source=self.name
            )
            checked.append([{**span, "source": self.name} for span in valid])
        return checked


def build_plugin(
    plugin: str,
    factory: str | None,
    options: Mapping[str, Any],
    *,
    name: str | None = None,
    alias_index: Any = None,
    entity_labels: Sequence[str] | None = None,
) -> Any:
    """Call the factory registered as ``plugin`` (or at ``factory``) with its options and the context it asks
    for; check what it returns. ``name``: the span ``source`` (default ``plugin``)."""
    name = name or plugin
    where = f"detector {name}"
    make = find_factory(plugin, factory, where)
    context = {"name": name, "alias_index": alias_index, "entity_labels": entity_labels}
    try:
        parameters = inspect.signature(make).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        extra = {k: v for k, v in context.items() if (takes_any or k in parameters) and k not in options}
    except (TypeError, ValueError):  # no signature (a builtin): options only
        extra = {}
    try:
        detector = make(**dict(options), **extra)
    except TypeError as error:
        raise MaskingError(
            f"the plug-in factory refused its options ({error})",
            where=f"{where} field options",
            fix="give the keyword arguments its factory takes",
        ) from None
    if hasattr(detector, "spans_from_doc") and hasattr(detector, "nlp"):
        if getattr(detector, "name", None) != name:
            detector.name = name
        return detector  # a spaCy DocDetector: runs in the annotator's nlp.pipe pass
    if not callable(getattr(detector, "detect", None)):
        raise MaskingError(
            f"the plug-in factory returned a {type(detector).__name__} without detect(texts)",
            where=where,
            fix="return an object with name and detect(texts) -> list of span lists (masking.detectors.base.Detector)",
        )
    return CheckedDetector(detector, name)
