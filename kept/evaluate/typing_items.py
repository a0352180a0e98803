"""Entity-typing items and their file format: :class:`TypingItem`, :class:`TypingData` and the
OpenEntity/FIGER reader of ERNIE-THU (a JSON array or JSON lines; errors name file:line)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kept.errors import KeptError

#: ERNIE-THU's typing scripts keep linked mentions (``ents``) with a score above this.
DEFAULT_LINK_THRESHOLD = 0.3


@dataclass(frozen=True)
class TypingItem:
    """A mention ``sent[start:end]`` with its type labels; ``entities`` = linked mentions of ``sent``
    as (start, end, KG id), the mention itself included when it is linked."""

    id: str
    sent: str
    start: int
    end: int
    labels: tuple[str, ...]
    entities: tuple[tuple[int, int, int], ...] = ()
    doc_id: str | None = None


@dataclass
class TypingData:
    """Train/dev/test items, the type vocabulary (column order of the model's outputs) and provenance."""

    train: list[TypingItem]
    dev: list[TypingItem]
    test: list[TypingItem]
    types: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def _json_records(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, record)`` of a JSON array file (ERNIE-THU) or of a JSON-lines file."""
    decoder = json.JSONDecoder()

    def line_of(position: int) -> int:
        return text.count("\n", 0, position) + 1

    def fail(what: str, position: int) -> KeptError:
        return KeptError(
            what,
            where=path,
            line=line_of(position),
            fix="write a JSON array of typing items or one JSON object per line",
        )

    stripped = text.lstrip()
    if stripped.startswith("["):
        position = len(text) - len(stripped) + 1
        expect_item = True
        while True:
            while position < len(text) and text[position].isspace():
                position += 1
            if position >= len(text):
                raise fail("the JSON array is not closed (no ']')", position)
            if text[position] == "]":
                rest = text[position + 1 :].strip()
                if rest:
                    raise fail("text after the closing ']'", position + 1 + text[position + 1 :].index(rest[0]))
                return
            if text[position] == ",":
                if expect_item:
                    raise fail("a ',' without an item before it", position)
                position, expect_item = position + 1, True
                continue
            if not expect_item:
                raise fail("a ',' is missing between two items", position)
            try:
                record, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError as error:
                raise fail(f"not valid JSON ({error.msg})", error.pos) from None
            yield line_of(position), record
            position, expect_item = end, False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise KeptError(
                f"not valid JSON ({error.msg}, column {error.colno})",
                where=path,
                line=number,
                fix="write one JSON object per line, or a JSON array of items",
            ) from None


def _typing_record(
    record: Any, path: Path, line: int, entity_index: Mapping[str, int] | None, link_threshold: float
) -> TypingItem:
    """One item of the OpenEntity/FIGER format, checked; KeptError naming ``path:line`` otherwise."""

    def bad(what: str, fix: str) -> KeptError:
        return KeptError(what, where=path, line=line, fix=fix)

    if not isinstance(record, dict):
        raise bad(
            f"expected a JSON object, found {type(record).__name__}",
            'write {"sent": ..., "start": ..., "end": ..., "labels": [...]}',
        )
    missing = [key for key in ("sent", "start", "end", "labels") if key not in record]
    if missing:
        raise bad(
            f"missing field(s) {', '.join(missing)}",
            'every item needs "sent" (text), "start" and "end" (character offsets) and "labels"',
        )
    sent, start, end, labels = record["sent"], record["start"], record["end"], record["labels"]
    if not isinstance(sent, str) or not sent.strip():
        raise bad('"sent" must be a non-empty string', "give the sentence text")
    offsets_ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
    if not offsets_ok or not 0 <= start < end <= len(sent):
        raise bad(
            f'"start"/"end" ({start!r}, {end!r}) are not a character span of "sent" (length {len(sent)})',
            "give 0 <= start < end <= len(sent), character offsets of the mention",
        )
    if not isinstance(labels, list) or not all(isinstance(label, str) and label.strip() for label in labels):
        raise bad('"labels" must be a list of non-empty strings', 'e.g. "labels": ["person", "politician"]')
    entities: list[tuple[int, int, int]] = []
    if entity_index is not None:
        own = record.get("entity")
        if isinstance(own, str) and own in entity_index:
            entities.append((start, end, int(entity_index[own])))
        links = record.get("ents") or []
        if not isinstance(links, list):
            raise bad('"ents" must be a list of [KB id, start, end, score]', "drop the field or fix its shape")
        for link in links:
            if not (isinstance(link, list) and len(link) >= 3 and all(isinstance(v, int) for v in link[1:3])):
                raise bad(f'"ents" entry {link!r} is not [KB id, start, end, score]', "fix or drop the entry")
            score = float(link[3]) if len(link) > 3 and isinstance(link[3], (int, float)) else 1.0
            kb_id = str(link[0])
            if score > link_threshold and kb_id in entity_index and 0 <= link[1] < link[2] <= len(sent):
                entities.append((link[1], link[2], int(entity_index[kb_id])))
    item_id = record.get("id")
    return TypingItem(
        id=str(item_id) if item_id is not None else f"{path.name}:{line}",
        sent=sent,
        start=start,
        end=end,
        labels=tuple(dict.fromkeys(label.strip() for label in labels)),
        entities=tuple(sorted(set(entities))),
    )


def read_typing_file(
    path: str | Path, *, entity_index: Mapping[str, int] | None = None, link_threshold: float = DEFAULT_LINK_THRESHOLD
) -> list[TypingItem]:
    """Items of an OpenEntity/FIGER-format file: a JSON array (ERNIE-THU) or JSON lines.

    ``entity_index`` (KG entity name -> KG id): linked mentions (``ents`` above ``link_threshold``,
    ``entity``) found in it are kept for fusion models. Bad input raises KeptError naming file:line.
    """
    path = Path(path)
    if not path.is_file():
        raise KeptError(
            "typing data file not found",
            where=path,
            fix="set eval.typing.data to an OpenEntity/FIGER-format JSON or JSON-lines file",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise KeptError(f"not UTF-8 text (byte {error.start})", where=path, fix="save the file as UTF-8") from None
    items = [
        _typing_record(record, path, line, entity_index, link_threshold) for line, record in _json_records(text, path)
    ]
    if not items:
        raise KeptError(
            "no typing items in the file",
            where=path,
            fix='add items {"sent": ..., "start": ..., "end": ..., "labels": [...]}',
        )
    return items
