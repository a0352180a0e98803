"""Detectors over a segmenter's part-of-speech tags, for text without spaces (Chinese, ``jieba.posseg``).

- ``PosNERDetector`` (type ``pos_ner``): words whose tag names an entity class (jieba: ``nr`` person,
  ``ns`` place, ``nt`` organisation, ``nz`` other proper noun) become entity spans with a label
  (``PERSON``/``GPE``/``ORG``/``MISC`` by default), linked to the KG through the alias index like the
  spaCy NER detector. Adjacent entity words of one label are joined when the joined text is a KG alias.
- ``PosPhraseDetector`` (type ``pos_phrase``): runs of words whose tags match a pattern in NLTK's
  RegexpParser style (``<a|n.*>*<n>``: a tag is written ``<...>``, ``.`` inside it matches one tag
  letter) become phrase spans (``min_words`` .. ``max_words`` words).

Spans are character offsets into the original text (the tagger's words are found in the text in order).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from masking.detectors.base import AliasIndexLike
from masking.detectors.linking import MentionLinker
from masking.errors import MaskingError
from masking.spans import Span, make_span

#: jieba tag -> entity label (a key also covers the longer tags it starts: nr -> nrt, nrfg).
DEFAULT_ENTITY_TAGS: dict[str, str] = {"nr": "PERSON", "ns": "GPE", "nt": "ORG", "nz": "MISC"}
#: (adjective | distinguishing word | noun | verbal noun)* followed by a noun.
DEFAULT_PHRASE_PATTERN = "<a|b|n.*|vn|an>*<n|ng|nz|vn|an>"
TAGGERS: tuple[str, ...] = ("jieba",)


@dataclass(frozen=True)
class Word:
    start: int
    end: int
    text: str
    tag: str


Tagger = Callable[[str], Iterable[tuple[str, str]]]  # text -> (word, tag) pairs in order


def build_tagger(name: str = "jieba", user_dict: str | None = None) -> Tagger:
    """The ``(word, tag)`` tagger that ``name`` names; ``user_dict``: a jieba user dictionary
    (``word [frequency] [tag]`` per line) loaded into this tagger only."""
    if name != "jieba":
        raise MaskingError(
            f"unknown POS tagger {name!r}",
            where="detector segmenter",
            fix=f"use one of {', '.join(TAGGERS)} (POS tags come from jieba.posseg)",
        )
    try:
        import jieba
        import jieba.posseg as posseg
    except ImportError:
        raise MaskingError(
            "the POS detectors need the Python package 'jieba', which is not installed",
            where="detector segmenter",
            fix="pip install jieba  (or pip install 'kept[zh]')",
        ) from None
    jieba.setLogLevel(logging.WARNING)
    tokenizer = posseg.dt
    if user_dict:
        tokenizer = posseg.POSTokenizer(jieba.Tokenizer())
        try:
            tokenizer.load_userdict(user_dict)
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise MaskingError(
                f"cannot read the jieba user dictionary: {error}",
                where=user_dict,
                fix="give a UTF-8 file with 'word [frequency] [tag]' per line",
            ) from None
    return lambda text: ((pair.word, pair.flag) for pair in tokenizer.cut(text))


def tagged_words(text: str, tagger: Tagger) -> list[Word]:
    """The tagger's words of ``text`` with their character offsets (whitespace words dropped)."""
    words: list[Word] = []
    pos = 0
    for word, tag in tagger(text):
        found = text.find(word, pos) if word else -1
        if found < 0:
            continue  # a word the tagger normalised: skipped rather than misplaced
        pos = found + len(word)
        if word.strip():
            words.append(Word(found, pos, word, tag))
    return words


