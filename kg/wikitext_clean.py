"""Cheap string-level cleaning of wikitext before the (comparatively slow) mwparserfromhell parse.

Comments, refs, magic words, tables, media links and every template but infoboxes are never visible
text; dropping them here spares the parser most of its work and keeps malformed markup from leaking
into the text.
"""

from __future__ import annotations

import re

# Cheap pre-cleaning before the (comparatively slow) parser: comments, refs, magic words.
_PRE_CLEAN = re.compile(
    r"<!--.*?(?:-->|\Z)|<ref[^>]*?/>|<ref(?:\s[^>]*)?>.*?</ref\s*>|__[A-Z]+__",
    re.DOTALL | re.IGNORECASE,
)


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


def preclean(wikitext: str) -> str:
    """``wikitext`` without comments, refs, magic words, tables, media links and non-infobox templates."""
    return _strip_media(_strip_tables(_strip_templates(_PRE_CLEAN.sub("", wikitext))))
