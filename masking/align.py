"""Character spans -> token masking units (word / phrase / entity) for fast tokenizers.

A *unit* is what the masking strategies select as a whole:

- every span (``kind`` "entity" or "phrase") is one unit (the tokens that overlap it);
- outside spans, a word is the maximal run of tokens that start in one word of the text. Words are
  whitespace-separated, except that CJK characters (no spaces in Chinese/Japanese) are one word each,
  unless a ``segmenter`` is given, whose word boundaries are used instead;
- special tokens get unit -1.

``unit_kind`` is 0 word, 1 phrase, 2 entity. ``entity_ids`` carries the KG id of a linked entity span
(``entity_id >= 0``) on the FIRST token of the span that is present in the sequence (the first visible
token when truncation or an overflow window cut the beginning of the mention), -1 elsewhere.
``word_ids`` is the same segmentation ignoring spans (used by the whole_word/span strategies).

All the arithmetic runs over several sequences at once in numpy: the texts are joined into one
string, the character classes are computed once, and tokens find their word and their span with
``np.searchsorted``. Only validation of the spans loops over examples. ``encode_with_units``
(:mod:`masking.encoding`) runs this aligner over a whole tokenised batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from masking.char_words import _anchor, _char_word_ids, _segment_starts
from masking.errors import MaskingError
from masking.spans import KIND_ENTITY, KIND_PHRASE, KIND_WORD, Span, resolve_overlaps

__all__ = ["AlignedUnits", "Segmenter", "align_spans"]

#: A segmenter maps a text to its words: either the word strings in order (e.g. ``jieba.lcut``)
#: or ``(start, end)`` character offsets.
Segmenter = Callable[[str], Sequence[Union[str, tuple[int, int]]]]

_KIND_CODE = {"phrase": KIND_PHRASE, "entity": KIND_ENTITY}


@dataclass
class AlignedUnits:
    """Per-token alignment of one sequence (numpy int64 arrays of the sequence length)."""

    unit_ids: np.ndarray
    unit_kind: np.ndarray
    entity_ids: np.ndarray
    word_ids: np.ndarray

    def to_lists(self) -> dict[str, list[int]]:
        return {
            "unit_ids": self.unit_ids.tolist(),
            "unit_kind": self.unit_kind.tolist(),
            "entity_ids": self.entity_ids.tolist(),
            "word_ids": self.word_ids.tolist(),
        }


# ----------------------------------------------------------------------------- characters -> words: masking.char_words

# ----------------------------------------------------------------------------- spans


def _check_spans(
    spans: Sequence[Mapping[str, Any]] | None, text_len: int | None, index: int, overlaps: str
) -> list[Mapping[str, Any]]:
    """Validated spans in text order (``text_len`` None: no text to bound them)."""
    if not spans:
        return []
    prev_end = -1
    ordered = True
    clean: list[Mapping[str, Any]] = []
    for k, span in enumerate(spans):
        where = f"spans_per_text[{index}][{k}]"
        try:
            start, end, kind = int(span["start"]), int(span["end"]), span["kind"]
        except (KeyError, TypeError, ValueError) as exc:
            raise MaskingError(
                f"span is not a Span record ({exc!r}): {span!r}",
                where=where,
                fix="give dicts with integer start/end, kind 'entity'|'phrase', entity_id "
                "(masking.spans.make_span builds one)",
            ) from None
        if kind not in _KIND_CODE:
            raise MaskingError(
                f"span kind {kind!r} is not 'entity' or 'phrase'", where=where, fix="set kind to 'entity' or 'phrase'"
            )
        if start < 0 or (text_len is not None and end > text_len) or start > end:
            bound = "" if text_len is None else f" of length {text_len}"
            raise MaskingError(
                f"span ({start}, {end}) lies outside the text{bound} or ends before it starts",
                where=where,
                fix="spans are character offsets into this text with 0 <= start <= end <= "
                "len(text); re-run annotation on the same text",
            )
        if start == end:
            continue  # empty span: nothing to align
        if start < prev_end:
            ordered = False
        prev_end = max(prev_end, end)
        clean.append(span)
    if ordered:
        return clean
    if overlaps == "error":
        raise MaskingError(
            "spans overlap or are not sorted by start",
            where=f"spans_per_text[{index}]",
            fix="resolve them with masking.spans.resolve_overlaps, or pass overlaps='resolve'",
        )
    return list(resolve_overlaps(clean))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the aligner


def _align_flat(
    *,
    tok_start: np.ndarray,
    tok_end: np.ndarray,
    special: np.ndarray,
    word: np.ndarray,
    span_start: np.ndarray,
    span_end: np.ndarray,
    span_kind: np.ndarray,
    span_eid: np.ndarray,
    seq_lengths: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Align tokens of several sequences laid end to end.

    ``tok_start``/``tok_end`` are character offsets into the joined string; spans too (sorted, disjoint);
    ``word`` is the (global) word index of every token. Returns ``(unit_ids, unit_kind, entity_ids, word_ids)``, flat,
    numbered from 0 inside every sequence.
    """
    n = tok_start.shape[0]
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    content = ~special

    if span_start.size:
        j = np.searchsorted(span_end, tok_start, side="right")  # first span ending after the token start
        jc = np.minimum(j, span_start.size - 1)
        in_span = (j < span_start.size) & (span_start[jc] < tok_end) & (tok_end > tok_start) & content
    else:
        jc = np.zeros(n, dtype=np.int64)
        in_span = np.zeros(n, dtype=bool)
    # key of the unit each token belongs to: span index (negative) or word index
    key = np.where(in_span, -1 - jc, word)

    seq_first = np.zeros(n, dtype=bool)
    seq_starts = np.concatenate(([0], np.cumsum(seq_lengths)[:-1])).astype(np.int64)
    seq_starts = seq_starts[seq_lengths > 0]
    seq_first[seq_starts] = True
    prev_special = np.empty(n, dtype=bool)
    prev_special[0] = True
    prev_special[1:] = special[:-1]
    fresh = seq_first | prev_special
    new_unit = content & (fresh | (key != np.roll(key, 1)))
    new_word = content & (fresh | (word != np.roll(word, 1)))

    def local_ids(new: np.ndarray) -> np.ndarray:
        cum = np.cumsum(new, dtype=np.int64)
        before = cum[seq_starts] - new[seq_starts]  # count of starts before each sequence
        per_seq = np.zeros(seq_lengths.shape[0], dtype=np.int64)
        per_seq[seq_lengths > 0] = before
        ids = cum - 1 - np.repeat(per_seq, seq_lengths)
        return np.where(content, ids, -1)

    unit_ids = local_ids(new_unit)
    word_ids = local_ids(new_word)
    if span_start.size:
        unit_kind = np.where(in_span, span_kind[jc], KIND_WORD)
        entity_ids = np.where(in_span & new_unit, span_eid[jc], -1)
    else:
        unit_kind = np.zeros(n, dtype=np.int64)
        entity_ids = np.full(n, -1, dtype=np.int64)
    return unit_ids, unit_kind.astype(np.int64), entity_ids.astype(np.int64), word_ids


