"""MediaWiki wikitext of one article -> plain text, hyperlinks and infobox facts.

:class:`ArticleParser` pre-cleans the wikitext (comments, refs, tables, media, non-infobox templates),
parses it with mwparserfromhell and walks the node tree into a :class:`TextBuilder` (whitespace
collapsed, offsets of recorded links kept valid), recording each article link as (start, end, raw
target, anchor) and each infobox field that links to an article as (field, raw target, anchor).
:func:`normalize_title` is MediaWiki's title normalisation. :mod:`kg.wikipedia` reads the dump and
builds the KG from what this returns.
"""

from __future__ import annotations

import html
import re
from typing import Any

# Namespaces and interwiki prefixes whose links are not article links.
_NAMESPACES = {
    "file",
    "image",
    "category",
    "media",
    "special",
    "wikipedia",
    "wp",
    "project",
    "help",
    "portal",
    "template",
    "user",
    "talk",
    "user talk",
    "module",
    "mediawiki",
    "book",
    "draft",
    "timedtext",
    "wiktionary",
    "wikt",
    "wikisource",
    "s",
    "q",
    "wikiquote",
    "b",
    "wikibooks",
    "n",
    "wikinews",
    "v",
    "wikiversity",
    "commons",
    "meta",
    "m",
    "species",
    "d",
    "wikidata",
    "mw",
    "c",
    "voy",
    "wikivoyage",
    "iarchive",
    "oldwikisource",
    "w",
    "wikipedia talk",
    "template talk",
    "category talk",
    "file talk",
    "portal talk",
    "help talk",
    "wp talk",
    "h",
    "t",
    "cat",
}
_INVISIBLE_NAMESPACES = {"file", "image", "category", "media", "cat"}
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[a-z]{2,8})*$")
_SKIP_TAGS = {
    "ref",
    "references",
    "gallery",
    "math",
    "timeline",
    "table",
    "score",
    "syntaxhighlight",
    "source",
    "imagemap",
    "chem",
    "ce",
    "hiero",
    "graph",
    "templatedata",
    "mapframe",
    "maplink",
    "inputbox",
    "categorytree",
    "noinclude",
    "includeonly",
    "onlyinclude",
    "tr",
    "td",
    "th",
    "caption",
    "section",
}
_BREAK_TAGS = {"br", "hr", "p", "li", "dt", "dd", "div", "blockquote", "poem"}
_SKIP_SECTIONS = {
    "references",
    "external links",
    "further reading",
    "notes",
    "bibliography",
    "sources",
    "footnotes",
    "citations",
    "notes and references",
    "references and notes",
    "works cited",
}
_SKIP_INFOBOX_FIELDS = {
    "image",
    "caption",
    "alt",
    "signature",
    "image_size",
    "imagesize",
    "footnotes",
    "notes",
    "website",
    "url",
    "logo",
    "map",
    "map_caption",
    "image_caption",
    "image_alt",
    "signature_alt",
    "module",
    "embed",
}

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
        name = text[start + 2 : start + 40].lstrip("{ \n").lower().replace("_", " ")
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


class TextBuilder:
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


class ArticleParser:
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
        builder = TextBuilder()
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

    def _walk(self, nodes: list[Any], out: TextBuilder, links: list[list[Any]], top: bool = False) -> None:
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
                        value = value[trail.end() :]
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

    def _link(self, node: Any, out: TextBuilder, links: list[list[Any]]) -> None:
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
