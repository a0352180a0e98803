"""User rules: term lists (longest match over tokens) and regular expressions; and corpus gold spans."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from masking.detectors.base import AliasIndexLike
from masking.detectors.gazetteer_table import TOKEN_PATTERN, GazetteerTable, match_text, normalise_text
from masking.detectors.linking import MentionLinker
from masking.errors import MaskingError
from masking.spans import Span, SpanKind, check_spans, make_span


class TermListDetector:
    """Spans for user terms (``{"term": "LABEL"}`` or a list of terms), longest match first.

    ``kind``: ``phrase`` (default) or ``entity``; with an ``alias_index`` entity terms are linked to the KG.
    """

    def __init__(
        self,
        terms: Mapping[str, str] | Iterable[str],
        *,
        kind: SpanKind = "phrase",
        label: str = "TERM",
        case_insensitive: bool = True,
        alias_index: AliasIndexLike | None = None,
        name: str = "terms",
    ) -> None:
        self.name = name
        self.kind: SpanKind = kind
        self.case_insensitive = case_insensitive
        items = list(terms.items()) if isinstance(terms, Mapping) else [(t, label) for t in terms]
        linker = MentionLinker(alias_index)
        self.targets: list[tuple[str, int]] = []  # (label, entity id)
        table = GazetteerTable(case_insensitive=case_insensitive)
        for term, term_label in items:
            key = tuple(TOKEN_PATTERN.findall(normalise_text(str(term).strip(), case_insensitive)))
            if not key or key in table.entries:
                continue
            entity_id = linker.link(str(term))[0] if kind == "entity" else -1
            table.entries[key] = (len(self.targets), 1)
            self.targets.append((str(term_label or label), entity_id))
            table.first[key[0]] = max(table.first.get(key[0], 0), len(key))
        if not table.entries:
            raise MaskingError(
                "the term list is empty",
                where=f"detector {name}",
                fix="give at least one term (terms: [...] or a file with one term per line)",
            )
        self.table = table

    def detect(self, texts: Sequence[str]) -> list[list[Span]]:
        results: list[list[Span]] = []
        for text in texts:
            spans: list[Span] = []
            for start, end, target in match_text(text, self.table, self.case_insensitive):
                label, entity_id = self.targets[target]
                spans.append(make_span(start, end, self.kind, label, entity_id, self.name))
            results.append(spans)
        return results


class RegexDetector:
    """Spans from regular expressions: ``[{"pattern": ..., "label": ..., "kind": ..., "group": 0, "ignore_case": False}]``."""

    def __init__(
        self,
        patterns: Sequence[Mapping[str, Any] | str],
        *,
        kind: SpanKind = "phrase",
        label: str = "REGEX",
        name: str = "regex",
    ) -> None:
        self.name = name
        self.rules: list[tuple[re.Pattern[str], str, SpanKind, int | str]] = []
        for i, rule in enumerate(patterns):
            rule = {"pattern": rule} if isinstance(rule, str) else dict(rule)
            try:
                compiled = re.compile(rule["pattern"], re.IGNORECASE if rule.get("ignore_case") else 0)
            except (re.error, KeyError, TypeError) as error:
                raise MaskingError(
                    f"bad regular expression: {error}",
                    where=f"detector {name} patterns[{i}]",
                    fix="give a valid Python regular expression under 'pattern'",
                ) from None
            rule_kind = rule.get("kind", kind)
            if rule_kind not in ("entity", "phrase"):
                raise MaskingError(
                    f"kind {rule_kind!r} is not entity or phrase",
                    where=f"detector {name} patterns[{i}]",
                    fix="use kind: entity or kind: phrase",
                )
            self.rules.append((compiled, str(rule.get("label", label)), rule_kind, rule.get("group", 0)))
        if not self.rules:
            raise MaskingError("no patterns given", where=f"detector {name}", fix="give at least one pattern")

    def detect(self, texts: Sequence[str]) -> list[list[Span]]:
        results: list[list[Span]] = []
        for text in texts:
            spans: list[Span] = []
            for compiled, label, kind, group in self.rules:
                for match in compiled.finditer(text):
                    start, end = match.span(group)
                    if end > start:
                        spans.append(make_span(start, end, kind, label, -1, self.name))
            spans.sort(key=lambda s: (s["start"], s["end"]))
            results.append(spans)
        return results


class GoldSpanDetector:
    """Spans the corpus already carries (Wikipedia links, FewRel head/tail): validated, re-labelled ``source``.

    ``detect(texts, spans=...)`` takes the documents' ``spans`` column; unlinked gold spans can be linked
    through the alias index. ``on_invalid``: ``error`` (MaskingError naming the document) or ``drop``.
    """

    uses_input_spans = True

    def __init__(
        self,
        *,
        alias_index: AliasIndexLike | None = None,
        source: str = "gold",
        on_invalid: str = "error",
        name: str = "gold",
    ) -> None:
        self.name = name
        self.source = source
        self.on_invalid = on_invalid
        self.linker = MentionLinker(alias_index)
        self.dropped = 0

    def detect(
        self,
        texts: Sequence[str],
        spans: Sequence[Sequence[Mapping[str, Any]] | None] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[list[Span]]:
        if spans is None:
            return [[] for _ in texts]
        results: list[list[Span]] = []
        for index, (text, raw) in enumerate(zip(texts, spans)):
            doc_id = ids[index] if ids is not None else str(index)
            valid, dropped = check_spans(
                text,
                raw or [],
                doc_id=doc_id,
                on_invalid=self.on_invalid,  # type: ignore[arg-type]
                default_source=self.source,
            )
            self.dropped += dropped
            out: list[Span] = []
            for span in valid:
                if span["source"] not in (self.source, ""):
                    continue  # spans of an earlier annotation run are recomputed, not carried
                if span["entity_id"] < 0 and span["kind"] == "entity":
                    span["entity_id"] = self.linker.link(text[span["start"] : span["end"]])[0]
                span["source"] = self.source
                out.append(span)
            results.append(out)
        return results
