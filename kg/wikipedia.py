"""The Wikipedia sample that ships in gensim's wheel: clean text with gold hyperlinks, and a small KG.

``load_wikipedia_sample()`` parses a MediaWiki XML dump (bz2 or plain) with mwparserfromhell into

- documents: plain text (no templates, refs, tables, file/category links; the visible text of links
  kept) and hyperlink spans (character offsets into that text, the normalised, redirect-resolved
  target title, and its entity id);
- a :class:`KnowledgeGraph`: every article and every link target is an entity (name = label =
  normalised title, aliases = anchor texts, most used first), typed triples from infobox fields
  that link to articles (``birth_place``, ``spouse``, ``party``, ...) and ``links_to`` edges;
- an :class:`AliasIndex` whose priors are the anchor-text link counts (plus the title, count >= 1).

This module reads the dump and builds the KG; one article's wikitext becomes text, links and infobox
facts in :mod:`kg.wikitext`.
"""

from __future__ import annotations

import bz2
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kg.aliases import AliasIndex
from kg.errors import KGError
from kg.graph import KnowledgeGraph
from kg.wiki_titles import normalize_title
from kg.wikitext import ArticleParser

SAMPLE_NAME = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LINKS_TO = "links_to"
LINK_LABEL = "WIKI_LINK"


@dataclass
class WikiLink:
    """A hyperlink: ``text[start:end]`` is the visible anchor; ``target`` the normalised, resolved title."""

    start: int
    end: int
    target: str
    entity_id: int = -1


@dataclass
class WikiDocument:
    id: str
    title: str
    text: str
    links: list[WikiLink] = field(default_factory=list)

    def gold_spans(self, label: str = LINK_LABEL) -> list[dict[str, Any]]:
        """The links as Span dicts (``kind`` "entity", ``source`` "gold"), text order."""
        return [
            {
                "start": link.start,
                "end": link.end,
                "kind": "entity",
                "label": label,
                "entity_id": link.entity_id,
                "source": "gold",
            }
            for link in self.links
        ]

    def to_dict(self, label: str = LINK_LABEL) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "text": self.text, "spans": self.gold_spans(label)}


@dataclass
class WikipediaSample:
    documents: list[WikiDocument]
    graph: KnowledgeGraph
    alias_index: AliasIndex
    stats: dict[str, Any]
    redirects: dict[str, str] = field(default_factory=dict)


