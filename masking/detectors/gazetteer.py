"""KG gazetteer: longest-match of the KG's labels and aliases, linked through the alias index.

Two backends over the same compiled alias table (``GazetteerTable``, :mod:`masking.detectors.gazetteer_table`):

- ``fast`` (default): a regex tokeniser (words, single CJK characters, single punctuation marks) and a
  greedy leftmost-longest match over token tuples in pure Python; offsets come from C-level
  ``re.findall`` + ``itertools.accumulate``, so the per-token Python work is one dict probe.
- ``spacy``: the ``kept_gazetteer`` spaCy component (``@Language.factory``,
  :mod:`masking.detectors.gazetteer_spacy`) with a ``PhraseMatcher``
  (attr ``LOWER`` when case-insensitive) on any pipeline; matches land on ``doc._.kept_spans`` (Span
  records) and ``doc.spans["kept_gazetteer"]`` (with ``span._.kept_entity_id``), spaCy style.

Case: exact, case-folded, or ``"auto"`` (the detector's default): folded when at least
``AUTO_FOLD_LOWERCASE_SHARE`` of the KG's cased aliases are written all in lower case (a KG of
lower-case labels against cased text), exact otherwise (``US`` must not match ``us``). Folded, an
alias written exactly as in the text wins over one that only differs in case (``Apple`` vs ``apple``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from masking.detectors.base import AliasIndexLike
from masking.detectors.gazetteer_spacy import register_spacy_components
from masking.detectors.gazetteer_table import (
    ENGLISH_STOPWORDS,
    GazetteerTable,
    entity_label,
    match_text,
    require_alias_index,
)
from masking.errors import MaskingError
from masking.spans import Span

_LETTER_RUN = re.compile(r"[^\W\d_]{2,}")  # words of two or more letters (not ids such as Q42)

logger = logging.getLogger(__name__)

#: ``case_insensitive="auto"`` folds case when at least this share of the KG's cased aliases is lower-case.
AUTO_FOLD_LOWERCASE_SHARE = 0.9
CaseSetting = Union[bool, Literal["auto"]]


def lowercase_alias_share(alias_index: AliasIndexLike) -> tuple[float | None, int]:
    """``(share of the cased aliases written all in lower case, number of cased aliases)``.

    An alias counts when one of its words of two or more letters has case (ids such as ``Q42``, numbers
    and CJK names do not); it is lower-case when all those words are. ``None`` without cased aliases.
    """
    require_alias_index(alias_index)
    cased = lower = 0
    for surface, _ in alias_index.surface_forms():
        words = [w for w in _LETTER_RUN.findall(surface) if w.lower() != w.upper()]
        if words:
            cased += 1
            lower += all(w == w.lower() for w in words)
    return (lower / cased if cased else None), cased


@dataclass(frozen=True)
class CaseMode:
    """How a gazetteer matches case: ``folded`` or exact, chosen by ``setting`` (``auto``/``true``/``false``)."""

    folded: bool
    setting: str
    lowercase_share: float | None = None  # measured for ``auto``: share of cased aliases in lower case
    cased_aliases: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The record ``annotation_stats.json`` keeps under ``gazetteer_case``."""
        return {
            "mode": "folded" if self.folded else "exact",
            "setting": self.setting,
            "lowercase_alias_share": None if self.lowercase_share is None else round(self.lowercase_share, 4),
            "cased_aliases": self.cased_aliases,
            "threshold": AUTO_FOLD_LOWERCASE_SHARE,
        }


