"""Characters -> words for the aligner, in numpy over a whole batch: character classes (space, a CJK
character that is a word on its own, other), the word of every character (whitespace words, or a
segmenter's words), and the first non-space character a token covers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from masking.errors import MaskingError

_SPACE_TABLE = np.array([chr(i).isspace() for i in range(0x3001)], dtype=bool)
# Characters that form a word on their own (text without spaces): CJK ideographs as in BERT's
# BasicTokenizer, plus CJK punctuation and full-width forms.
_SPLIT_RANGES = np.array(
    [
        (0x3000, 0x303F),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xF900, 0xFAFF),
        (0xFF00, 0xFFEF),
        (0x20000, 0x2A6DF),
        (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF),
        (0x2F800, 0x2FA1F),
    ],
    dtype=np.int64,
)


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _build_bmp_table() -> np.ndarray:
    """Character classes of the Basic Multilingual Plane: bit 1 whitespace, bit 2 splits on its own."""
    table = np.zeros(0x10000, dtype=np.uint8)
    table[: _SPACE_TABLE.shape[0]] = _SPACE_TABLE.astype(np.uint8)
    for lo, hi in _SPLIT_RANGES.tolist():
        if lo < 0x10000:
            table[lo : min(hi, 0xFFFF) + 1] |= 2
    return table


_BMP_TABLE = _build_bmp_table()


def _char_classes(cp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is_space, is_split_char) for code points (one table lookup; astral planes by range)."""
    classes = _BMP_TABLE[np.minimum(cp, 0xFFFF)]
    astral = np.flatnonzero(cp > 0xFFFF)
    if astral.size:
        ranges = _SPLIT_RANGES[_SPLIT_RANGES[:, 0] >= 0x10000]
        high = cp[astral].astype(np.int64)
        idx = np.searchsorted(ranges[:, 0], high, side="right") - 1
        split = (idx >= 0) & (high <= ranges[np.maximum(idx, 0), 1])
        classes[astral] = np.where(split, 2, 0)
    return (classes & 1).astype(bool), (classes & 2).astype(bool)


def _segment_starts(text: str, words: Sequence[str | tuple[int, int]], index: int) -> list[int]:
    starts: list[int] = []
    pos = 0
    for word in words:
        if isinstance(word, str):
            if not word.strip():
                pos += len(word) if text.startswith(word, pos) else 0
                continue
            found = text.find(word, pos)
            if found < 0:
                raise MaskingError(
                    f"segmenter word {word!r} not found in the text after character {pos}",
                    where=f"texts[{index}]",
                    fix="the segmenter must return the words of the text in order (or (start, end) offsets)",
                )
            starts.append(found)
            pos = found + len(word)
        else:
            start, end = int(word[0]), int(word[1])
            if not 0 <= start < end <= len(text):
                raise MaskingError(
                    f"segmenter offsets ({start}, {end}) outside the text of length {len(text)}",
                    where=f"texts[{index}]",
                    fix="return offsets with 0 <= start < end <= len(text)",
                )
            starts.append(start)
    return starts


def _char_word_ids(joined: str, segment_starts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Word index (global over ``joined``) of every character; spaces belong to the NEXT word.

    A token that starts on a space (SentencePiece ``▁word``, or a lone ``▁``) therefore belongs to the
    word that follows, which is where SentencePiece/Metaspace puts it. Also returns the positions of
    the non-space characters (sorted), used to anchor whitespace-only tokens on the next character.
    """
    cp = _codepoints(joined)
    if cp.size == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    space, split = _char_classes(cp)
    prev_space = np.empty_like(space)
    prev_space[0] = True
    prev_space[1:] = space[:-1]
    if segment_starts is None:
        prev_split = np.empty_like(split)
        prev_split[0] = False
        prev_split[1:] = split[:-1]
        boundary = prev_space | split | prev_split
    else:
        boundary = prev_space.copy()
        boundary[segment_starts] = True
    start = ~space & boundary
    cum = np.cumsum(start, dtype=np.int64)
    return np.where(space, cum, cum - 1), np.flatnonzero(~space)


def _anchor(
    tok_start: np.ndarray, tok_end: np.ndarray, nonspace: np.ndarray, text_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move token starts off leading whitespace (``▁``/``Ġ`` pieces); a whitespace-only token is
    anchored on the next character of its own text so it joins the unit that follows (a trailing one
    keeps its place)."""
    if nonspace.size == 0:
        return tok_start, np.maximum(tok_end, tok_start + 1)
    k = np.minimum(np.searchsorted(nonspace, tok_start, side="left"), nonspace.shape[0] - 1)
    nxt = nonspace[k]
    start = np.where((nxt >= tok_start) & (nxt < text_end), nxt, tok_start)
    start = np.maximum(tok_start, start)
    return start, np.maximum(tok_end, start + 1)
