"""Annotation statistics: spans by kind and source, linked fraction, token coverage, ambiguity, gold recall.

Per-document counts are plain nested dicts of integers, so shards and workers add up exactly
(``merge_counts``); ``finalize_stats`` derives the fractions once at the end.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from masking.spans import Span

# A word: a run of word characters, except that a CJK character (no spaces in Chinese/Japanese) is a word
# of its own, as in masking.align; a segmenter's words replace both.
_WORD = re.compile(
    r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]|"
    r"(?:(?![\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f])\w)+"
)


def word_offsets(text: str, segmenter: Any = None) -> list[tuple[int, int]]:
    """``(start, end)`` of the words of ``text`` that hold a word character: the ``segmenter``'s words
    (masking.segmenters; words in order or offsets), else ``_WORD`` runs."""
    if segmenter is None:
        return [m.span() for m in _WORD.finditer(text)]
    offsets: list[tuple[int, int]] = []
    pos = 0
    for word in segmenter(text):
        if isinstance(word, str):
            found = text.find(word, pos)
            if found < 0:
                continue  # a segmenter that normalises its words: the word is not counted
            start, end = found, found + len(word)
            pos = end
        else:
            start, end = int(word[0]), int(word[1])
        if _WORD.search(text, start, end):
            offsets.append((start, end))
    return offsets


def _covered(words: Sequence[tuple[int, int]], spans: Sequence[Span]) -> int:
    """How many ``words`` overlap one of the (disjoint) ``spans``."""
    ends = sorted((s["end"], s["start"]) for s in spans)
    span_ends = [e for e, _ in ends]
    span_starts = [b for _, b in ends]
    covered = 0
    for start, end in words:
        j = bisect.bisect_right(span_ends, start)  # the first span ending after the word starts
        covered += int(j < len(span_ends) and span_starts[j] < end)
    return covered


def gold_matches(gold: Sequence[Mapping[str, Any]], found: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many ``gold`` entity spans ``found`` spans hit: ``exact`` (same offsets), ``overlap`` (any
    overlap), and of the exact hits where both are linked, ``link_total`` and ``link_correct`` (same id)."""
    counts = {"exact": 0, "overlap": 0, "link_total": 0, "link_correct": 0}
    by_offsets = {(s["start"], s["end"]): s for s in found}
    # overlap test in O(log n): found spans (which may overlap each other) sorted by start, with the running
    # maximum of their ends; a gold span is hit when a span starting before its end ends after its start
    ordered = sorted(found, key=lambda s: s["start"])
    starts = [s["start"] for s in ordered]
    reach = list(itertools.accumulate((s["end"] for s in ordered), max))
    for g in gold:
        hit = by_offsets.get((g["start"], g["end"]))
        if hit is not None:
            counts["exact"] += 1
            if int(g.get("entity_id", -1)) >= 0 and int(hit.get("entity_id", -1)) >= 0:
                counts["link_total"] += 1
                counts["link_correct"] += int(hit["entity_id"] == g["entity_id"])
        before = bisect.bisect_left(starts, g["end"])  # spans starting before the gold span ends
        if before and reach[before - 1] > g["start"]:
            counts["overlap"] += 1
    return counts


def doc_counts(
    text: str,
    spans: Sequence[Span],
    *,
    linker: Any = None,
    candidates: Mapping[str, Sequence[Span]] | None = None,
    gold: Sequence[Span] | None = None,
    segmenter: Any = None,
) -> dict[str, Any]:
    """Counts for one document: final ``spans``, optionally raw detector ``candidates`` and ``gold`` spans.
    Words (``token_coverage``: the share of words a span overlaps) are the ``segmenter``'s, see ``word_offsets``."""
    by_kind: dict[str, int] = {}
    by_source: dict[str, int] = {}
    linked = ambiguous = entity_spans = covered_words = covered_chars = 0
    for span in spans:
        by_kind[span["kind"]] = by_kind.get(span["kind"], 0) + 1
        by_source[span["source"]] = by_source.get(span["source"], 0) + 1
        covered_chars += span["end"] - span["start"]
        if span["kind"] == "entity":
            entity_spans += 1
            if span["entity_id"] >= 0:
                linked += 1
                if linker is not None and linker.link(text[span["start"] : span["end"]])[1]:
                    ambiguous += 1
    words = word_offsets(text, segmenter)
    if spans:  # spans are disjoint after resolution
        covered_words = _covered(words, spans)
    record: dict[str, Any] = {
        "spans": len(spans),
        "by_kind": by_kind,
        "by_source": by_source,
        "entity_spans": entity_spans,
        "linked": linked,
        "ambiguous": ambiguous,
        "words": len(words),
        "chars": len(text),
        "covered_words": covered_words,
        "covered_chars": covered_chars,
    }
    if candidates is not None:
        record["candidates_by_source"] = {source: len(found) for source, found in candidates.items() if found}
    if gold:
        gold_entities = [g for g in gold if g["kind"] == "entity"]
        record["gold"] = len(gold_entities)
        record["gold_linked"] = sum(1 for g in gold_entities if g["entity_id"] >= 0)
        exact: dict[str, int] = {}
        overlap: dict[str, int] = {}
        link_total: dict[str, int] = {}
        link_correct: dict[str, int] = {}
        pools = dict(candidates or {})
        pools["final"] = list(spans)
        for source, found in pools.items():
            if source == "gold" or not found:
                continue
            hits = gold_matches(gold_entities, found)
            for counts, key in (
                (exact, "exact"),
                (overlap, "overlap"),
                (link_total, "link_total"),
                (link_correct, "link_correct"),
            ):
                if hits[key]:
                    counts[source] = counts.get(source, 0) + hits[key]
        record["gold_exact"] = exact
        record["gold_overlap"] = overlap
        record["gold_link_total"] = link_total
        record["gold_link_correct"] = link_correct
    return record


