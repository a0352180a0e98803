"""Sentence-order pairs (ALBERT's SOP objective) with masking units, for any fast tokenizer.

A document is tokenised once (no special tokens) and aligned to its units (:mod:`masking.align`);
it is then cut, left to right, into chunks of at most ``max_length`` minus the pair's special tokens.
A chunk ends on a sentence boundary when one lies in its second half, else on a unit boundary, so an
entity, phrase or word is never split between chunks. Each chunk is split once more, at a random
sentence boundary inside it (a unit boundary when it has none), into two consecutive segments
A and B, and the pair is written in order (``sentence_order_label`` 0) or swapped (B before A,
label 1) with probability 0.5. The generator of a document is seeded from ``seed`` and its id, so
the pairs do not depend on batching or on the number of processes.

The pair goes through the tokenizer's own pair template (``[CLS] A [SEP] B [SEP]`` for BERT
WordPiece); ``token_type_ids`` are 0 up to the end of the first segment's special tokens and 1
after (BERT's convention), derived from the special-token layout so that tokenizers whose template
sets no segment ids (RoBERTa-like) get them too. The unit columns are aligned for the pair as for
a single text: unit and word ids are numbered inside the row (special tokens -1), ``entity_ids``
sits on the first token of a linked mention.

A chunk of a single unit cannot be split and gives no pair (a document of one word, say).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from masking.align import JoinedTexts, Segmenter, _check_spans
from masking.errors import MaskingError
from masking.spans import Span

__all__ = ["PAIR_COLUMNS", "SENTENCE_END", "encode_sentence_pairs", "plan_pairs"]

#: Columns of a pair row (one row per pair); ``sentence_order_label`` is one int per row.
PAIR_COLUMNS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "unit_ids",
    "unit_kind",
    "entity_ids",
    "word_ids",
    "sentence_order_label",
)
#: A token that ends with one of these characters ends a sentence (when the next token starts a unit).
SENTENCE_END = ".!?;…。！？；"
_SENTENCE_END_CODES = np.array([ord(c) for c in SENTENCE_END], dtype=np.uint32)


def _document_rng(seed: int, key: Any) -> np.random.Generator:
    """A generator per document, from (seed, the document's id): independent of batching."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _last_at_most(cuts: np.ndarray, low: int, high: int) -> int | None:
    """The largest cut in (low, high], or None."""
    k = int(np.searchsorted(cuts, high, side="right")) - 1
    return int(cuts[k]) if k >= 0 and cuts[k] > low else None


def _inside(cuts: np.ndarray, low: int, high: int) -> np.ndarray:
    """The cuts strictly inside (low, high)."""
    return cuts[np.searchsorted(cuts, low, side="right") : np.searchsorted(cuts, high, side="left")]


def plan_pairs(
    n_tokens: int, unit_cuts: np.ndarray, sentence_cuts: np.ndarray, budget: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """Pairs of one document as token ranges ``(start, split, end, label)``: A = [start, split),
    B = [split, end), label 1 = written swapped. ``unit_cuts``/``sentence_cuts`` are the sorted token
    indices where a unit / a sentence starts (0 excluded); ``budget`` content tokens per pair."""
    pairs: list[tuple[int, int, int, int]] = []
    start = 0
    while start < n_tokens:
        limit = start + budget
        if limit >= n_tokens:
            end = n_tokens
        else:
            sentence = _last_at_most(sentence_cuts, start, limit)
            unit = _last_at_most(unit_cuts, start, limit)
            if sentence is not None and sentence - start >= budget // 2:
                end = sentence
            else:
                end = unit if unit is not None else limit  # a single unit longer than the budget: cut it
        candidates = _inside(sentence_cuts, start, end)
        if candidates.size == 0:
            candidates = _inside(unit_cuts, start, end)
        if candidates.size:
            split = int(candidates[rng.integers(candidates.size)])
            pairs.append((start, split, end, int(rng.random() < 0.5)))
        start = end
    return pairs


def _token_types(special: np.ndarray, row_starts: np.ndarray) -> np.ndarray:
    """[T] segment ids of pair rows laid end to end: 1 from the first special token that follows
    content (the end of segment A) onwards, exclusive of that token; 0 before."""
    n = special.shape[0]
    prev_content = np.zeros(n, dtype=bool)
    prev_content[1:] = ~special[:-1]
    prev_content[row_starts] = False
    closes_a = special & prev_content  # the first special token after A's content, and after B's
    count: np.ndarray = np.cumsum(closes_a) - closes_a  # closings strictly before each token (global)
    per_row: np.ndarray = np.repeat(count[row_starts], np.diff(np.append(row_starts, n)))
    return np.minimum(count - per_row, 1).astype(np.int64)


def encode_sentence_pairs(
    tokenizer: Any,
    texts: Sequence[str],
    spans_per_text: Sequence[Sequence[Span]] | None,
    max_length: int,
    seed: int = 0,
    segmenter: Segmenter | None = None,
    doc_ids: Sequence[Any] | None = None,
    overlaps: str = "resolve",
) -> dict[str, list]:
    """Sentence-order pairs of a batch of documents, with their masking units (see the module doc).

    Returns the :data:`PAIR_COLUMNS` (lists per row), ``doc_index`` (index into ``texts``) and
    ``doc_id`` when ``doc_ids`` is given. Usable inside ``datasets.map(..., batched=True)``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise MaskingError(
            f"{type(tokenizer).__name__} is not a fast tokenizer",
            where="tokenizer",
            fix="load it with AutoTokenizer.from_pretrained(..., use_fast=True)",
        )
    texts = list(texts)
    spans_per_text = list(spans_per_text) if spans_per_text is not None else [[] for _ in texts]
    if len(spans_per_text) != len(texts) or (doc_ids is not None and len(doc_ids) != len(texts)):
        raise MaskingError(
            f"{len(texts)} texts but {len(spans_per_text)} span lists"
            + ("" if doc_ids is None else f" and {len(doc_ids)} doc_ids"),
            where="spans_per_text",
            fix="give one list of spans (and one id) per text",
        )
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if budget < 2:
        raise MaskingError(
            f"max_length {max_length} leaves no room for two segments",
            where="max_length",
            fix="use a longer max_length",
        )
    checked = [_check_spans(s, len(t), i, overlaps) for i, (t, s) in enumerate(zip(texts, spans_per_text))]
    batch = JoinedTexts.of(texts, checked, segmenter)
    bases = batch.bases
    text_len = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))

    # 1. every document once, without special tokens: its units tell where a cut may fall
    docs = tokenizer(
        texts,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    doc_len = np.fromiter(map(len, docs["input_ids"]), dtype=np.int64, count=len(texts))
    off = np.asarray([o for row in docs["offset_mapping"] for o in row], dtype=np.int64).reshape(-1, 2)  # [T, 2]
    doc_of_tok = np.repeat(np.arange(len(texts)), doc_len)
    start, end = batch.anchor(
        off[:, 0] + bases[doc_of_tok], off[:, 1] + bases[doc_of_tok], (bases + text_len)[doc_of_tok]
    )
    unit_ids, _, _, _ = batch.align(start, end, special=np.zeros(len(start), dtype=bool), seq_lengths=doc_len)
    codepoints = np.frombuffer(batch.joined.encode("utf-32-le"), dtype=np.uint32)
    ends_sentence = np.isin(codepoints[np.maximum(off[:, 1] + bases[doc_of_tok] - 1, 0)], _SENTENCE_END_CODES)

    # 2. plan the pairs of every document (character ranges of the segment written first and second)
    rows: list[
        tuple[int, int, int, int, int, int]
    ] = []  # (doc, first_start, first_end, second_start, second_end, label)
    first = np.concatenate(([0], np.cumsum(doc_len)[:-1])).astype(np.int64)
    for d in range(len(texts)):
        lo, n = int(first[d]), int(doc_len[d])
        if n < 2:
            continue
        local_units = unit_ids[lo : lo + n]
        unit_cuts = np.flatnonzero(local_units[1:] != local_units[:-1]) + 1  # [cuts]
        sentence_cuts = unit_cuts[ends_sentence[lo + unit_cuts - 1]]
        rng = _document_rng(seed, doc_ids[d] if doc_ids is not None else d)
        for a, split, b, label in plan_pairs(n, unit_cuts, sentence_cuts, budget, rng):
            seg_a = (int(off[lo + a, 0]), int(off[lo + split - 1, 1]))
            seg_b = (int(off[lo + split, 0]), int(off[lo + b - 1, 1]))
            one, two = (seg_b, seg_a) if label else (seg_a, seg_b)
            rows.append((d, *one, *two, label))
    out: dict[str, list] = {name: [] for name in PAIR_COLUMNS}
    out["doc_index"] = []
    if doc_ids is not None:
        out["doc_id"] = []
    if not rows:
        return out

    # 3. the pairs through the tokenizer's pair template, then aligned like single texts
    plan = np.asarray(rows, dtype=np.int64)  # [P, 6]
    enc = tokenizer(
        [texts[d][s:e] for d, s, e in plan[:, :3].tolist()],
        [texts[d][s:e] for d, s, e in plan[:, [0, 3, 4]].tolist()],
        add_special_tokens=True,
        truncation="longest_first",
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    lengths = np.fromiter(map(len, enc["input_ids"]), dtype=np.int64, count=len(rows))
    row_starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    special = np.fromiter((s for row in enc["special_tokens_mask"] for s in row), dtype=bool, count=int(lengths.sum()))
    pair_off = np.asarray([o for row in enc["offset_mapping"] for o in row], dtype=np.int64).reshape(-1, 2)  # [T, 2]
    types = _token_types(special, row_starts)  # [T]
    if not (np.add.reduceat(types, row_starts) > 0).all():
        raise MaskingError(
            f"{type(tokenizer).__name__} writes no separator between the two segments of a pair",
            where="tokenizer",
            fix="give the tokenizer a pair template ([CLS] $A [SEP] $B [SEP], "
            "tokenizers.processors.TemplateProcessing)",
        )
    row_of_tok = np.repeat(np.arange(len(rows)), lengths)
    doc_base = bases[plan[row_of_tok, 0]]
    seg_start = np.where(types == 0, plan[row_of_tok, 1], plan[row_of_tok, 3])  # where the token's segment begins
    seg_end = np.where(types == 0, plan[row_of_tok, 2], plan[row_of_tok, 4])
    tok_start, tok_end = batch.anchor(
        pair_off[:, 0] + doc_base + seg_start, pair_off[:, 1] + doc_base + seg_start, doc_base + seg_end
    )
    aligned = batch.align(tok_start, tok_end, special=special, seq_lengths=lengths)
    bounds = np.append(row_starts, int(lengths.sum())).tolist()

    def split_rows(flat: np.ndarray) -> list[list[int]]:
        values = flat.tolist()
        return [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    out["input_ids"] = [list(ids) for ids in enc["input_ids"]]
    out["attention_mask"] = [[1] * int(n) for n in lengths.tolist()]
    out["token_type_ids"] = split_rows(types)
    for name, column in zip(("unit_ids", "unit_kind", "entity_ids", "word_ids"), aligned):
        out[name] = split_rows(column)
    out["sentence_order_label"] = plan[:, 5].tolist()
    out["doc_index"] = plan[:, 0].tolist()
    if doc_ids is not None:
        out["doc_id"] = [doc_ids[d] for d in out["doc_index"]]
    return out
