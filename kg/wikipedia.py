"""The Wikipedia sample that ships in gensim's wheel: clean text with gold hyperlinks, and a small KG.

``load_wikipedia_sample()`` parses a MediaWiki XML dump (bz2 or plain) with mwparserfromhell into

- documents: plain text (no templates, refs, tables, file/category links; the visible text of links
  kept) and hyperlink spans (character offsets into that text, the normalised, redirect-resolved
  target title, and its entity id);
- a :class:`KnowledgeGraph`: every article and every link target is an entity (name = label =
  normalised title, aliases = anchor texts, most used first), typed triples from infobox fields
  that link to articles (``birth_place``, ``spouse``, ``party``, ...) and ``links_to`` edges;
- an :class:`AliasIndex` whose priors are the anchor-text link counts (plus the title, count >= 1).
"""

from __future__ import annotations

import bz2
import html
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from kg.aliases import AliasIndex
from kg.errors import KGError
from kg.graph import KnowledgeGraph

SAMPLE_NAME = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LINKS_TO = "links_to"
LINK_LABEL = "WIKI_LINK"

# Namespaces and interwiki prefixes whose links are not article links.
_NAMESPACES = {
    "file", "image", "category", "media", "special", "wikipedia", "wp", "project", "help", "portal", "template",
    "user", "talk", "user talk", "module", "mediawiki", "book", "draft", "timedtext", "wiktionary", "wikt",
    "wikisource", "s", "q", "wikiquote", "b", "wikibooks", "n", "wikinews", "v", "wikiversity", "commons", "meta",
    "m", "species", "d", "wikidata", "mw", "c", "voy", "wikivoyage", "iarchive", "oldwikisource", "w", "wikipedia talk",
    "template talk", "category talk", "file talk", "portal talk", "help talk", "wp talk", "h", "t", "cat",
}
_INVISIBLE_NAMESPACES = {"file", "image", "category", "media", "cat"}
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[a-z]{2,8})*$")
_SKIP_TAGS = {"ref", "references", "gallery", "math", "timeline", "table", "score", "syntaxhighlight", "source",
              "imagemap", "chem", "ce", "hiero", "graph", "templatedata", "mapframe", "maplink", "inputbox",
              "categorytree", "noinclude", "includeonly", "onlyinclude", "tr", "td", "th", "caption", "section"}
_BREAK_TAGS = {"br", "hr", "p", "li", "dt", "dd", "div", "blockquote", "poem"}
_SKIP_SECTIONS = {"references", "external links", "further reading", "notes", "bibliography", "sources",
                  "footnotes", "citations", "notes and references", "references and notes", "works cited"}
_SKIP_INFOBOX_FIELDS = {"image", "caption", "alt", "signature", "image_size", "imagesize", "footnotes", "notes",
                        "website", "url", "logo", "map", "map_caption", "image_caption", "image_alt",
                        "signature_alt", "module", "embed"}

# Cheap pre-cleaning before the (comparatively slow) parser: comments, refs, magic words.
_PRE_CLEAN = re.compile(
    r"<!--.*?(?:-->|\Z)|<ref[^>]*?/>|<ref(?:\s[^>]*)?>.*?</ref\s*>|__[A-Z]+__",
    re.DOTALL | re.IGNORECASE,
)
_HSPACE = re.compile(r"[ \t\u00a0\u2009\u200b]+")
_NEWLINES = re.compile(r" *\n[ \n]*")
_LINK_TRAIL = re.compile(r"[a-z]+")
_PARENTHETICAL = re.compile(r"\s*\([^()]*\)\s*$")


_INVALID_TITLE = re.compile(r"[\[\]{}|<>\n]")


def _strip_tables(text: str) -> str:
    """Drop wiki tables (``{| ... |}``, nested) line by line; malformed ones would leak markup as text."""
    if "{|" not in text:
        return text
    kept: list[str] = []
    depth = 0
    for line in text.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith("{|"):
            depth += 1
        if depth == 0:
            kept.append(line)
        elif stripped.startswith("|}"):
            depth -= 1
    return text if depth else "\n".join(kept)  # unbalanced: leave it to the parser