class Tagging:
    """A tagger with the tagged words of its most recent texts kept: ``pos_ner`` and ``pos_phrase`` run over
    the same batch one after the other, so the second one reads the first one's tags (jieba.posseg is
    the slow part: about 20k characters a second)."""

    def __init__(self, tagger: Tagger, size: int = 4096) -> None:
        self.tagger = tagger
        self.size = size
        self._recent: dict[str, list[Word]] = {}

    def words(self, text: str) -> list[Word]:
        hit = self._recent.get(text)
        if hit is None:
            hit = tagged_words(text, self.tagger)
            if len(self._recent) >= self.size:
                self._recent.pop(next(iter(self._recent)))
            self._recent[text] = hit
        return hit


_SHARED: dict[tuple[str, str | None], Tagging] = {}  # (tagger name, user dictionary) -> one per process


def clear_shared_tagging() -> None:
    """Forget the process's taggers and their recent tags (``masking.batch_annotator.clear_detector_cache``)."""
    _SHARED.clear()


def shared_tagging(name: str, user_dict: str | None = None) -> Tagging:
    """The process's one ``Tagging`` of a named tagger (detectors of one configuration share it)."""
    key = (name, user_dict)
    if key not in _SHARED:
        _SHARED[key] = Tagging(build_tagger(name, user_dict))
    return _SHARED[key]


class _PosDetector:
    """Shared plumbing: a tagger built lazily by name (the detector pickles without it)."""

    name: str

    def __init__(self, tagger: str | Tagger = "jieba", user_dict: str | None = None) -> None:
        self.tagger_name = tagger if isinstance(tagger, str) else None
        self.user_dict = user_dict
        self._tagging: Tagging | None = None if isinstance(tagger, str) else Tagging(tagger)
        if self.tagger_name is not None:
            self._tagging = shared_tagging(self.tagger_name, user_dict)  # fail early on a missing package

    @property
    def tagging(self) -> Tagging:
        if self._tagging is None:
            self._tagging = shared_tagging(self.tagger_name or "jieba", self.user_dict)
        return self._tagging

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.tagger_name is not None:
            state["_tagging"] = None
        return state

    def detect(self, texts: Sequence[str]) -> list[list[Span]]:
        return [self.spans(self.tagging.words(text), text) for text in texts]

    def spans(self, words: list[Word], text: str) -> list[Span]:  # overridden
        raise TypeError(f"{type(self).__name__} does not implement spans")


class PosNERDetector(_PosDetector):
    """Entity spans from entity POS tags; ``labels``: keep only these output labels (None: all)."""

    def __init__(
        self,
        *,
        alias_index: AliasIndexLike | None = None,
        tags: Mapping[str, str] | None = None,
        labels: Iterable[str] | None = None,
        min_prior: float = 0.0,
        merge: bool = True,
        tagger: str | Tagger = "jieba",
        user_dict: str | None = None,
        name: str = "pos_ner",
    ) -> None:
        self.name = name
        self.tags = dict(DEFAULT_ENTITY_TAGS if tags is None else tags)
        if not self.tags:
            raise MaskingError(
                "no entity tags",
                where=f"detector {name} field tags",
                fix="map tagger tags to labels, e.g. {nr: PERSON, ns: GPE, nt: ORG, nz: MISC}",
            )
        self._by_length = sorted(self.tags, key=len, reverse=True)
        self.labels = frozenset(labels) if labels is not None else None
        self.merge = merge
        self.linker = MentionLinker(alias_index, min_prior=min_prior)
        super().__init__(tagger, user_dict)

    def label_of(self, tag: str) -> str | None:
        """The label of ``tag``: its own entry, else the longest key it starts with (``nrfg`` -> ``nr``)."""
        if tag in self.tags:
            return self.tags[tag]
        return next((self.tags[key] for key in self._by_length if tag.startswith(key)), None)

    def spans(self, words: list[Word], text: str) -> list[Span]:
        spans: list[Span] = []
        i = 0
        while i < len(words):
            label = self.label_of(words[i].tag)
            if label is None or (self.labels is not None and label not in self.labels):
                i += 1
                continue
            end = i + 1  # a run of adjacent words with the same label
            while (
                end < len(words) and words[end].start == words[end - 1].end and self.label_of(words[end].tag) == label
            ):
                end += 1
            i = self._emit(words, i, end, label, text, spans)
        return spans

    def _emit(self, words: list[Word], i: int, end: int, label: str, text: str, spans: list[Span]) -> int:
        """Spans for the run ``words[i:end]``: the longest linked prefix joined (``merge``), else word by word."""
        while i < end:
            stop = i + 1
            entity_id, _ = self.linker.link(words[i].text)
            if self.merge:
                for j in range(end, i + 1, -1):
                    joined, _ = self.linker.link(text[words[i].start : words[j - 1].end])
                    if joined >= 0:
                        stop, entity_id = j, joined
                        break
            spans.append(make_span(words[i].start, words[stop - 1].end, "entity", label, entity_id, self.name))
            i = stop
        return end


