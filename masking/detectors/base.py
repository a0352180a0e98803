"""The detector interface: texts in, spans out (character offsets, DESIGN.md Span contract)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from masking.spans import Span


@runtime_checkable
class Detector(Protocol):
    """Finds entity/phrase spans in texts. ``detect`` returns one list of spans per text, in text order.

    Detectors do not resolve overlaps between each other: ``masking.annotate`` does that once.
    """

    name: str

    def detect(self, texts: Sequence[str]) -> list[list[Span]]: ...


@runtime_checkable
class DocDetector(Protocol):
    """A detector that reads spaCy ``Doc`` objects; the annotator runs one ``nlp.pipe`` for all of them."""

    name: str
    nlp: Any

    def spans_from_doc(self, doc: Any) -> list[Span]: ...


class Candidate(Protocol):
    entity_id: int
    prior: float
    alias: str


class AliasIndexLike(Protocol):
    """What masking needs of ``kg.AliasIndex`` (kept structural so masking imports kg lazily)."""

    def lookup(self, mention: str, exact: bool = False) -> list[Any]: ...

    def surface_forms(self) -> Iterator[tuple[str, list[int]]]: ...
