"""Overflow windows that end on unit boundaries: a long document is cut into character windows
whose tokens fit ``max_length`` and whose cuts fall between masking units, never inside an entity,
phrase or word (DESIGN: "Windows end on unit boundaries, never inside an entity").

A tokenizer's own overflow (``return_overflowing_tokens``) cuts every ``max_length`` tokens, wherever
that is (紫|禁城 across two windows). Here each document is tokenised once without special tokens,
its tokens are aligned to units (the same aligner as ``encode_with_units``), and a window ends
before the last unit that would not fit; the next window (overlapping by about ``stride`` tokens)
starts at the start of a unit too. Only a single unit longer than a whole window is cut inside
(at a word boundary of it when there is one).

``window_documents`` returns the window texts with their spans (offsets moved into the window) and
the index of each window's document; ``encode_with_units`` encodes those instead of the documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["KnownWords", "cut_points", "window_documents"]


def cut_points(unit_start: np.ndarray, word_start: np.ndarray, capacity: int, stride: int = 0) -> list[tuple[int, int]]:
    """``(first, end)`` token ranges (end exclusive) of the windows of one document.

    ``unit_start[i]`` / ``word_start[i]``: token i starts a new unit / word ([n] bools, token 0 True);
    ``capacity``: content tokens per window; ``stride``: tokens the next window repeats (at most).
    Every range holds at most ``capacity`` tokens and ends before a unit start where one exists.
    """
    n = int(unit_start.shape[0])
    if n <= capacity:
        return [(0, n)]
    units = np.flatnonzero(unit_start)  # sorted token indices where a unit starts
    words = np.flatnonzero(word_start)
    ranges: list[tuple[int, int]] = []
    first = 0
    while True:
        limit = first + capacity
        if limit >= n:
            ranges.append((first, n))
            return ranges
        end = _last_at_most(units, limit, first)  # the last unit start in (first, limit]
        if end is None:
            end = _last_at_most(words, limit, first) or limit  # one unit longer than the window
        ranges.append((first, end))
        nxt = end
        if stride > 0:
            back = _first_at_least(units, end - stride, first)  # repeat whole units only
            nxt = back if back is not None and back < end else end
        first = nxt


def _last_at_most(starts: np.ndarray, limit: int, above: int) -> int | None:
    k = int(np.searchsorted(starts, limit, side="right")) - 1
    return int(starts[k]) if k >= 0 and starts[k] > above else None


def _first_at_least(starts: np.ndarray, value: int, above: int) -> int | None:
    k = int(np.searchsorted(starts, value, side="left"))
    return int(starts[k]) if k < starts.shape[0] and starts[k] > above else None


class KnownWords:
    """A segmenter that answers from the words already found for the windows (each document is segmented
    once, not again window by window) and asks ``segmenter`` for any other text."""

    def __init__(self, segmenter: Any, known: dict[str, list[tuple[int, int]]]) -> None:
        self.segmenter = segmenter
        self.known = known

    def __call__(self, text: str) -> Any:
        found = self.known.get(text)
        return found if found is not None else self.segmenter(text)


def _window_words(starts: np.ndarray, lo: int, hi: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the words of text[lo:hi] from the document's sorted word starts."""
    inside = starts[(starts >= lo) & (starts < hi)] - lo
    ends = np.append(inside[1:], hi - lo)
    return list(zip(inside.tolist(), ends.tolist()))


def window_documents(
    tokenizer: Any,
    texts: Sequence[str],
    spans: Sequence[Sequence[Mapping[str, Any]]],
    max_length: int,
    stride: int,
    segmenter: Any = None,
) -> tuple[list[str], list[list[dict[str, Any]]], list[int], Any]:
    """Cut the documents longer than a window into windows on unit boundaries.

    ``spans``: checked spans per text (sorted, disjoint). Returns ``(texts, spans, doc_of_window,
    segmenter)``; a short document is its own single window, unchanged; the segmenter returned knows
    the words of the windows already (:class:`KnownWords`), None when ``segmenter`` is None.
    """
    from masking.align import JoinedTexts

    capacity = max_length - tokenizer.num_special_tokens_to_add()
    enc = tokenizer(
        list(texts),
        add_special_tokens=False,
        truncation=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    lengths = np.fromiter((len(ids) for ids in enc["input_ids"]), dtype=np.int64, count=len(texts))
    long_docs = np.flatnonzero(lengths > capacity).tolist()
    out_texts: list[str] = list(texts)
    out_spans: list[list[dict[str, Any]]] = [list(map(dict, s)) for s in spans]
    doc_of: list[int] = list(range(len(texts)))
    if not long_docs:
        return out_texts, out_spans, doc_of, segmenter
    long_texts = [texts[i] for i in long_docs]
    batch = JoinedTexts.of(long_texts, [spans[i] for i in long_docs], segmenter)
    bases, seg = batch.bases, batch.segment_starts
    offsets = [np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2) for i in long_docs]
    seq_lengths = lengths[long_docs]
    tok_base = np.repeat(bases, seq_lengths)
    flat = np.concatenate(offsets) if offsets else np.zeros((0, 2), dtype=np.int64)
    text_len = np.fromiter(map(len, long_texts), dtype=np.int64, count=len(long_texts))
    tok_start, tok_end = batch.anchor(
        flat[:, 0] + tok_base, flat[:, 1] + tok_base, np.repeat(bases + text_len, seq_lengths)
    )
    unit_ids, _, _, word_ids = batch.align(
        tok_start, tok_end, special=np.zeros(flat.shape[0], dtype=bool), seq_lengths=seq_lengths
    )
    rebuilt_texts: list[str] = []
    rebuilt_spans: list[list[dict[str, Any]]] = []
    rebuilt_doc: list[int] = []
    bounds = np.concatenate(([0], np.cumsum(seq_lengths))).tolist()
    long_set = dict(zip(long_docs, range(len(long_docs))))
    known: dict[str, list[tuple[int, int]]] = {}
    for i, text in enumerate(texts):
        if i not in long_set:
            rebuilt_texts.append(out_texts[i])
            rebuilt_spans.append(out_spans[i])
            rebuilt_doc.append(i)
            continue
        k = long_set[i]
        a, b = bounds[k], bounds[k + 1]
        units, words = unit_ids[a:b], word_ids[a:b]
        unit_start = np.ones(b - a, dtype=bool)
        unit_start[1:] = units[1:] != units[:-1]
        word_start = np.ones(b - a, dtype=bool)
        word_start[1:] = words[1:] != words[:-1]
        starts = tok_start[a:b] - bases[k]  # anchored character starts of the tokens
        for first, end in cut_points(unit_start, word_start, capacity, stride):
            lo = 0 if first == 0 else int(starts[first])
            hi = len(text) if end == b - a else int(starts[end])
            rebuilt_texts.append(text[lo:hi])
            if seg is not None:
                known[text[lo:hi]] = _window_words(seg, int(bases[k]) + lo, int(bases[k]) + hi)
            rebuilt_spans.append(
                [
                    {**s, "start": max(s["start"], lo) - lo, "end": min(s["end"], hi) - lo}
                    for s in out_spans[i]
                    if s["start"] < hi and s["end"] > lo
                ]
            )
            rebuilt_doc.append(i)
    return rebuilt_texts, rebuilt_spans, rebuilt_doc, (None if segmenter is None else KnownWords(segmenter, known))