def resolve_case_mode(alias_index: AliasIndexLike, setting: CaseSetting, *, name: str = "gazetteer") -> CaseMode:
    """``True``/``False`` as given; ``"auto"``: folded when >= ``AUTO_FOLD_LOWERCASE_SHARE`` of the cased
    aliases are lower-case (the KG's labels would miss capitalised mentions), exact otherwise."""
    if isinstance(setting, bool):
        return CaseMode(folded=setting, setting=str(setting).lower())
    if setting != "auto":
        raise MaskingError(
            f"case_insensitive is {setting!r}",
            where=f"detector {name}",
            fix="use true (fold case), false (exact case) or auto (fold when the KG's aliases are "
            f"at least {AUTO_FOLD_LOWERCASE_SHARE:.0%} lower-case)",
        )
    share, cased = lowercase_alias_share(alias_index)
    folded = share is not None and share >= AUTO_FOLD_LOWERCASE_SHARE
    return CaseMode(folded=folded, setting="auto", lowercase_share=share, cased_aliases=cased)


class GazetteerDetector:
    """Finds KG labels/aliases in text (longest match first) and links them to the KG.

    ``labels``: per-entity label (e.g. ``KnowledgeGraph.entity_labels``); spans get ``"KG"`` without it.
    ``backend``: ``"fast"`` (regex tokens, pure Python) or ``"spacy"`` (PhraseMatcher component on ``nlp``
    or a blank pipeline of ``language``). ``case_insensitive``: ``True``, ``False`` or ``"auto"`` (see the
    module docstring); the outcome is ``case_mode`` (and ``case_insensitive``, a bool).
    """

    def __init__(
        self,
        alias_index: AliasIndexLike,
        *,
        case_insensitive: CaseSetting = "auto",
        min_chars: int | None = None,
        stopwords: Iterable[str] = ENGLISH_STOPWORDS,
        labels: Sequence[str] | None = None,
        backend: str = "fast",
        nlp: Any = None,
        language: str = "en",
        batch_size: int = 256,
        name: str = "gazetteer",
    ) -> None:
        if backend not in ("fast", "spacy"):
            raise MaskingError(
                f"unknown gazetteer backend {backend!r}", where=f"detector {name}", fix="use 'fast' or 'spacy'"
            )
        self.name = name
        self.case_mode = resolve_case_mode(alias_index, case_insensitive, name=name)
        if self.case_mode.setting == "auto" and self.case_mode.folded:  # said once, by the detector that folds
            logger.info(
                "%s: %.0f%% of the KG's %d cased aliases are lower-case; matching case-folded "
                "(exact-case aliases preferred)",
                name,
                100 * (self.case_mode.lowercase_share or 0.0),
                self.case_mode.cased_aliases,
            )
        self.case_insensitive = case_insensitive = self.case_mode.folded
        self.labels = list(labels) if labels is not None else None
        self.table = GazetteerTable.from_alias_index(
            alias_index, case_insensitive=case_insensitive, min_chars=min_chars, stopwords=stopwords
        )
        self.backend = backend
        self.batch_size = batch_size
        self._nlp: Any = None  # backend "spacy": a spaCy Language with the kept_gazetteer component
        if backend == "spacy":
            import spacy

            register_spacy_components()
            self._nlp = nlp if nlp is not None else spacy.blank(language)
            if "kept_gazetteer" in self._nlp.pipe_names:
                self._nlp.remove_pipe("kept_gazetteer")
            component = self._nlp.add_pipe(
                "kept_gazetteer", config={"case_insensitive": case_insensitive, "source": name}
            )
            component.set_table(self.table, self.labels)

    def _label(self, entity_id: int) -> str:
        return entity_label(self.labels, entity_id)

    def detect_one(self, text: str) -> list[Span]:
        return [
            Span(
                start=start, end=end, kind="entity", label=self._label(entity_id), entity_id=entity_id, source=self.name
            )
            for start, end, entity_id in match_text(text, self.table, self.case_insensitive)
        ]

    def detect(self, texts: Sequence[str]) -> list[list[Span]]:
        if self.backend == "fast":
            return [self.detect_one(text) for text in texts]
        return [list(doc._.kept_spans) for doc in self._nlp.pipe(texts, batch_size=self.batch_size)]
