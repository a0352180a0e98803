"""Word segmenters by name, for text without spaces (Chinese): ``encode.segmenter`` in a run config.

A segmenter maps a text to its words (see ``masking.align.Segmenter``); ``encode_with_units`` turns
its words into the word units of every strategy (``whole_word``, ``span``, the word stage of
``ernie``). Names:

- ``none``: no segmenter (whitespace words; CJK characters one word each) — the default;
- ``jieba``: ``jieba.lcut`` (``pip install jieba``, or ``kept[zh]``);
- ``pkuseg`` / ``pkuseg:<model>``: ``spacy_pkuseg.pkuseg(model_name=...)`` (``pip install spacy-pkuseg``;
  the ``default`` model is downloaded on first use, so offline give a local model directory);
- ``spacy:<pipeline>``: the tokens of a spaCy pipeline (package name or directory, only its tokenizer).

``build_segmenter`` also accepts a Python callable and returns it unchanged. A named segmenter is
picklable (it pickles as its name and loads its package again in the worker), so it travels to
``datasets.map(num_proc=...)`` workers and hashes cheaply.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Union

from masking.align import Segmenter
from masking.errors import MaskingError

__all__ = ["SEGMENTER_NAMES", "NamedSegmenter", "build_segmenter", "check_segmenter_name"]

#: The names ``encode.segmenter`` accepts (``<...>`` is a free argument).
SEGMENTER_NAMES: tuple[str, ...] = ("none", "jieba", "pkuseg", "pkuseg:<model>", "spacy:<pipeline>")

_WHERE = "encode.segmenter"
#: package to import -> what to pip install
_PIP = {"jieba": "jieba  (or pip install 'kept[zh]')", "spacy_pkuseg": "spacy-pkuseg", "spacy": "spacy"}


def check_segmenter_name(name: str | None) -> str:
    """The normalised name (``None``/``""`` -> ``"none"``); a MaskingError for an unknown one."""
    text = "none" if name is None else str(name).strip()
    text = text or "none"
    kind, _, arg = text.partition(":")
    kind = kind.lower()
    if kind in ("none", "jieba") and not arg:
        return kind
    if kind == "pkuseg":
        return f"pkuseg:{arg}" if arg else "pkuseg"
    if kind == "spacy" and arg:
        return f"spacy:{arg}"
    raise MaskingError(
        f"unknown segmenter {name!r}",
        where=_WHERE,
        fix=f"use one of {' | '.join(SEGMENTER_NAMES)}, or pass a callable through the Python API",
    )


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MaskingError(
            f"the segmenter needs the Python package {module!r}, which is not installed",
            where=_WHERE,
            fix=f"pip install {_PIP.get(module, module)}",
        ) from None


def _jieba() -> Callable[[str], Sequence[str]]:
    jieba = _import("jieba")
    logging.getLogger("jieba").setLevel(logging.WARNING)  # "Building prefix dict ..." on first use
    jieba.setLogLevel(logging.WARNING)
    return jieba.lcut


def _pkuseg(model: str) -> Callable[[str], Sequence[str]]:
    pkuseg = _import("spacy_pkuseg")
    try:
        return pkuseg.pkuseg(model_name=model).cut
    except Exception as error:  # noqa: BLE001 - download (URLError), missing files (OSError), their own errors
        raise MaskingError(
            f"cannot load the pkuseg model {model!r} ({type(error).__name__}: {error})".splitlines()[0],
            where=_WHERE,
            fix="give a local model directory (segmenter: pkuseg:/path/to/model); "
            "named models are downloaded on first use and need the network",
        ) from None


def _spacy(pipeline: str) -> Callable[[str], list[tuple[int, int]]]:
    _import("spacy")
    from masking.detectors.spacy_model import load_spacy_pipeline

    nlp = load_spacy_pipeline(pipeline, components=())

    def segment(text: str) -> list[tuple[int, int]]:
        return [(t.idx, t.idx + len(t.text)) for t in nlp.make_doc(text) if not t.is_space]

    return segment


class NamedSegmenter:
    """A segmenter built from its name; loads its package when made and again after unpickling."""

    def __init__(self, name: str) -> None:
        self.name = check_segmenter_name(name)
        if self.name == "none":
            raise MaskingError("'none' is no segmenter", where=_WHERE, fix="use build_segmenter, which returns None")
        self._segment = self._load()

    def _load(self) -> Callable[[str], Sequence[Union[str, tuple[int, int]]]]:
        kind, _, arg = self.name.partition(":")
        if kind == "jieba":
            return _jieba()
        if kind == "pkuseg":
            return _pkuseg(arg or "default")
        return _spacy(arg)

    def __call__(self, text: str) -> Sequence[Union[str, tuple[int, int]]]:
        return self._segment(text)

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self._segment = self._load()

    def __repr__(self) -> str:
        return f"NamedSegmenter({self.name!r})"


def build_segmenter(spec: str | Segmenter | None) -> Segmenter | None:
    """The segmenter that ``spec`` names (None for ``none``); a callable is returned as it is."""
    if callable(spec):
        return spec
    if spec is not None and not isinstance(spec, str):
        raise MaskingError(
            f"segmenter is a {type(spec).__name__}",
            where=_WHERE,
            fix="give a name (jieba, pkuseg, spacy:<pipeline>, none) or a callable text -> words",
        )
    name = check_segmenter_name(spec)
    return None if name == "none" else NamedSegmenter(name)
