"""The Span record (DESIGN.md contract) and the one place overlaps are resolved."""

from __future__ import annotations

from typing import Iterable, Literal, TypedDict

SpanKind = Literal["entity", "phrase"]


class Span(TypedDict):
    """Character offsets into the document text, end exclusive."""

    start: int
    end: int
    kind: SpanKind
    label: str
    entity_id: int  # KG vocabulary index, -1 when not linked
    source: str  # detector name: ner, noun_chunk, gazetteer, gold, ...


def make_span(start: int, end: int, kind: SpanKind, label: str = "", entity_id: int = -1,
              source: str = "") -> Span:
    return Span(start=int(start), end=int(end), kind=kind, label=label, entity_id=int(entity_id), source=source)


def _priority(span: Span) -> tuple[int, int, int]:
    # entity beats phrase, longer beats shorter, earlier beats later
    return (0 if span["kind"] == "entity" else 1, -(span["end"] - span["start"]), span["start"])


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep a non-overlapping subset: entity > phrase, then longer > shorter, then earlier > later.

    Returned in text order. Empty spans (start >= end) are dropped.
    """
    kept: list[Span] = []
    taken: list[tuple[int, int]] = []
    for span in sorted((s for s in spans if s["end"] > s["start"]), key=_priority):
        if any(span["start"] < end and start < span["end"] for start, end in taken):
            continue
        kept.append(span)
        taken.append((span["start"], span["end"]))
    return sorted(kept, key=lambda s: (s["start"], s["end"]))