def _span_arrays(spans_per_text: Sequence[Sequence[Mapping[str, Any]]], bases: np.ndarray) -> tuple[np.ndarray, ...]:
    starts: list[int] = []
    ends: list[int] = []
    kinds: list[int] = []
    eids: list[int] = []
    for base, spans in zip(bases.tolist(), spans_per_text):
        for span in spans:
            starts.append(base + int(span["start"]))
            ends.append(base + int(span["end"]))
            kind = _KIND_CODE[span["kind"]]
            kinds.append(kind)
            eid = span.get("entity_id")
            eid = -1 if eid is None else int(eid)
            eids.append(eid if kind == KIND_ENTITY and eid >= 0 else -1)
    as_arr = lambda xs: np.asarray(xs, dtype=np.int64)  # noqa: E731
    return as_arr(starts), as_arr(ends), as_arr(kinds), as_arr(eids)


def _join_texts(texts: Sequence[str], segmenter: Segmenter | None) -> tuple[str, np.ndarray, np.ndarray | None]:
    lengths = np.fromiter((len(t) + 1 for t in texts), dtype=np.int64, count=len(texts))
    bases = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    joined = "\n".join(texts) + "\n"  # the separator is whitespace: words never cross texts
    seg = None
    if segmenter is not None:
        starts: list[int] = []
        for i, (text, base) in enumerate(zip(texts, bases.tolist())):
            starts.extend(base + s for s in _segment_starts(text, segmenter(text), i))
        seg = np.asarray(starts, dtype=np.int64)
    return joined, bases, seg