def _balanced_end(text: str, start: int, opening: str, closing: str) -> int:
    """The position just after the ``closing`` that balances the ``opening`` at ``start`` (nested), or -1."""
    depth, cursor = 0, start
    while True:
        next_open, next_close = text.find(opening, cursor), text.find(closing, cursor)
        if next_close < 0:
            return -1
        if 0 <= next_open < next_close:
            depth += 1
            cursor = next_open + len(opening)
        else:
            depth -= 1
            cursor = next_close + len(closing)
            if depth == 0:
                return cursor


_MEDIA_LINK = re.compile(r"\[\[\s*:?\s*(?:file|image|media)\s*:", re.IGNORECASE)


def _strip_media(text: str) -> str:
    """Drop ``[[File:...]]`` links with nested links in captions (the parser gives up on multi-line ones)."""
    match = _MEDIA_LINK.search(text)
    if match is None:
        return text
    pieces: list[str] = []
    position = 0
    while match is not None:
        start = match.start()
        cursor = _balanced_end(text, start, "[[", "]]")
        if cursor < 0:
            return "".join(pieces) + text[position:]  # unbalanced: keep the rest for the parser
        pieces.append(text[position:start])
        position = cursor
        match = _MEDIA_LINK.search(text, position)
    pieces.append(text[position:])
    return "".join(pieces)


def _strip_templates(text: str, keep_prefix: str = "infobox") -> str:
    """Drop ``{{...}}`` templates (nested) except those named ``keep_prefix...``: they are never visible
    text here, and leaving them out spares the parser most of its work."""
    start = text.find("{{")
    if start < 0:
        return text
    pieces: list[str] = []
    position = 0
    while start >= 0:
        cursor = _balanced_end(text, start, "{{", "}}")
        if cursor < 0:
            return "".join(pieces) + text[position:]  # unbalanced: keep the rest for the parser
        name = text[start + 2:start + 40].lstrip("{ \n").lower().replace("_", " ")
        pieces.append(text[position:start])
        if name.startswith(keep_prefix):
            pieces.append(text[start:cursor])
        position = cursor
        start = text.find("{{", position)
    pieces.append(text[position:])
    return "".join(pieces)


def normalize_title(title: str) -> str:
    """MediaWiki title normalisation: anchors dropped, ``_``->space, whitespace collapsed, first letter upper."""
    title = html.unescape(title).replace("_", " ")
    title = title.split("#", 1)[0]
    title = " ".join(title.split()).lstrip(":").strip()
    if not title:
        return ""
    return title[0].upper() + title[1:]


def _namespace(title: str) -> str | None:
    """The namespace/interwiki prefix of a link title (lower case), or None for an article link."""
    if ":" not in title:
        return None
    prefix = title.split(":", 1)[0].strip().lower().replace("_", " ")
    if prefix in _NAMESPACES or _LANGUAGE_CODE.match(prefix):
        return prefix
    return None


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
        return [{"start": link.start, "end": link.end, "kind": "entity", "label": label,
                 "entity_id": link.entity_id, "source": "gold"} for link in self.links]

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
        raise KGError("gensim is not installed", where="wikipedia sample",
                      fix="pip install gensim (it ships the sample), or pass path= to a MediaWiki XML dump")
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / SAMPLE_NAME
    if not path.exists():
        raise KGError(f"{SAMPLE_NAME} not found in the gensim package", where=path,
                      fix="reinstall gensim, or pass path= to a MediaWiki XML dump")
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
        raise KGError(f"not a readable MediaWiki XML dump ({error})", where=path,
                      fix="pass the .xml or .xml.bz2 export file") from None