def merge_counts(total: dict[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """Add ``record`` into ``total`` in place (nested dicts of numbers); returns ``total``."""
    for key, value in record.items():
        if isinstance(value, Mapping):
            merge_counts(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 6) if b else None


def finalize_stats(counts: Mapping[str, Any]) -> dict[str, Any]:
    """Human-facing statistics from summed counts (the raw counts are kept under ``counts``)."""
    c = dict(counts)
    documents = c.get("documents", 0)
    stats: dict[str, Any] = {
        "documents": documents,
        "empty_documents": c.get("empty_documents", 0),
        "split_documents": c.get("split_documents", 0),
        "invalid_input_spans_dropped": c.get("invalid_input_spans", 0),
        "overlaps_removed": c.get("overlaps_removed", 0),
        "spans": c.get("spans", 0),
        "spans_per_document": _ratio(c.get("spans", 0), documents),
        "spans_by_kind": dict(sorted(c.get("by_kind", {}).items())),
        "spans_by_source": dict(sorted(c.get("by_source", {}).items())),
        "candidates_by_source": dict(sorted(c.get("candidates_by_source", {}).items())),
        "entity_spans": c.get("entity_spans", 0),
        "linked_entity_spans": c.get("linked", 0),
        "linked_fraction": _ratio(c.get("linked", 0), c.get("entity_spans", 0)),
        "ambiguous_mentions": c.get("ambiguous", 0),
        "ambiguous_fraction": _ratio(c.get("ambiguous", 0), c.get("linked", 0)),
        "words": c.get("words", 0),
        "token_coverage": _ratio(c.get("covered_words", 0), c.get("words", 0)),
        "char_coverage": _ratio(c.get("covered_chars", 0), c.get("chars", 0)),
    }
    gold = c.get("gold", 0)
    if gold:
        sources = sorted(set(c.get("gold_overlap", {})) | set(c.get("gold_exact", {})))
        stats["gold"] = {
            "gold_entity_spans": gold,
            "gold_linked": c.get("gold_linked", 0),
            "recall_exact": {s: _ratio(c.get("gold_exact", {}).get(s, 0), gold) for s in sources},
            "recall_overlap": {s: _ratio(c.get("gold_overlap", {}).get(s, 0), gold) for s in sources},
            "link_accuracy": {
                s: _ratio(c.get("gold_link_correct", {}).get(s, 0), n)
                for s, n in sorted(c.get("gold_link_total", {}).items())
            },
        }
    stats["counts"] = c
    return stats


def annotation_stats(
    dataset: Any, alias_index: Any = None, *, gold_column: str | None = None, segmenter: Any = None
) -> dict[str, Any]:
    """Statistics of an annotated dataset (``text`` + ``spans``). With ``alias_index``, ambiguous linked
    mentions are counted; with ``gold_column`` (a column of gold spans), recall of the final spans."""
    from masking.detectors.linking import MentionLinker

    linker = MentionLinker(alias_index) if alias_index is not None else None
    totals: dict[str, Any] = {}
    columns = ["text", "spans"] + ([gold_column] if gold_column else [])
    for batch in dataset.select_columns(columns).iter(batch_size=1000):
        for i, (text, spans) in enumerate(zip(batch["text"], batch["spans"])):
            text = text or ""
            gold = batch[gold_column][i] if gold_column else None
            record = doc_counts(text, spans or [], linker=linker, gold=gold, segmenter=segmenter)
            record["documents"] = 1
            record["empty_documents"] = int(not text.strip())
            merge_counts(totals, record)
    return finalize_stats(totals)