@dataclass(frozen=True)
class JoinedTexts:
    """Texts laid end to end (:func:`_join_texts`) with the word of every character and the spans as arrays:
    what the token offsets of a batch are aligned against (:meth:`anchor`, then :meth:`align`)."""

    joined: str
    bases: np.ndarray  # [D] where each text starts in ``joined``
    segment_starts: np.ndarray | None  # the segmenter's word starts in ``joined``, None without one
    char_word: np.ndarray  # [C] word index of every character of ``joined``
    nonspace: np.ndarray  # positions of the non-whitespace characters
    spans: tuple[np.ndarray, ...]  # start, end, kind, entity id of every span, offsets into ``joined``

    @classmethod
    def of(
        cls, texts: Sequence[str], spans_per_text: Sequence[Sequence[Mapping[str, Any]]], segmenter: Segmenter | None
    ) -> JoinedTexts:
        """``texts`` with their checked spans (sorted, disjoint; :func:`_check_spans`)."""
        joined, bases, seg = _join_texts(texts, segmenter)
        char_word, nonspace = _char_word_ids(joined, seg)
        return cls(joined, bases, seg, char_word, nonspace, _span_arrays(spans_per_text, bases))

    def anchor(self, starts: np.ndarray, ends: np.ndarray, text_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token offsets into ``joined`` moved off leading whitespace (:func:`masking.char_words._anchor`)."""
        return _anchor(starts, ends, self.nonspace, text_end)

    def align(
        self, starts: np.ndarray, ends: np.ndarray, *, special: np.ndarray, seq_lengths: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """:func:`_align_flat` of anchored token offsets against these words and spans: ``(unit_ids, unit_kind,
        entity_ids, word_ids)``, flat, numbered inside each of the sequences of ``seq_lengths`` tokens."""
        span_start, span_end, span_kind, span_eid = self.spans
        return _align_flat(
            tok_start=starts,
            tok_end=ends,
            special=special,
            word=self.char_word[np.clip(starts, 0, self.char_word.shape[0] - 1)],
            span_start=span_start,
            span_end=span_end,
            span_kind=span_kind,
            span_eid=span_eid,
            seq_lengths=seq_lengths,
        )


def align_spans(
    offsets: Sequence[Sequence[int]],
    spans: Sequence[Span],
    special_tokens_mask: Sequence[int],
    text: str | None = None,
    segmenter: Segmenter | None = None,
    overlaps: str = "resolve",
) -> AlignedUnits:
    """Align the character ``spans`` of one text to its tokens.

    ``offsets`` are the fast tokenizer's ``offset_mapping`` (character offsets, end exclusive),
    ``special_tokens_mask`` 1 for special tokens. With ``text`` the words are whitespace words (CJK
    characters one word each, or the ``segmenter``'s words); without it a word is a run of tokens whose
    offsets touch (the previous token ends where the next one starts), as in transformers' whole-word
    masking. ``overlaps``: "resolve" (masking.spans.resolve_overlaps) or "error".
    """
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    special = np.asarray(special_tokens_mask, dtype=bool).reshape(-1)
    if special.shape[0] != off.shape[0]:
        raise MaskingError(
            f"{off.shape[0]} offsets but {special.shape[0]} special-token flags",
            where="special_tokens_mask",
            fix="pass the mask of the same encoding",
        )
    if text is not None:
        checked = _check_spans(spans, len(text), 0, overlaps)
        joined, bases, seg = _join_texts([text], segmenter)
        char_word, nonspace = _char_word_ids(joined, seg)
        starts, ends = _anchor(off[:, 0], off[:, 1], nonspace, np.full(off.shape[0], len(text)))
        starts = np.where(special, off[:, 0], starts)
        ends = np.where(special, off[:, 1], ends)
        word = char_word[np.clip(starts, 0, char_word.shape[0] - 1)]
    else:
        # no text to bound the spans: only their own consistency is checked (start <= end, kind, types)
        checked = _check_spans(spans, None, 0, overlaps)
        bases = np.zeros(1, dtype=np.int64)
        # words from touching offsets: a token starts a new word when a gap precedes it
        gap = np.ones(off.shape[0], dtype=bool)
        gap[1:] = (off[1:, 0] != off[:-1, 1]) | special[:-1]
        word = np.cumsum(gap & ~special)
        starts, ends = off[:, 0], off[:, 1]
    s_start, s_end, s_kind, s_eid = _span_arrays([checked], bases)
    unit_ids, unit_kind, entity_ids, word_ids = _align_flat(
        tok_start=starts,
        tok_end=ends,
        special=special,
        word=word,
        span_start=s_start,
        span_end=s_end,
        span_kind=s_kind,
        span_eid=s_eid,
        seq_lengths=np.array([off.shape[0]], dtype=np.int64),
    )
    return AlignedUnits(unit_ids, unit_kind, entity_ids, word_ids)
