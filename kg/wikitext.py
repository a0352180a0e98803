"""MediaWiki wikitext of one article -> plain text, hyperlinks and infobox facts.

:class:`ArticleParser` pre-cleans the wikitext (:mod:`kg.wikitext_clean`), parses it with
mwparserfromhell and walks the node tree into a :class:`TextBuilder` (whitespace collapsed, offsets of
recorded links kept valid), recording each article link as (start, end, raw target, anchor) and each
infobox field that links to an article as (field, raw target, anchor). Link titles are judged by
:mod:`kg.wiki_titles`. :mod:`kg.wikipedia` reads the dump and builds the KG from what this returns.
"""

from __future__ import annotations

import html
import re
from typing import Any

from kg.wiki_titles import is_hidden_namespace, is_invalid_title, link_namespace
from kg.wikitext_clean import preclean

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

_HSPACE = re.compile(r"[ \t\u00a0\u2009\u200b]+")
_NEWLINES = re.compile(r" *\n[ \n]*")
_LINK_TRAIL = re.compile(r"[a-z]+")
_PARENTHETICAL = re.compile(r"\s*\([^()]*\)\s*$")


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
        code = self._mw.parse(preclean(wikitext))
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
                    if link_namespace(raw.lstrip(":")) is None and not is_invalid_title(raw):
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
        if is_invalid_title(raw_title):
            return  # not a valid title: broken markup, not a link
        leading_colon = raw_title.startswith(":")
        namespace = link_namespace(raw_title.lstrip(":"))
        if namespace is not None:
            if not leading_colon and is_hidden_namespace(namespace):
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
