"""Statistical phrases for pipelines or languages without a parser: collocations scored by NPMI.

``fit`` counts words and adjacent word pairs (not across punctuation) over a corpus; a pair is a
collocation when it occurs at least ``min_count`` times and its normalised pointwise mutual information
``NPMI(x, y) = ln(p(xy) / (p(x) p(y))) / -ln p(xy)`` reaches ``threshold`` (in [-1, 1]). ``detect`` marks
maximal runs of collocated pairs (up to ``max_tokens`` words) that neither start nor end with a stopword.
Words are whitespace-separated (CJK characters one word each), or a ``segmenter``'s words for text
without spaces (``segmenter: jieba``: Chinese collocations of words, not of characters).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from masking.detectors.gazetteer_table import _CJK, ENGLISH_STOPWORDS
from masking.errors import MaskingError
from masking.spans import Span, make_span

# words, or punctuation (which breaks a run); CJK characters are single words
_WORD_OR_BREAK = re.compile(rf"([{_CJK}]|[^\W{_CJK}]+)|[^\w\s]+")


_PUNCTUATION = re.compile(r"[^\w\s]+")
#: Chinese function words (segmented text): a phrase neither starts nor ends with one (的综合性大学 -> 综合性大学).
CHINESE_STOPWORDS: frozenset[str] = frozenset(
    "的 了 是 在 和 与 及 或 也 都 就 而 被 把 对 于 从 向 为 以 之 其 这 那 着 过 地 得 所 等 很 又 还 并 但 一 个 有".split()
)


class _Word:
    """A word found by a segmenter, with the ``re.Match`` methods the detector reads."""

    __slots__ = ("_start", "_end", "_text")

    def __init__(self, start: int, end: int, text: str) -> None:
        self._start, self._end, self._text = start, end, text

    def group(self, _: int) -> str:
        return self._text

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end


def _segmented(text: str, segmenter: Any) -> Iterable[tuple[_Word, bool]]:
    """``(word, is_break)`` in text order from a segmenter (words, or (start, end) offsets)."""
    pos = 0
    for word in segmenter(text):
        if isinstance(word, str):
            found = text.find(word, pos) if word.strip() else -1
            if found < 0:
                continue
            start, end = found, found + len(word)
        else:
            start, end = int(word[0]), int(word[1])
        pos = max(pos, end)
        piece = text[start:end]
        if piece.strip():
            yield _Word(start, end, piece), bool(_PUNCTUATION.fullmatch(piece.strip()))


def _word_runs(text: str, segmenter: Any = None) -> Iterable[list[Any]]:
    run: list[Any] = []
    items: Iterable[tuple[Any, bool]] = (
        ((m, m.group(1) is None) for m in _WORD_OR_BREAK.finditer(text))
        if segmenter is None
        else _segmented(text, segmenter)
    )
    for match, is_break in items:
        if is_break:
            if len(run) > 1:
                yield run
            run = []
        else:
            run.append(match)
    if len(run) > 1:
        yield run


class NPMIPhraseDetector:
    """Phrases learned from the corpus by NPMI; call ``fit(texts)`` (or ``load``) before ``detect``."""

    def __init__(
        self,
        *,
        min_count: int = 5,
        threshold: float = 0.5,
        max_tokens: int = 4,
        stopwords: Iterable[str] = ENGLISH_STOPWORDS | CHINESE_STOPWORDS,
        lowercase: bool = True,
        segmenter: Any = None,
        name: str = "npmi",
    ) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise MaskingError(
                f"NPMI threshold {threshold} is outside [-1, 1]",
                where=f"detector {name}",
                fix="use a threshold such as 0.5",
            )
        self.name = name
        self.min_count = min_count
        self.threshold = threshold
        self.max_tokens = max_tokens
        self.stopwords = frozenset(w.lower() for w in stopwords)
        self.lowercase = lowercase
        self.segmenter = segmenter  # masking.segmenters: a name's NamedSegmenter pickles as its name
        self.scores: dict[tuple[str, str], float] = {}
        self.fitted = False

    def _norm(self, word: str) -> str:
        return word.lower() if self.lowercase else word

    def fit(self, texts: Iterable[str]) -> NPMIPhraseDetector:
        unigrams: Counter[str] = Counter()
        bigrams: Counter[tuple[str, str]] = Counter()
        total_words = 0
        for text in texts:
            for run in _word_runs(text, self.segmenter):
                words = [self._norm(m.group(1)) for m in run]
                unigrams.update(words)
                bigrams.update(zip(words, words[1:]))
                total_words += len(words)
        self.scores = {}
        # one denominator for words and pairs keeps NPMI in [-1, 1] (count(xy) <= min(count(x), count(y)))
        for (x, y), count in bigrams.items():
            if count < self.min_count:
                continue
            p_xy = count / total_words
            if p_xy >= 1.0:
                continue
            pmi = math.log(p_xy / ((unigrams[x] / total_words) * (unigrams[y] / total_words)))
            npmi = pmi / -math.log(p_xy)
            if npmi >= self.threshold:
                self.scores[(x, y)] = npmi
        self.fitted = True
        return self

    def detect(self, texts: Sequence[str]) -> list[list[Span]]:
        if not self.fitted:
            raise MaskingError(
                "the NPMI phrase detector has not been fitted",
                where=f"detector {self.name}",
                fix="call fit(texts) on the corpus first (masking.annotate does this) or load() a saved phrase table",
            )
        results: list[list[Span]] = []
        scores, stop = self.scores, self.stopwords
        for text in texts:
            spans: list[Span] = []
            for run in _word_runs(text, self.segmenter):
                words = [self._norm(m.group(1)) for m in run]
                i = 0
                while i < len(words) - 1:
                    j = i
                    while j < len(words) - 1 and j - i + 1 < self.max_tokens and (words[j], words[j + 1]) in scores:
                        j += 1
                    # trim stopwords at both ends
                    a, b = i, j
                    while a < b and words[a] in stop:
                        a += 1
                    while b > a and words[b] in stop:
                        b -= 1
                    if b > a:
                        spans.append(make_span(run[a].start(), run[b].end(), "phrase", "COLLOCATION", -1, self.name))
                    i = j + 1 if j > i else i + 1
            results.append(spans)
        return results

    def save(self, path: str | Path) -> None:
        path = Path(path)
        payload = {
            "min_count": self.min_count,
            "threshold": self.threshold,
            "max_tokens": self.max_tokens,
            "lowercase": self.lowercase,
            "segmenter": getattr(self.segmenter, "name", None),
            "pairs": [[x, y, s] for (x, y), s in sorted(self.scores.items())],
        }
        from kg._io import atomic_write_json

        atomic_write_json(path, payload, error=MaskingError, indent=None, ensure_ascii=True)  # one compact line

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> NPMIPhraseDetector:
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise MaskingError(
                f"cannot read NPMI phrase table: {error}", where=path, fix="save one with NPMIPhraseDetector.save"
            ) from None
        if "segmenter" not in kwargs and payload.get("segmenter"):  # the words the table was fitted on
            from masking.segmenters import build_segmenter

            kwargs["segmenter"] = build_segmenter(payload["segmenter"])
        detector = cls(
            min_count=payload["min_count"],
            threshold=payload["threshold"],
            max_tokens=payload["max_tokens"],
            lowercase=payload["lowercase"],
            **kwargs,
        )
        detector.scores = {(x, y): float(s) for x, y, s in payload["pairs"]}
        detector.fitted = True
        return detector