class _TextBuilder:
    """Accumulates plain text with collapsed whitespace; offsets stay valid for recorded spans."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.tail = ""  # last two characters

    def add(self, text: str) -> None:
        if not text:
            return
        text = _HSPACE.sub(" ", text)
        if "\n" in text:
            text = _NEWLINES.sub(lambda m: "\n\n" if m.group().count("\n") > 1 else "\n", text)
        if not self.length:
            text = text.lstrip()
        elif self.tail[-1:] in (" ", "\n"):
            text = text.lstrip(" ")
            if self.tail[-1:] == "\n" and text.startswith("\n"):
                text = text.lstrip("\n") if self.tail == "\n\n" else "\n" + text.lstrip("\n")
            elif self.tail[-1:] == " " and text.startswith("\n"):
                self._drop_trailing_space()
        if not text:
            return
        self.parts.append(text)
        self.length += len(text)
        self.tail = (self.tail + text)[-2:]

    def newline(self) -> None:
        self.add("\n")

    def _drop_trailing_space(self) -> None:
        while self.parts and self.parts[-1].endswith(" "):
            last = self.parts.pop()
            stripped = last.rstrip(" ")
            self.length -= len(last) - len(stripped)
            if stripped:
                self.parts.append(stripped)
                break
        self.tail = "".join(self.parts[-2:])[-2:] if self.parts else ""

    def text(self) -> str:
        return "".join(self.parts).rstrip()


class _ArticleParser:
    """Walks one article's node tree (mwparserfromhell) into text, raw links and infobox facts."""

    def __init__(self) -> None:
        import mwparserfromhell

        self._mw = mwparserfromhell
        nodes = mwparserfromhell.nodes
        self._Text, self._Wikilink, self._Template = nodes.Text, nodes.Wikilink, nodes.Template
        self._Tag, self._Heading, self._ExternalLink = nodes.Tag, nodes.Heading, nodes.ExternalLink
        self._HTMLEntity = nodes.HTMLEntity

    def parse(self, wikitext: str) -> tuple[str, list[tuple[int, int, str, str]], list[tuple[str, str, str]], int]:
        """Return (text, links as (start, end, raw target, anchor), infobox (field, raw target, anchor), #infoboxes)."""
        code = self._mw.parse(_strip_media(_strip_tables(_strip_templates(_PRE_CLEAN.sub("", wikitext)))))
        builder = _TextBuilder()
        links: list[list[Any]] = []
        self._skipping = False
        self._pending: list[Any] | None = None
        self._walk(code.nodes, builder, links, top=True)
        facts: list[tuple[str, str, str]] = []
        infoboxes = 0
        for template in code.filter_templates(recursive=True):
            name = str(template.name).strip().lower().replace("_", " ")
            if not name.startswith("infobox"):
                continue
            infoboxes += 1
            for param in template.params:
                field_name = re.sub(r"[\s\-]+", "_", str(param.name).strip().lower()).strip("_")
                if not field_name or field_name.isdigit() or field_name in _SKIP_INFOBOX_FIELDS:
                    continue
                for link in param.value.filter_wikilinks(recursive=True):
                    raw = str(link.title).strip()
                    if _namespace(raw.lstrip(":")) is None and not _INVALID_TITLE.search(raw):
                        anchor = link.text.strip_code() if link.text is not None else raw.lstrip(":")
                        facts.append((field_name, raw, " ".join(html.unescape(anchor).split())))
        text = builder.text()
        return text, [(s, min(e, len(text)), t, a) for s, e, t, a in links if s < min(e, len(text))], facts, infoboxes

    def _walk(self, nodes: list[Any], out: _TextBuilder, links: list[list[Any]], top: bool = False) -> None:
        for node in nodes:
            kind = type(node)
            if kind is self._Heading:
                self._pending = None
                title = node.title.strip_code().strip()
                if node.level <= 2 and top:
                    self._skipping = title.lower() in _SKIP_SECTIONS
                if self._skipping:
                    continue
                out.add("\n\n")
                self._walk(node.title.nodes, out, links)
                out.add("\n\n")
                continue
            if self._skipping:
                continue
            if kind is self._Text:
                value = node.value
                if self._pending is not None:
                    trail = _LINK_TRAIL.match(value)
                    if trail and out.tail and not out.tail[-1].isspace():
                        # MediaWiki's link trail: [[apple]]s -> the anchor is "apples"
                        out.add(trail.group())
                        self._pending[1] = out.length
                        self._pending[3] += trail.group()
                        value = value[trail.end():]
                    self._pending = None
                out.add(value)
            elif kind is self._Wikilink:
                self._pending = None
                self._link(node, out, links)
            elif kind is self._Tag:
                self._pending = None
                tag = str(node.tag).strip().lower()
                if tag in _SKIP_TAGS:
                    continue
                if tag in _BREAK_TAGS:
                    out.newline()
                if node.contents is not None and not node.self_closing:
                    self._walk(node.contents.nodes, out, links)
                    if tag in _BREAK_TAGS:
                        out.newline()
            elif kind is self._ExternalLink:
                self._pending = None
                if node.title is not None:
                    self._walk(node.title.nodes, out, links)
            elif kind is self._HTMLEntity:
                out.add(node.normalize())
            else:  # templates, comments, arguments, template parameters: not part of the visible text
                if kind is self._Template:
                    self._pending = None

    def _link(self, node: Any, out: _TextBuilder, links: list[list[Any]]) -> None:
        raw_title = str(node.title).strip()
        if _INVALID_TITLE.search(raw_title):
            return  # not a valid title: broken markup, not a link
        leading_colon = raw_title.startswith(":")
        namespace = _namespace(raw_title.lstrip(":"))
        if namespace is not None:
            if not leading_colon and (namespace in _INVISIBLE_NAMESPACES or _LANGUAGE_CODE.match(namespace)):
                return  # images, categories, interlanguage links: not visible text
            visible = node.text.strip_code() if node.text is not None else raw_title.lstrip(":")
            out.add(html.unescape(visible))
            return
        if node.text is None:
            visible = raw_title.lstrip(":")
        else:
            visible = node.text.strip_code()
            if not visible.strip():
                visible = _PARENTHETICAL.sub("", raw_title.lstrip(":").split("#")[0])  # pipe trick
        visible = " ".join(html.unescape(visible).split())
        if not visible:
            return
        out.add(visible)
        end = out.length
        start = end - len(visible)
        record = [start, end, raw_title, visible]
        links.append(record)
        self._pending = record


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
        raise KGError("no articles (namespace 0, not redirects) in the dump", where=source,
                      fix="pass a MediaWiki pages-articles XML export")

    def resolve(title: str) -> str:
        seen = {title}
        while title in redirects:
            title = redirects[title]
            if title in seen:
                break
            seen.add(title)
        return title

    parser = _ArticleParser()
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
        for start, end, raw_target, anchor in raw_links:
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
    aliases = [[a for a, _ in sorted(c.items(), key=lambda x: (-x[1], x[0])) if a != entities[i]]
               for i, c in enumerate(per_entity_anchors)]
    graph = KnowledgeGraph(entities, relations, triples, entity_labels=list(entities), entity_aliases=aliases,
                           relation_labels=[r.replace("_", " ") for r in relations],
                           metadata={"source": f"wikipedia:{source.name}"})
    alias_index = AliasIndex.from_graph(graph, counts={a: dict(c) for a, c in anchor_counts.items()})
    stats = {
        "pages": num_pages, "documents": len(documents), "redirects": len(redirects),
        "words": num_words, "characters": sum(len(d.text) for d in documents),
        "links": num_links, "links_resolved_via_redirect": num_via_redirect,
        "linked_entities": len({link.entity_id for d in documents for link in d.links}),
        "infoboxes": num_infoboxes, "infobox_triples": len(fact_rows), "links_to_triples": len(link_edges),
        "entities": graph.num_entities, "relations": graph.num_relations, "triples": graph.num_triples,
        "aliases": len(alias_index), "parse_seconds": round(time.perf_counter() - started, 2),
    }
    return WikipediaSample(documents=documents, graph=graph, alias_index=alias_index, stats=stats, redirects=redirects)