class PosPhraseDetector(_PosDetector):
    """Phrase spans: maximal matches of a tag ``pattern`` of ``min_words`` to ``max_words`` words."""

    _TAG = re.compile(r"<([^<>]+)>")

    def __init__(
        self,
        *,
        pattern: str = DEFAULT_PHRASE_PATTERN,
        min_words: int = 2,
        max_words: int = 6,
        label: str = "NP",
        tagger: str | Tagger = "jieba",
        user_dict: str | None = None,
        name: str = "pos_phrase",
    ) -> None:
        self.name = name
        self.pattern = pattern
        self.regex = compile_tag_pattern(pattern, where=f"detector {name} field pattern")
        if not 1 <= min_words <= max_words:
            raise MaskingError(
                f"min_words {min_words} and max_words {max_words}",
                where=f"detector {name}",
                fix="use 1 <= min_words <= max_words",
            )
        self.min_words, self.max_words, self.label = min_words, max_words, label
        super().__init__(tagger, user_dict)

    def spans(self, words: list[Word], text: str) -> list[Span]:
        spans: list[Span] = []
        if not words:
            return spans
        tags = "".join(f"<{w.tag}>" for w in words)
        word_at = {}  # position of a word's "<" in ``tags`` -> word index
        position = 0
        for index, word in enumerate(words):
            word_at[position] = index
            position += len(word.tag) + 2
        word_at[position] = len(words)
        for match in self.regex.finditer(tags):
            first, last = word_at[match.start()], word_at[match.end()]  # words[first:last]
            # a phrase does not jump over text between words (punctuation the tagger left out, line breaks)
            pieces: list[int] = [first]
            for k in range(first + 1, last):
                if text[words[k - 1].end : words[k].start].strip() or "\n" in text[words[k - 1].end : words[k].start]:
                    pieces.append(k)
            pieces.append(last)
            for a, b in zip(pieces, pieces[1:]):
                a = max(a, b - self.max_words)  # the head noun ends the phrase: keep the last words
                if b - a >= self.min_words:
                    spans.append(make_span(words[a].start, words[b - 1].end, "phrase", self.label, -1, self.name))
        return spans


def compile_tag_pattern(pattern: str, where: str = "pattern") -> re.Pattern[str]:
    """``<a|n.*>*<n>`` -> a regex over the tag string ``<a><n>...`` (each ``<...>`` matches one whole tag)."""
    outside = re.sub(r"<[^<>]+>", "", pattern)
    if not PosPhraseDetector._TAG.search(pattern) or not re.fullmatch(r"[()|*+?{},:\d\s]*", outside):
        raise MaskingError(
            f"tag pattern {pattern!r} is not made of <tag> units",
            where=where,
            fix=f"write tags in angle brackets with regex operators between them, e.g. {DEFAULT_PHRASE_PATTERN}",
        )
    translated = PosPhraseDetector._TAG.sub(
        lambda m: "(?:<(?:" + m.group(1).replace(".", "[^<>]") + ")>)", pattern.replace(" ", "")
    )
    try:
        return re.compile(translated)
    except re.error as error:
        raise MaskingError(
            f"tag pattern {pattern!r} is not a valid regular expression ({error})",
            where=where,
            fix=f"e.g. {DEFAULT_PHRASE_PATTERN}",
        ) from None
