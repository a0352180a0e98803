"""spaCy-based detectors: named entities (linked to the KG) and noun chunks (phrases).

Both read ``Doc`` objects, so the annotator can run one ``nlp.pipe`` for all spaCy detectors that share a
pipeline (``run_doc_detectors``). Texts longer than ``nlp.max_length`` are split at line breaks (else at
whitespace) into pieces below the limit and the spans shifted back, instead of raising spaCy's E088.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from masking.detectors.base import AliasIndexLike
from masking.detectors.linking import MentionLinker
from masking.detectors.spacy_model import DEFAULT_MODEL, load_spacy_pipeline
from masking.errors import MaskingError
from masking.spans import Span, make_span

# spaCy labels that are values, not things: not masked as entities unless asked for.
_LEADING = frozenset({"the", "a", "an"})
_TRAILING = frozenset({"'s", "’s", "'", "’"})
NUMERIC_LABELS: frozenset[str] = frozenset({"CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "MONEY", "DATE", "TIME"})


def split_long_text(text: str, max_length: int) -> list[tuple[int, str]]:
    """``(offset, piece)`` pairs covering ``text``, each piece shorter than ``max_length`` characters."""
    if len(text) < max_length:
        return [(0, text)]
    limit = max(1, max_length - 1)
    pieces: list[tuple[int, str]] = []
    start = 0
    while len(text) - start > limit:
        window_end = start + limit
        cut = text.rfind("\n", start + limit // 2, window_end)
        if cut < 0:
            cut = max(text.rfind(" ", start + limit // 2, window_end), text.rfind("\t", start + limit // 2, window_end))
        cut = window_end if cut < 0 else cut + 1
        pieces.append((start, text[start:cut]))
        start = cut
    pieces.append((start, text[start:]))
    return pieces


def pipe_with_offsets(nlp: Any, texts: Sequence[str], batch_size: int = 64) -> Iterator[list[tuple[int, Any]]]:
    """For each text, the list of ``(char offset, Doc)`` pieces (one piece unless the text is too long)."""
    pieces: list[tuple[int, int, str]] = []  # (text index, offset, piece)
    for index, text in enumerate(texts):
        for offset, piece in split_long_text(text, nlp.max_length):
            pieces.append((index, offset, piece))
    docs = nlp.pipe((piece for _, _, piece in pieces), batch_size=batch_size)
    current: list[tuple[int, Any]] = []
    current_index = 0
    for (index, offset, _), doc in zip(pieces, docs):
        while index != current_index:
            yield current
            current, current_index = [], current_index + 1
        current.append((offset, doc))
    while current_index < len(texts):
        yield current
        current, current_index = [], current_index + 1


class _SpacyDetector:
    """Shared plumbing: own pipeline (loaded lazily by name) or one handed in."""

    component: str = ""
    name: str  # set by each detector

    def __init__(
        self, nlp: Any = None, *, model: str = DEFAULT_MODEL, batch_size: int = 64, max_length: int | None = None
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.max_length = max_length
        self._nlp = nlp
        if nlp is not None:
            self._check(nlp)

    @property
    def nlp(self) -> Any:
        if self._nlp is None:
            self._nlp = load_spacy_pipeline(self.model, [self.component], max_length=self.max_length)
        return self._nlp

    def _check(self, nlp: Any) -> None:
        if self.component not in nlp.pipe_names:
            raise MaskingError(
                f"the spaCy pipeline has no active {self.component!r} component (active: {nlp.pipe_names})",
                where=f"detector {self.name}",
                fix=f"load a pipeline with {self.component!r} enabled (e.g. en_core_web_sm)"
                + (
                    "; pipelines without a parser can use the npmi phrase detector"
                    if self.component == "parser"
                    else ""
                ),
            )

    def spans_from_doc(self, doc: Any) -> list[Span]:  # overridden
        raise TypeError(f"{type(self).__name__} does not implement spans_from_doc")

    def detect(self, texts: Sequence[str]) -> list[list[Span]]:
        return run_doc_detectors([self], texts, self.batch_size)


class SpacyNERDetector(_SpacyDetector):
    """Named entities from a spaCy pipeline; linked to the KG through the alias index where possible.

    ``labels``: keep only these spaCy labels (None: all but ``exclude_labels``, default the numeric ones).
    """

    name = "ner"
    component = "ner"

    def __init__(
        self,
        nlp: Any = None,
        *,
        alias_index: AliasIndexLike | None = None,
        model: str = DEFAULT_MODEL,
        labels: Iterable[str] | None = None,
        exclude_labels: Iterable[str] = NUMERIC_LABELS,
        batch_size: int = 64,
        min_prior: float = 0.0,
        max_length: int | None = None,
        trim: bool = True,
        name: str = "ner",
    ) -> None:
        self.name = name
        self.trim = trim
        super().__init__(nlp, model=model, batch_size=batch_size, max_length=max_length)
        self.labels = frozenset(labels) if labels is not None else None
        self.exclude_labels = frozenset(exclude_labels)
        self.linker = MentionLinker(alias_index, min_prior=min_prior)

    def spans_from_doc(self, doc: Any) -> list[Span]:
        spans: list[Span] = []
        text = doc.text  # once: spaCy joins every token on each access (per entity it was quadratic)
        for ent in doc.ents:
            label = ent.label_
            if (self.labels is not None and label not in self.labels) or label in self.exclude_labels:
                continue
            start, end = ent.start, ent.end
            if self.trim:  # "the Eiffel Tower" -> "Eiffel Tower", "Obama's" -> "Obama" (as KG labels are written)
                while start < end - 1 and doc[start].lower_ in _LEADING:
                    start += 1
                while end - 1 > start and doc[end - 1].lower_ in _TRAILING:
                    end -= 1
            first, last = doc[start], doc[end - 1]
            start_char, end_char = first.idx, last.idx + len(last.text)
            entity_id, _ = self.linker.link(text[start_char:end_char])
            spans.append(make_span(start_char, end_char, "entity", label, entity_id, self.name))
        return spans


class NounChunkDetector(_SpacyDetector):
    """Noun chunks (base noun phrases) as ``phrase`` spans; needs a dependency parser.

    ``min_tokens``: shorter chunks are skipped (single words are already word units when masking);
    leading determiners/pronouns are trimmed (``the old city`` -> ``old city``) unless ``trim=False``.
    """

    name = "noun_chunk"
    component = "parser"
    _TRIM_POS = frozenset({"DET", "PRON", "PUNCT"})

    def __init__(
        self,
        nlp: Any = None,
        *,
        model: str = DEFAULT_MODEL,
        min_tokens: int = 2,
        trim: bool = True,
        batch_size: int = 64,
        max_length: int | None = None,
        name: str = "noun_chunk",
    ) -> None:
        self.name = name
        super().__init__(nlp, model=model, batch_size=batch_size, max_length=max_length)
        self.min_tokens = min_tokens
        self.trim = trim

    def spans_from_doc(self, doc: Any) -> list[Span]:
        if len(doc) and not doc.has_annotation("DEP"):
            raise MaskingError(
                "the spaCy pipeline did not parse the text (no dependency annotation)",
                where=f"detector {self.name}",
                fix="enable the parser (noun chunks need tagger, attribute_ruler and parser)",
            )
        spans: list[Span] = []
        for chunk in doc.noun_chunks:
            start, end = chunk.start, chunk.end
            if self.trim:
                while start < end and doc[start].pos_ in self._TRIM_POS:
                    start += 1
            if end - start < self.min_tokens:
                continue
            spans.append(
                make_span(doc[start].idx, doc[end - 1].idx + len(doc[end - 1].text), "phrase", "NP", -1, self.name)
            )
        return spans


def run_doc_detectors(detectors: Sequence[Any], texts: Sequence[str], batch_size: int = 64) -> list[list[Span]]:
    """Run several Doc detectors that share one pipeline with a single ``nlp.pipe`` pass; spans concatenated."""
    if not detectors:
        return [[] for _ in texts]
    nlp = detectors[0].nlp
    results: list[list[Span]] = []
    for pieces in pipe_with_offsets(nlp, texts, batch_size):
        spans: list[Span] = []
        for offset, doc in pieces:
            for detector in detectors:
                for span in detector.spans_from_doc(doc):
                    if offset:
                        span["start"] += offset
                        span["end"] += offset
                    spans.append(span)
        results.append(spans)
    return results
