"""KG gazetteer: longest-match of the KG's labels and aliases, linked through the alias index.

Two backends over the same compiled alias table (``GazetteerTable``):

- ``fast`` (default): a regex tokeniser (words, single CJK characters, single punctuation marks) and a
  greedy leftmost-longest match over token tuples in pure Python; offsets come from C-level
  ``re.findall`` + ``itertools.accumulate``, so the per-token Python work is one dict probe.
- ``spacy``: the ``kept_gazetteer`` spaCy component (``@Language.factory``) with a ``PhraseMatcher``
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
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Literal, Union

from kg.aliases import CJK_CHARACTERS, script_min_chars
from masking.detectors.base import AliasIndexLike
from masking.errors import MaskingError
from masking.spans import Span, make_span

_CJK = CJK_CHARACTERS
_END = ""  # trie key marking the end of an alias (no token is empty)
TOKEN_PATTERN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")
_PIECE_PATTERN = re.compile(rf"\s*(?:[{_CJK}]|[^\W{_CJK}]+|[^\w\s])")
_LETTER_RUN = re.compile(r"[^\W\d_]{2,}")  # words of two or more letters (not ids such as Q42)

logger = logging.getLogger(__name__)

#: ``case_insensitive="auto"`` folds case when at least this share of the KG's cased aliases is lower-case.
AUTO_FOLD_LOWERCASE_SHARE = 0.9
CaseSetting = Union[bool, Literal["auto"]]

# Single-token aliases that are common words are dropped (they would flood the corpus with false links).
ENGLISH_STOPWORDS: frozenset[str] = frozenset(
    """
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor
not now of off on once only or other our ours ourselves out over own same she should so some such than that
the their theirs them themselves then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours yourself yourselves one two
first new may can will s t
""".split()
)


def normalise_text(text: str, case_insensitive: bool) -> str:
    """Lower-case without changing character offsets (characters whose lower case is longer stay as they are)."""
    if not case_insensitive:
        return text
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(ch if len(low := ch.lower()) != 1 else low for ch in text)


def tokenise(text: str) -> list[str]:
    return TOKEN_PATTERN.findall(text)


def _require_alias_index(alias_index: Any) -> None:
    if alias_index is None or not hasattr(alias_index, "surface_forms"):
        raise MaskingError(
            "the gazetteer needs an alias index (kg.AliasIndex)",
            where="detector gazetteer",
            fix="build one with kg.AliasIndex.from_graph(graph) or load RUN_DIR/kg/aliases.tsv",
        )


def lowercase_alias_share(alias_index: AliasIndexLike) -> tuple[float | None, int]:
    """``(share of the cased aliases written all in lower case, number of cased aliases)``.

    An alias counts when one of its words of two or more letters has case (ids such as ``Q42``, numbers
    and CJK names do not); it is lower-case when all those words are. ``None`` without cased aliases.
    """
    _require_alias_index(alias_index)
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
    if folded and share is not None:
        logger.info(
            "%s: %.0f%% of the KG's %d cased aliases are lower-case; matching case-folded "
            "(exact-case aliases preferred)",
            name,
            100 * share,
            cased,
        )
    return CaseMode(folded=folded, setting="auto", lowercase_share=share, cased_aliases=cased)


@dataclass
class GazetteerTable:
    """Normalised alias token tuples -> (entity id of the best candidate, number of candidate entities)."""

    case_insensitive: bool
    entries: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)  # first token -> longest alias length starting with it
    surfaces: dict[tuple[str, ...], str] = field(default_factory=dict)  # one surface form per key
    # case-folded tables: alias tokens as written -> its entity, where it differs from the folded key's
    exact_case: dict[tuple[str, ...], int] = field(default_factory=dict)
    skipped: int = 0

    @classmethod
    def from_alias_index(
        cls,
        alias_index: AliasIndexLike,
        *,
        case_insensitive: bool = False,
        min_chars: int | None = None,
        stopwords: Iterable[str] = ENGLISH_STOPWORDS,
        skip_numeric: bool = True,
        max_tokens: int = 12,
    ) -> GazetteerTable:
        """``min_chars``: shorter aliases are skipped; None: by script (1 for CJK aliases, 2 for others)."""
        _require_alias_index(alias_index)
        stop = {w.lower() for w in stopwords}
        table = cls(case_insensitive=case_insensitive)
        ids_per_key: dict[tuple[str, ...], list[int]] = {}
        written: dict[tuple[str, ...], dict[tuple[str, ...], list[int]]] = {}  # folded key -> as written -> ids
        for surface, entity_ids in alias_index.surface_forms():
            surface = surface.strip()
            key = tuple(tokenise(normalise_text(surface, case_insensitive)))
            shortest = script_min_chars(surface) if min_chars is None else min_chars
            if (
                not key
                or len(surface) < shortest
                or len(key) > max_tokens
                or not entity_ids
                or (len(key) == 1 and key[0].lower() in stop)
                or (skip_numeric and all(not t.isalpha() for t in key))
            ):
                table.skipped += 1
                continue
            known = ids_per_key.setdefault(key, [])
            for entity_id in entity_ids:
                if int(entity_id) not in known:
                    known.append(int(entity_id))
            table.surfaces.setdefault(key, surface)
            if case_insensitive:
                written.setdefault(key, {}).setdefault(tuple(tokenise(surface)), []).extend(map(int, entity_ids))
        if not ids_per_key:
            raise MaskingError(
                "the alias index has no usable surface forms (no labels or aliases)",
                where="detector gazetteer",
                fix="give the KG entity names/aliases (kg/entities.tsv, kg/aliases.tsv) or drop the gazetteer detector",
            )
        for key, ids in ids_per_key.items():
            best = ids[0]
            if len(ids) > 1:
                best = _best_candidate(alias_index, table.surfaces[key], ids)
            table.entries[key] = (best, len(ids))
            if len(key) > table.first.get(key[0], 0):
                table.first[key[0]] = len(key)
            forms = written.get(key, {})
            if len(forms) > 1:  # written in several cases: each form keeps its own most used entity
                for form, form_ids in forms.items():
                    if form_ids[0] != best:
                        table.exact_case[form] = form_ids[0]
        return table

    def prefer_exact_case(self, written: str, entity_id: int) -> int:
        """The entity of the alias written exactly as ``written`` (a folded match), else ``entity_id``."""
        if not self.exact_case:
            return entity_id
        return self.exact_case.get(tuple(tokenise(written)), entity_id)

    def __len__(self) -> int:
        return len(self.entries)

    def trie(self) -> dict[Any, Any]:
        """Nested dicts token -> child; the key ``_END`` holds the entity id where an alias ends (built once)."""
        cached = self.__dict__.get("_trie")
        if cached is not None and self.__dict__.get("_trie_size") == len(self.entries):
            return cached
        root: dict[Any, Any] = {}
        for key, (entity_id, _) in self.entries.items():
            node = root
            for token in key:
                node = node.setdefault(token, {})
            node[_END] = entity_id
        self.__dict__["_trie"] = root
        self.__dict__["_trie_size"] = len(self.entries)
        return root


def _best_candidate(alias_index: AliasIndexLike, surface: str, ids: list[int]) -> int:
    """The candidate with the highest prior for ``surface`` among ``ids`` (first id when the index has no opinion)."""
    try:
        candidates = alias_index.lookup(surface)
    except Exception:  # noqa: BLE001 - a lookup failure only loses the prior ordering
        return ids[0]
    allowed = set(ids)
    for candidate in candidates or []:
        if int(candidate.entity_id) in allowed:
            return int(candidate.entity_id)
    return ids[0]


def match_tokens(tokens: Sequence[str], table: GazetteerTable) -> list[tuple[int, int, int]]:
    """Greedy leftmost-longest matches ``(first token, end token, entity id)``, non-overlapping.

    A token trie is walked from each token that starts an alias; the walk stops at the first token
    that continues no alias, so each start costs about as many dict probes as the match is long.
    """
    root = table.trie()
    found: list[tuple[int, int, int]] = []
    resume = 0
    n_tokens = len(tokens)
    for i, token in enumerate(tokens):
        node = root.get(token)
        if node is None or i < resume:
            continue
        best_end = -1
        best_id = -1
        j = i
        while True:
            entry = node.get(_END)
            if entry is not None:
                best_end, best_id = j + 1, entry
            j += 1
            if j >= n_tokens:
                break
            node = node.get(tokens[j])
            if node is None:
                break
        if best_end > 0:
            found.append((i, best_end, best_id))
            resume = best_end
    return found


def entity_label(labels: Sequence[str] | None, entity_id: int) -> str:
    """The KG label of ``entity_id`` for a span, or ``"KG"`` when there is none."""
    if labels is not None and 0 <= entity_id < len(labels) and labels[entity_id]:
        return labels[entity_id]
    return "KG"


def match_text(text: str, table: GazetteerTable, case_insensitive: bool) -> list[tuple[int, int, int]]:
    """:func:`match_tokens` on ``text``, as ``(start char, end char, value)`` (value: the table entry's id)."""
    norm = normalise_text(text, case_insensitive)
    tokens = TOKEN_PATTERN.findall(norm)
    matches = match_tokens(tokens, table)
    if not matches:
        return []
    ends = list(accumulate(map(len, _PIECE_PATTERN.findall(norm))))
    found = [(ends[first] - len(tokens[first]), ends[last - 1], value) for first, last, value in matches]
    if table.exact_case:
        found = [(start, end, table.prefer_exact_case(text[start:end], value)) for start, end, value in found]
    return found


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


# ----------------------------------------------------------------------------------------- spaCy component


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
