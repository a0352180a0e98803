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

All the arithmetic runs over the whole batch at once in numpy: the texts of a batch are joined into
one string, the character classes are computed once, and tokens find their word and their span with
``np.searchsorted``. Only validation of the spans and the packing decision loop over examples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Union

import numpy as np

from masking.char_words import _anchor, _char_word_ids, _segment_starts
from masking.errors import MaskingError
from masking.spans import KIND_ENTITY, KIND_PHRASE, KIND_WORD, Span, resolve_overlaps

__all__ = ["AlignedUnits", "Segmenter", "align_spans", "encode_with_units"]

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


# ----------------------------------------------------------------------------- batched encoding


def _pack(lengths: np.ndarray, max_length: int) -> np.ndarray:
    """Next-fit packing of consecutive sequences into bins of at most ``max_length`` tokens.

    Returns the bin length array (the sequences keep their order, so bins are consecutive runs).
    """
    bins: list[int] = []
    current = 0
    for length in lengths.tolist():
        if current and current + length > max_length:
            bins.append(current)
            current = 0
        current += length
    if current:
        bins.append(current)
    return np.asarray(bins, dtype=np.int64)


def encode_with_units(
    tokenizer: Any,
    texts: Sequence[str],
    spans_per_text: Sequence[Sequence[Span]] | None,
    max_length: int,
    stride: int = 0,
    return_overflowing: bool = True,
    packing: bool = False,
    segmenter: Segmenter | None = None,
    overlaps: str = "resolve",
    empty: str = "skip",
    doc_ids: Sequence[Any] | None = None,
) -> dict[str, list]:
    """Tokenise a batch of texts and align their spans to masking units.

    - ``tokenizer``: a *fast* Hugging Face tokenizer (WordPiece, BPE, Unigram/SentencePiece ...).
    - ``spans_per_text``: one list of Span dicts per text (or None: no spans).
    - ``max_length``: tokens per sequence, special tokens included.
    - ``return_overflowing``: documents longer than ``max_length`` continue in further windows
      (overlapping by at most ``stride`` tokens) that end on unit boundaries, never inside an entity
      (``masking.windows``); False truncates them.
    - ``packing``: pack consecutive windows (each with its own special tokens) into sequences of at most
      ``max_length`` tokens; unit ids stay unique inside a packed sequence.
    - ``segmenter``: word segmenter for text without spaces (see ``Segmenter``).
    - ``overlaps``: "resolve" overlapping spans (entity > phrase, longer > shorter) or "error".
    - ``empty``: "skip" drops documents without any content token, "error" raises.
    - ``doc_ids``: optional ids carried to the output column ``doc_id`` (of the first document of a
      packed sequence).

    Returns columns (one row per output sequence): ``input_ids``, ``attention_mask``, ``unit_ids``,
    ``unit_kind``, ``entity_ids``, ``word_ids`` (lists of int), ``doc_index`` (int, index into
    ``texts`` of the first document of the row) and ``doc_id`` when ``doc_ids`` is given.
    Usable inside ``datasets.map(..., batched=True, remove_columns=...)``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise MaskingError(
            f"{type(tokenizer).__name__} is not a fast tokenizer",
            where="tokenizer",
            fix="load it with AutoTokenizer.from_pretrained(..., use_fast=True); offsets need "
            "a tokenizers-backed tokenizer",
        )
    if isinstance(texts, str):
        raise MaskingError("texts is a single string", where="texts", fix="pass a list of texts")
    texts = list(texts)
    if spans_per_text is None:
        spans_per_text = [[] for _ in texts]
    spans_per_text = list(spans_per_text)
    if len(spans_per_text) != len(texts):
        raise MaskingError(
            f"{len(texts)} texts but {len(spans_per_text)} span lists",
            where="spans_per_text",
            fix="give one list of spans per text ([] when there are none)",
        )
    if doc_ids is not None and len(doc_ids) != len(texts):
        raise MaskingError(
            f"{len(texts)} texts but {len(doc_ids)} doc_ids", where="doc_ids", fix="give one id per text"
        )
    if max_length < 2 or (return_overflowing and stride >= max_length - tokenizer.num_special_tokens_to_add()):
        raise MaskingError(
            f"max_length={max_length}, stride={stride} leave no room for new tokens per window",
            where="max_length",
            fix="use stride < max_length minus the special tokens",
        )
    if overlaps not in ("resolve", "error") or empty not in ("skip", "error"):
        raise MaskingError(
            f"overlaps={overlaps!r}, empty={empty!r}",
            where="encode_with_units",
            fix="overlaps is 'resolve' or 'error'; empty is 'skip' or 'error'",
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise MaskingError(
                f"text is {type(text).__name__}, not str",
                where=f"texts[{i}]",
                fix="give the document text as a string (use '' for an empty document)",
            )
    checked: Sequence[Sequence[Mapping[str, Any]]] = [
        _check_spans(spans, len(text), i, overlaps) for i, (text, spans) in enumerate(zip(texts, spans_per_text))
    ]
    window_doc = None  # window -> its document, when long documents were cut into windows
    if return_overflowing:  # cut on unit boundaries here (masking.windows), not inside an entity by the tokenizer
        from masking.windows import window_documents

        texts, checked, window_doc, segmenter = window_documents(
            tokenizer, texts, checked, max_length, stride, segmenter
        )
        stride = 0

    enc = tokenizer(
        texts,
        add_special_tokens=True,
        truncation=True,
        max_length=max_length,
        stride=stride if return_overflowing else 0,
        return_overflowing_tokens=return_overflowing,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    ids_rows = enc["input_ids"]
    n_rows = len(ids_rows)
    lengths = np.fromiter(map(len, ids_rows), dtype=np.int64, count=n_rows)
    total = int(lengths.sum())
    if return_overflowing and "overflow_to_sample_mapping" in enc:
        sample = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    else:
        sample = np.arange(n_rows, dtype=np.int64)
    flat_ids = np.fromiter(chain.from_iterable(ids_rows), dtype=np.int64, count=total)
    flat_special = np.fromiter(chain.from_iterable(enc["special_tokens_mask"]), dtype=bool, count=total)
    flat_off = np.fromiter(
        chain.from_iterable(chain.from_iterable(enc["offset_mapping"])), dtype=np.int64, count=2 * total
    ).reshape(-1, 2)

    # documents (windows) without content tokens
    content_per_row = (
        np.add.reduceat((~flat_special).astype(np.int64), np.maximum(np.concatenate(([0], np.cumsum(lengths)[:-1])), 0))
        if total
        else np.zeros(n_rows, dtype=np.int64)
    )
    content_per_row = np.where(lengths > 0, content_per_row, 0)
    keep_row = content_per_row > 0
    if not keep_row.all():
        if empty == "error":
            bad = int(sample[~keep_row][0])
            bad = bad if window_doc is None else window_doc[bad]
            raise MaskingError(
                "document has no tokens to mask (empty or only whitespace)",
                where=f"texts[{bad}]",
                fix="drop empty documents, or pass empty='skip'",
            )
        keep_tok = np.repeat(keep_row, lengths)
        flat_ids, flat_special, flat_off = flat_ids[keep_tok], flat_special[keep_tok], flat_off[keep_tok]
        lengths, sample = lengths[keep_row], sample[keep_row]

    joined, bases, seg = _join_texts(texts, segmenter)
    char_word, nonspace = _char_word_ids(joined, seg)
    s_start, s_end, s_kind, s_eid = _span_arrays(checked, bases)
    tok_base = np.repeat(bases[sample], lengths)
    seq_lengths = _pack(lengths, max_length) if packing else lengths
    if packing:
        first_of_bin = np.concatenate(([0], np.cumsum(_bin_counts(lengths, seq_lengths))[:-1])).astype(np.int64)
        row_sample = sample[first_of_bin] if sample.size else sample
    else:
        row_sample = sample
    text_len = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    tok_text_end = np.repeat(bases[sample] + text_len[sample], lengths)
    tok_start, tok_end = _anchor(flat_off[:, 0] + tok_base, flat_off[:, 1] + tok_base, nonspace, tok_text_end)
    word = char_word[np.clip(tok_start, 0, char_word.shape[0] - 1)]
    unit_ids, unit_kind, entity_ids, word_ids = _align_flat(
        tok_start=tok_start,
        tok_end=tok_end,
        special=flat_special,
        word=word,
        span_start=s_start,
        span_end=s_end,
        span_kind=s_kind,
        span_eid=s_eid,
        seq_lengths=seq_lengths,
    )

    bounds = np.concatenate(([0], np.cumsum(seq_lengths))).tolist()

    def rows(arr: np.ndarray) -> list[list[int]]:
        as_list = arr.tolist()
        return [as_list[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    out: dict[str, list] = {
        "input_ids": rows(flat_ids),
        "attention_mask": [[1] * int(n) for n in seq_lengths.tolist()],
        "unit_ids": rows(unit_ids),
        "unit_kind": rows(unit_kind),
        "entity_ids": rows(entity_ids),
        "word_ids": rows(word_ids),
        "doc_index": row_sample.tolist() if window_doc is None else [window_doc[i] for i in row_sample.tolist()],
    }
    if doc_ids is not None:
        out["doc_id"] = [doc_ids[i] for i in out["doc_index"]]
    return out


def _bin_counts(lengths: np.ndarray, bin_lengths: np.ndarray) -> np.ndarray:
    """How many consecutive sequences of ``lengths`` make up each bin of ``bin_lengths``."""
    ends = np.cumsum(lengths)
    bin_ends = np.cumsum(bin_lengths)
    idx = np.searchsorted(ends, bin_ends, side="left")
    return np.diff(np.concatenate(([-1], idx)))