def default_sample_path() -> Path:
    """The enwiki sample inside gensim's wheel (KGError with the fix when gensim is missing)."""
    import importlib.util

    spec = importlib.util.find_spec("gensim")  # locate the wheel without importing gensim (seconds)
    if spec is None or not spec.submodule_search_locations:
        raise KGError(
            "gensim is not installed",
            where="wikipedia sample",
            fix="pip install gensim (it ships the sample), or pass path= to a MediaWiki XML dump",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / SAMPLE_NAME
    if not path.exists():
        raise KGError(
            f"{SAMPLE_NAME} not found in the gensim package",
            where=path,
            fix="reinstall gensim, or pass path= to a MediaWiki XML dump",
        )
    return path


@dataclass
class _Page:
    title: str
    namespace: int
    redirect: str | None
    text: str


def iter_pages(path: str | Path) -> Iterator[_Page]:
    """Pages of a MediaWiki XML export (``.bz2`` or plain), streaming."""
    path = Path(path)
    if not path.exists():
        raise KGError("file not found", where=path, fix="pass a MediaWiki XML dump (.xml or .xml.bz2)")
    opener = bz2.open if path.suffix == ".bz2" else open
    try:
        with opener(path, "rb") as handle:
            for _, element in ET.iterparse(handle, events=("end",)):
                if not element.tag.endswith("page"):
                    continue
                title, namespace, redirect, text = "", 0, None, ""
                for child in element.iter():
                    tag = child.tag.rsplit("}", 1)[-1]
                    if tag == "title":
                        title = child.text or ""
                    elif tag == "ns":
                        namespace = int(child.text or 0)
                    elif tag == "redirect":
                        redirect = child.get("title") or ""
                    elif tag == "text":
                        text = child.text or ""
                yield _Page(title, namespace, redirect, text)
                element.clear()
    except (ET.ParseError, OSError, EOFError) as error:
        raise KGError(
            f"not a readable MediaWiki XML dump ({error})", where=path, fix="pass the .xml or .xml.bz2 export file"
        ) from None


def load_wikipedia_sample(path: str | Path | None = None, *, max_documents: int | None = None) -> WikipediaSample:
    """Parse the gensim enwiki sample (or another MediaWiki dump) into documents, a KG and an alias index."""
    started = time.perf_counter()
    source = Path(path) if path is not None else default_sample_path()
    articles: list[_Page] = []
    redirects: dict[str, str] = {}
    num_pages = 0
    for page in iter_pages(source):
        num_pages += 1
        if page.namespace != 0:
            continue
        if page.redirect is not None:
            redirects[normalize_title(page.title)] = normalize_title(page.redirect)
            continue
        if not page.text.strip() or (max_documents is not None and len(articles) >= max_documents):
            continue
        articles.append(page)
    if not articles:
        raise KGError(
            "no articles (namespace 0, not redirects) in the dump",
            where=source,
            fix="pass a MediaWiki pages-articles XML export",
        )

    def resolve(title: str) -> str:
        seen = {title}
        while title in redirects:
            title = redirects[title]
            if title in seen:
                break
            seen.add(title)
        return title

    parser = ArticleParser()
    entity_index: dict[str, int] = {}
    titles = [normalize_title(page.title) for page in articles]
    for title in titles:
        entity_index.setdefault(title, len(entity_index))
    documents: list[WikiDocument] = []
    anchor_counts: dict[str, Counter[int]] = {}
    link_edges: dict[tuple[int, int], None] = {}
    fact_rows: dict[tuple[int, str, int], None] = {}
    num_links = num_via_redirect = num_infoboxes = num_words = 0
    for page, title in zip(articles, titles):
        text, raw_links, facts, infoboxes = parser.parse(page.text)
        num_infoboxes += infoboxes
        head = entity_index[title]
        links: list[WikiLink] = []
        for start, end, raw_target, _anchor in raw_links:
            target = normalize_title(raw_target) or title  # [[#Section]] links to the article itself
            resolved = resolve(target)
            num_via_redirect += resolved != target
            entity_id = entity_index.setdefault(resolved, len(entity_index))
            links.append(WikiLink(start, end, resolved, entity_id))
            anchor_counts.setdefault(text[start:end], Counter())[entity_id] += 1
            if entity_id != head:
                link_edges[(head, entity_id)] = None
        for field_name, raw_target, anchor in facts:
            target = normalize_title(raw_target)
            if not target:
                continue
            tail = entity_index.setdefault(resolve(target), len(entity_index))
            fact_rows[(head, field_name, tail)] = None
            if anchor:
                anchor_counts.setdefault(anchor, Counter())[tail] += 1
        num_links += len(links)
        num_words += len(text.split())
        documents.append(WikiDocument(id=str(len(documents)), title=title, text=text, links=links))

    entities = list(entity_index)
    field_counts = Counter(field_name for _, field_name, _ in fact_rows)
    relations = [LINKS_TO] + sorted(field_counts, key=lambda f: (-field_counts[f], f))
    relation_index = {name: i for i, name in enumerate(relations)}
    rows = [(h, relation_index[f], t) for h, f, t in fact_rows] + [(h, 0, t) for h, t in link_edges]
    triples = torch.tensor(rows, dtype=torch.long) if rows else torch.empty((0, 3), dtype=torch.long)
    per_entity_anchors: list[Counter[str]] = [Counter() for _ in entities]
    for anchor, per_entity in anchor_counts.items():
        for entity_id, count in per_entity.items():
            per_entity_anchors[entity_id][anchor] += count
    aliases = [
        [a for a, _ in sorted(c.items(), key=lambda x: (-x[1], x[0])) if a != entities[i]]
        for i, c in enumerate(per_entity_anchors)
    ]
    graph = KnowledgeGraph(
        entities,
        relations,
        triples,
        entity_labels=list(entities),
        entity_aliases=aliases,
        relation_labels=[r.replace("_", " ") for r in relations],
        metadata={"source": f"wikipedia:{source.name}"},
    )
    alias_index = AliasIndex.from_graph(graph, counts={a: dict(c) for a, c in anchor_counts.items()})
    stats = {
        "pages": num_pages,
        "documents": len(documents),
        "redirects": len(redirects),
        "words": num_words,
        "characters": sum(len(d.text) for d in documents),
        "links": num_links,
        "links_resolved_via_redirect": num_via_redirect,
        "linked_entities": len({link.entity_id for d in documents for link in d.links}),
        "infoboxes": num_infoboxes,
        "infobox_triples": len(fact_rows),
        "links_to_triples": len(link_edges),
        "entities": graph.num_entities,
        "relations": graph.num_relations,
        "triples": graph.num_triples,
        "aliases": len(alias_index),
        "parse_seconds": round(time.perf_counter() - started, 2),
    }
    return WikipediaSample(documents=documents, graph=graph, alias_index=alias_index, stats=stats, redirects=redirects)
