"""``AliasIndex``: mention string -> candidate entity ids with priors (exact and normalised lookups)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kg._io import clean_cell, read_text, write_tsv
from kg.errors import KGError
from kg.report import LoadReport

if TYPE_CHECKING:  # pragma: no cover
    from kg.graph import KnowledgeGraph

_SEPARATORS = re.compile(r"[-_/\u2010-\u2015]+")
_PUNCTUATION = re.compile(r"[^\w\s]+")
_SPACES = re.compile(r"\s+")
#: Scripts written without spaces between words (kana, CJK ideographs and compatibility ideographs, Hangul).
CJK_CHARACTERS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_CJK_CHAR = re.compile(f"[{CJK_CHARACTERS}]")


def is_cjk(text: str) -> bool:
    """True when at least half of the non-space characters of ``text`` are CJK (``京``, ``北京大学``)."""
    letters = [ch for ch in text if not ch.isspace()]
    return bool(letters) and 2 * sum(1 for ch in letters if _CJK_CHAR.match(ch)) >= len(letters)


def script_min_chars(alias: str) -> int:
    """The shortest alias worth matching, by script: 1 for CJK (``京``, ``沪`` name cities), 2 otherwise
    (single Latin letters are noise)."""
    return 1 if is_cjk(alias) else 2


def normalize_mention(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive key: ``"  The U.S.-Army "`` -> ``"the us army"``."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _SEPARATORS.sub(" ", text)
    text = _PUNCTUATION.sub("", text)
    return _SPACES.sub(" ", text).strip()


def _normal_key(mention: str) -> str:
    """The key of the normalised table: ``normalize_mention``, or the whitespace-collapsed text when that is empty."""
    return normalize_mention(mention) or " ".join(mention.split())


@dataclass(frozen=True)
class Candidate:
    """One entity a mention may refer to; ``prior`` = P(entity | mention), priors of one lookup sum to 1."""

    entity_id: int
    prior: float
    alias: str
    count: int = 0


class AliasIndex:
    """Surface forms with counts per entity. Lookups are dictionary look-ups (no scans)."""

    normalize_mention = staticmethod(normalize_mention)

    def __init__(self) -> None:
        self._exact: dict[str, dict[int, int]] = {}  # alias as written -> entity -> count
        self._normal: dict[str, dict[int, int]] = {}  # normalised alias -> entity -> count
        self._surface: dict[tuple[str, int], tuple[str, int]] = {}  # (normalised, entity) -> best (alias, count)
        self.load_report: LoadReport | None = None

    # building ---------------------------------------------------------------------------------
    def add(self, alias: str, entity_id: int, count: int = 1) -> None:
        """Record ``count`` uses of ``alias`` for ``entity_id`` (counts add up)."""
        alias = " ".join(alias.split())
        if not alias:
            return
        if count < 0:
            raise KGError(f"negative count {count} for alias {alias!r}", where="count")
        per_entity = self._exact.setdefault(alias, {})
        per_entity[entity_id] = per_entity.get(entity_id, 0) + count
        key = _normal_key(alias)
        normal = self._normal.setdefault(key, {})
        normal[entity_id] = normal.get(entity_id, 0) + count
        best = self._surface.get((key, entity_id))
        if best is None or per_entity[entity_id] > best[1]:
            self._surface[(key, entity_id)] = (alias, per_entity[entity_id])

    @classmethod
    def from_graph(
        cls, graph: KnowledgeGraph, counts: Mapping[str, Mapping[int, int]] | None = None, *, include_names: bool = True
    ) -> AliasIndex:
        """Labels and aliases of every entity (count 1 each, or the count in ``counts[alias][entity]``).

        ``counts`` (e.g. anchor-text link counts) may add aliases that the graph does not list.
        """
        index = cls()
        counts = counts or {}
        for entity_id in range(graph.num_entities):
            forms = [graph.entity_labels[entity_id], *graph.entity_aliases[entity_id]]
            if include_names:
                forms.append(graph.entities[entity_id])
            seen: set[str] = set()
            for form in forms:
                form = " ".join(form.split())
                if not form or form in seen:
                    continue
                seen.add(form)
                count = counts.get(form, {}).get(entity_id, 0)
                index.add(form, entity_id, max(1, count))
        for alias, per_entity in counts.items():
            for entity_id, count in per_entity.items():
                if not 0 <= entity_id < graph.num_entities:
                    raise KGError(
                        f"alias {alias!r} points to entity id {entity_id} outside 0..{graph.num_entities - 1}",
                        where="counts",
                    )
                if entity_id not in index._exact.get(" ".join(alias.split()), {}):
                    index.add(alias, entity_id, count)
        return index

    # lookups ----------------------------------------------------------------------------------
    def lookup(self, mention: str, exact: bool = False, *, limit: int | None = None) -> list[Candidate]:
        """Candidates for ``mention``, best (highest prior, then lowest id) first; [] when unknown."""
        if exact:
            per_entity = self._exact.get(" ".join(mention.split()))
            key = None
        else:
            key = _normal_key(mention)
            per_entity = self._normal.get(key)
        if not per_entity:
            return []
        total = sum(per_entity.values())
        size = len(per_entity)
        ordered = sorted(per_entity.items(), key=lambda item: (-item[1], item[0]))
        if limit is not None:
            ordered = ordered[:limit]
        result = []
        for entity_id, count in ordered:
            prior = count / total if total else 1.0 / size
            alias = mention if key is None else self._surface.get((key, entity_id), (mention, 0))[0]
            result.append(Candidate(entity_id=entity_id, prior=prior, alias=alias, count=count))
        return result

    def best(self, mention: str, exact: bool = False) -> int:
        """The most likely entity id for ``mention``, or -1."""
        candidates = self.lookup(mention, exact=exact, limit=1)
        return candidates[0].entity_id if candidates else -1

    def __contains__(self, mention: object) -> bool:
        return isinstance(mention, str) and _normal_key(mention) in self._normal

    def __len__(self) -> int:
        return len(self._exact)

    def surface_forms(self) -> Iterator[tuple[str, list[int]]]:
        """Every alias as written with its entity ids (most used first), e.g. for a gazetteer."""
        for alias, per_entity in self._exact.items():
            yield alias, [e for e, _ in sorted(per_entity.items(), key=lambda item: (-item[1], item[0]))]

    def entries(self) -> Iterator[tuple[str, int, int]]:
        """``(alias, entity_id, count)`` rows in insertion order."""
        for alias, per_entity in self._exact.items():
            for entity_id, count in per_entity.items():
                yield alias, entity_id, count

    @property
    def num_entities_covered(self) -> int:
        return len({e for per_entity in self._exact.values() for e in per_entity})

    def ambiguous(self) -> Iterator[tuple[str, list[Candidate]]]:
        """Normalised keys with more than one candidate entity."""
        for key, per_entity in self._normal.items():
            if len(per_entity) > 1:
                yield key, self.lookup(key)

    # persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """``alias<TAB>entity_id<TAB>count`` with a header row, written atomically."""
        return write_tsv(
            path,
            ("alias", "entity_id", "count"),
            ((clean_cell(alias), entity_id, count) for alias, entity_id, count in self.entries()),
        )

    @classmethod
    def load(cls, path: str | Path, *, num_entities: int | None = None, strict: bool = False) -> AliasIndex:
        """Read :meth:`save`'s file. With ``num_entities``, rows with ids outside the graph are skipped
        and counted in ``index.load_report`` (``strict=True`` raises)."""
        path = Path(path)
        report = LoadReport(path=str(path))
        index = cls()
        for line_no, line in enumerate(read_text(path).split("\n"), start=1):
            line = line.rstrip("\r")
            if not line or (line_no == 1 and line.startswith("alias\t")):
                continue
            cells = line.split("\t")
            report.rows += 1
            if len(cells) != 3:
                raise KGError(
                    f"{len(cells)} tab-separated columns, expected 3 (alias, entity_id, count)",
                    where=path,
                    line=line_no,
                    fix="fix the row",
                )
            alias, raw_id, raw_count = cells
            if not alias.strip():
                raise KGError("empty alias", where=path, line=line_no, fix="fill in the alias or delete the row")
            try:
                entity_id, count = int(raw_id), int(raw_count)
            except ValueError:
                raise KGError(
                    f"entity_id {raw_id!r} and count {raw_count!r} must be integers",
                    where=path,
                    line=line_no,
                    fix="fix the row",
                ) from None
            if entity_id < 0 or (num_entities is not None and entity_id >= num_entities):
                if strict:
                    raise KGError(
                        f"entity id {entity_id} is not in the graph ({num_entities} entities)",
                        where=path,
                        line=line_no,
                        fix="re-create aliases.tsv with the graph, or load without strict",
                    )
                report.skip("unknown entity", line_no)
                continue
            index.add(alias, entity_id, count)
            report.kept += 1
        index.load_report = report
        return index
