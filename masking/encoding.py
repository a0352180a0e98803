"""Batched encoding for masking: tokenise a batch of texts and align their spans to masking units.

:func:`encode_with_units` validates the batch, cuts long documents into windows on unit boundaries
(:mod:`masking.windows`), runs the fast tokenizer once, drops empty windows, optionally packs windows
into sequences, and aligns every token with the aligner of :mod:`masking.align` (whose docstring
defines units, kinds, entity ids and word ids). Only the packing decision loops over sequences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from masking.align import JoinedTexts, Segmenter, _check_spans
from masking.errors import MaskingError
from masking.spans import Span

__all__ = ["encode_with_units"]


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

    batch = JoinedTexts.of(texts, checked, segmenter)
    bases = batch.bases
    tok_base = np.repeat(bases[sample], lengths)
    seq_lengths = _pack(lengths, max_length) if packing else lengths
    if packing:
        first_of_bin = np.concatenate(([0], np.cumsum(_bin_counts(lengths, seq_lengths))[:-1])).astype(np.int64)
        row_sample = sample[first_of_bin] if sample.size else sample
    else:
        row_sample = sample
    text_len = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    tok_text_end = np.repeat(bases[sample] + text_len[sample], lengths)
    tok_start, tok_end = batch.anchor(flat_off[:, 0] + tok_base, flat_off[:, 1] + tok_base, tok_text_end)
    unit_ids, unit_kind, entity_ids, word_ids = batch.align(
        tok_start, tok_end, special=flat_special, seq_lengths=seq_lengths
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
