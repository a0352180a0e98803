"""The gazetteer as a spaCy component: ``kept_gazetteer`` (``@Language.factory``) over a ``PhraseMatcher``.

Matches land on ``doc._.kept_spans`` (Span records) and ``doc.spans["kept_gazetteer"]`` (with
``span._.kept_entity_id``), spaCy style; ``GazetteerDetector(backend="spacy")`` runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from masking.detectors.gazetteer_table import GazetteerTable, entity_label
from masking.spans import Span, make_span


def register_spacy_components() -> None:
    """Register the ``kept_gazetteer`` factory and the ``kept_spans``/``kept_entity_id`` extensions (idempotent)."""
    from spacy.language import Language
    from spacy.tokens import Doc
    from spacy.tokens import Span as SpacySpan

    if not Doc.has_extension("kept_spans"):
        Doc.set_extension("kept_spans", default=None)
    if not SpacySpan.has_extension("kept_entity_id"):
        SpacySpan.set_extension("kept_entity_id", default=-1)

    if "kept_gazetteer" in Language.factories:
        return

    @Language.factory(
        "kept_gazetteer",
        default_config={"case_insensitive": False, "source": "gazetteer", "aliases_path": None, "min_chars": None},
    )
    def make_kept_gazetteer(
        nlp: Language, name: str, case_insensitive: bool, source: str, aliases_path: str | None, min_chars: int | None
    ) -> KeptGazetteer:
        component = KeptGazetteer(nlp, name, case_insensitive=case_insensitive, source=source)
        if aliases_path:
            from kg import AliasIndex  # masking may import kg

            component.set_table(
                GazetteerTable.from_alias_index(
                    AliasIndex.load(aliases_path), case_insensitive=case_insensitive, min_chars=min_chars
                )
            )
        return component


class KeptGazetteer:
    """spaCy component: PhraseMatcher over the alias table, longest non-overlapping matches, linked ids."""

    def __init__(
        self, nlp: Any, name: str = "kept_gazetteer", *, case_insensitive: bool = False, source: str = "gazetteer"
    ) -> None:
        from spacy.matcher import PhraseMatcher

        self.nlp = nlp
        self.name = name
        self.source = source
        self.case_insensitive = case_insensitive
        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER" if case_insensitive else "ORTH")
        self.link: dict[int, tuple[int, str]] = {}  # match key hash -> (entity id, label)
        self.table: GazetteerTable | None = None
        self.labels: Sequence[str] | None = None

    def set_table(self, table: GazetteerTable, labels: Sequence[str] | None = None) -> None:
        self.matcher = type(self.matcher)(self.nlp.vocab, attr="LOWER" if self.case_insensitive else "ORTH")
        self.link = {}
        self.table, self.labels = table, labels
        keys = list(table.entries)
        surfaces = [table.surfaces[key] for key in keys]
        for key, doc in zip(keys, self.nlp.tokenizer.pipe(surfaces)):
            entity_id = table.entries[key][0]
            label = entity_label(labels, entity_id)
            match_key = " ".join(key)
            self.matcher.add(match_key, [doc])
            self.link[self.nlp.vocab.strings[match_key]] = (entity_id, label)

    def __call__(self, doc: Any) -> Any:
        from spacy.util import filter_spans

        matches = self.matcher(doc, as_spans=True)
        chosen = filter_spans(matches)  # longest first, then earliest; non-overlapping
        records: list[Span] = []
        for span in chosen:
            entity_id, label = self.link.get(span.label, (-1, "KG"))
            if self.table is not None and self.table.exact_case:
                exact_id = self.table.prefer_exact_case(span.text, entity_id)
                if exact_id != entity_id:
                    entity_id, label = exact_id, entity_label(self.labels, exact_id)
            span._.kept_entity_id = entity_id
            records.append(make_span(span.start_char, span.end_char, "entity", label, entity_id, self.source))
        doc.spans[self.name] = chosen
        doc._.kept_spans = records
        return doc
