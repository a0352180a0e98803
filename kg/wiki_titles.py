"""MediaWiki link titles: title normalisation and which namespace (if any) a link points into.

:mod:`kg.wikitext` asks these questions of every link it walks; :mod:`kg.wikipedia` normalises
titles to name entities.
"""

from __future__ import annotations

import html
import re

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
_INVALID_TITLE = re.compile(r"[\[\]{}|<>\n]")


def normalize_title(title: str) -> str:
    """MediaWiki title normalisation: anchors dropped, ``_``->space, whitespace collapsed, first letter upper."""
    title = html.unescape(title).replace("_", " ")
    title = title.split("#", 1)[0]
    title = " ".join(title.split()).lstrip(":").strip()
    if not title:
        return ""
    return title[0].upper() + title[1:]


def link_namespace(title: str) -> str | None:
    """The namespace/interwiki prefix of a link title (lower case), or None for an article link."""
    if ":" not in title:
        return None
    prefix = title.split(":", 1)[0].strip().lower().replace("_", " ")
    if prefix in _NAMESPACES or _LANGUAGE_CODE.match(prefix):
        return prefix
    return None


def is_hidden_namespace(namespace: str) -> bool:
    """Images, categories and interlanguage links: a link into one shows no text."""
    return namespace in _INVISIBLE_NAMESPACES or bool(_LANGUAGE_CODE.match(namespace))


def is_invalid_title(title: str) -> bool:
    """Characters no title may hold: such a "link" is broken markup, not a link."""
    return _INVALID_TITLE.search(title) is not None
