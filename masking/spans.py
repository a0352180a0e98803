"""The Span record (DESIGN.md contract) and the one place overlaps are resolved."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict, cast

from masking.errors import MaskingError

SpanKind = Literal["entity", "phrase"]
SPAN_KINDS: tuple[str, ...] = ("entity", "phrase")
SPAN_FIELDS: tuple[str, ...] = ("start", "end", "kind", "label", "entity_id", "source")
#: ``unit_kind`` codes of an encoded example (DESIGN.md): 0 word, 1 phrase, 2 entity.
KIND_WORD, KIND_PHRASE, KIND_ENTITY = 0, 1, 2


class Span(TypedDict):
    """Character offsets into the document text, end exclusive."""

    start: int
    end: int
    kind: SpanKind
    label: str
    entity_id: int  # KG vocabulary index, -1 when not linked
    source: str  # detector name: ner, noun_chunk, gazetteer, gold, ...


def make_span(start: int, end: int, kind: SpanKind, label: str = "", entity_id: int = -1, source: str = "") -> Span:
    return Span(start=int(start), end=int(end), kind=kind, label=label, entity_id=int(entity_id), source=source)


def _priority(span: Span) -> tuple[int, int, int]:
    # entity beats phrase, longer beats shorter, earlier beats later
    return (0 if span["kind"] == "entity" else 1, -(span["end"] - span["start"]), span["start"])


def resolve_overlaps(spans: Iterable[Span], source_priority: Sequence[str] = ()) -> list[Span]:
    """Keep a non-overlapping subset: entity > phrase, then longer > shorter, then earlier > later.

    Ties (same kind and offsets, e.g. a gold link that a gazetteer found too) go to a linked span over an
    unlinked one, then to the source listed first in ``source_priority``, then to the first given.
    Returned in text order. Empty spans (start >= end) are dropped.

    O(n log n): spans sorted by start split into clusters of transitively overlapping spans (a span
    outside every other is kept at once); inside a cluster the greedy choice by priority checks
    overlap with a Fenwick tree over the compressed boundaries.
    """
    candidates = sorted((s for s in spans if s["end"] > s["start"]), key=lambda s: (s["start"], s["end"]))
    if len(candidates) <= 1:
        return candidates
    rank = {source: i for i, source in enumerate(source_priority)}

    def key(s: Span) -> tuple[int, int, int, bool, int]:
        return (*_priority(s), s["entity_id"] < 0, rank.get(s["source"], len(rank)))

    kept: list[Span] = []
    cluster: list[Span] = [candidates[0]]
    cluster_end = candidates[0]["end"]
    for span in candidates[1:]:
        if span["start"] < cluster_end:
            cluster.append(span)
            cluster_end = max(cluster_end, span["end"])
            continue
        kept.extend(cluster if len(cluster) == 1 else _resolve_cluster(cluster, key))
        cluster, cluster_end = [span], span["end"]
    kept.extend(cluster if len(cluster) == 1 else _resolve_cluster(cluster, key))
    return kept


def _resolve_cluster(cluster: list[Span], key: Any) -> list[Span]:
    """Greedy by priority over one cluster; a Fenwick tree counts taken elementary segments."""
    points = sorted({p for s in cluster for p in (s["start"], s["end"])})
    size = len(points)  # elementary segment k is [points[k], points[k+1])
    tree = [0] * (size + 1)

    def prefix(k: int) -> int:  # taken segments among 0..k-1
        total = 0
        while k > 0:
            total += tree[k]
            k -= k & -k
        return total

    chosen: list[Span] = []
    for span in sorted(cluster, key=key):
        first = bisect_left(points, span["start"])
        last = bisect_left(points, span["end"])  # segments first..last-1 cover the span
        if prefix(last) - prefix(first):
            continue
        chosen.append(span)
        for k in range(first, last):  # accepted spans are disjoint: each segment is marked once
            i = k + 1
            while i <= size:
                tree[i] += 1
                i += i & -i
    chosen.sort(key=lambda s: (s["start"], s["end"]))
    return chosen


#: Largest entity id a span may carry: ids are stored as int64 (Arrow, torch).
MAX_ENTITY_ID = 2**63 - 1


def coerce_span(raw: Mapping[str, Any], *, default_source: str = "gold") -> Span:
    """A span from loosely typed input (JSON): fills label/entity_id/source defaults, checks types.

    Raises ``MaskingError`` (without a location; callers add the document id) when a field is missing or wrong.
    """
    if not isinstance(raw, Mapping):
        raise MaskingError(
            f"a span must be an object with start/end/kind, got {type(raw).__name__}",
            fix='write spans as {"start": int, "end": int, "kind": "entity"|"phrase", ...}',
        )
    try:
        start, end = raw["start"], raw["end"]
    except KeyError as missing:
        raise MaskingError(
            f"span {dict(raw)!r} has no {missing.args[0]!r}",
            fix="every span needs integer character offsets 'start' and 'end'",
        ) from None
    if isinstance(start, bool) or isinstance(end, bool) or not isinstance(start, int) or not isinstance(end, int):
        raise MaskingError(
            f"span offsets must be integers, got start={start!r} end={end!r}",
            fix="use character offsets into the text, end exclusive",
        )
    raw_kind = raw.get("kind") or "entity"
    if raw_kind not in SPAN_KINDS:
        raise MaskingError(f"span kind {raw_kind!r} is not one of {list(SPAN_KINDS)}", fix="use 'entity' or 'phrase'")
    kind = cast(SpanKind, raw_kind)
    entity_id = raw.get("entity_id", -1)
    if entity_id is None:
        entity_id = -1
    if isinstance(entity_id, bool) or not isinstance(entity_id, int):
        raise MaskingError(
            f"span entity_id must be an integer KG id or -1, got {entity_id!r}",
            fix="map entity names to ids with kg.KnowledgeGraph.entity_id, or use -1",
        )
    if not -1 <= entity_id <= MAX_ENTITY_ID:
        raise MaskingError(
            f"span entity_id {entity_id} is not a KG id (0 to {MAX_ENTITY_ID:,}) or -1",
            fix="use the entity's row in kg/entities.tsv, or -1 for an unlinked span",
        )
    return make_span(start, end, kind, str(raw.get("label") or ""), entity_id, str(raw.get("source") or default_source))


def check_spans(
    text: str,
    spans: Sequence[Mapping[str, Any]],
    *,
    doc_id: str = "?",
    field: str = "spans",
    on_invalid: Literal["error", "drop"] = "error",
    default_source: str = "gold",
) -> tuple[list[Span], int]:
    """Validate spans against ``text``; returns (valid spans, number dropped).

    A span is invalid when its offsets fall outside ``0..len(text)`` or ``start >= end``. With
    ``on_invalid="error"`` the first one raises ``MaskingError`` naming the document and field.
    """
    valid: list[Span] = []
    dropped = 0
    n = len(text)
    for i, raw in enumerate(spans):
        try:
            span = coerce_span(raw, default_source=default_source)
        except MaskingError as error:
            if on_invalid == "drop":
                dropped += 1
                continue
            raise MaskingError(error.what, where=f"document {doc_id!r} field {field}[{i}]", fix=error.fix) from None
        if not (0 <= span["start"] < span["end"] <= n):
            if on_invalid == "drop":
                dropped += 1
                continue
            raise MaskingError(
                f"span [{span['start']}, {span['end']}) lies outside the text of {n} characters or is empty",
                where=f"document {doc_id!r} field {field}[{i}]",
                fix="spans are character offsets into 'text' with 0 <= start < end <= len(text); fix the corpus "
                "or set invalid_spans='drop' in the annotation config",
            )
        valid.append(span)
    return valid, dropped


def spans_from_token_positions(
    tokens: Sequence[str], mentions: Sequence[tuple[Sequence[int], Mapping[str, Any]]], *, separator: str = " "
) -> tuple[str, list[Span]]:
    """Join pre-tokenised text (FewRel style) and turn token-index mentions into character spans.

    ``mentions`` holds ``(token_positions, span_fields)``; positions are token indices (contiguous or
    not: the span covers first..last). Returns ``(text, spans)`` with ``text = separator.join(tokens)``.
    """
    starts: list[int] = []
    position = 0
    for token in tokens:
        starts.append(position)
        position += len(token) + len(separator)
    text = separator.join(tokens)
    spans: list[Span] = []
    for positions, fields in mentions:
        if not positions:
            continue
        first, last = min(positions), max(positions)
        if first < 0 or last >= len(tokens):
            raise MaskingError(
                f"token positions {list(positions)} fall outside the {len(tokens)} tokens",
                fix="token positions are 0-based indices into 'tokens'",
            )
        spans.append(
            make_span(
                starts[first],
                starts[last] + len(tokens[last]),
                fields.get("kind", "entity"),
                fields.get("label", ""),
                fields.get("entity_id", -1),
                fields.get("source", "gold"),
            )
        )
    return text, spans
