"""The gazetteer's compiled alias table and its fast matcher (regex tokens, greedy leftmost-longest).

:class:`GazetteerTable` maps normalised alias token tuples to the best-linked entity; :func:`match_text`
finds its aliases in a text. The gazetteer (:mod:`masking.detectors.gazetteer`), its spaCy component
(:mod:`masking.detectors.gazetteer_spacy`) and the term lists (:mod:`masking.detectors.rules`) share them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from kg.aliases import CJK_CHARACTERS, script_min_chars
from masking.detectors.base import AliasIndexLike
from masking.errors import MaskingError

_CJK = CJK_CHARACTERS
_END = ""  # trie key marking the end of an alias (no token is empty)
TOKEN_PATTERN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")
_PIECE_PATTERN = re.compile(rf"\s*(?:[{_CJK}]|[^\W{_CJK}]+|[^\w\s])")

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


def require_alias_index(alias_index: Any) -> None:
    """MaskingError unless ``alias_index`` can list its surface forms (a ``kg.AliasIndex``)."""
    if alias_index is None or not hasattr(alias_index, "surface_forms"):
        raise MaskingError(
            "the gazetteer needs an alias index (kg.AliasIndex)",
            where="detector gazetteer",
            fix="build one with kg.AliasIndex.from_graph(graph) or load RUN_DIR/kg/aliases.tsv",
        )


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
        require_alias_index(alias_index)
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
