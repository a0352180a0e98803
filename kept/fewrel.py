"""FewRel-format data: a corpus with gold entity spans, a small KG, and a relation-classification task.

The format (THUNLP FewRel 1.0/2.0): a JSON object ``{relation: [example, ...]}`` (or a JSON list of
examples for unlabelled sets such as ``pubmed_unsupervised.json``), each example::

    {"tokens": ["LEAD", ":", "Cris", "Carter", ...],
     "h": ["Cris Carter", "Q1140141", [[2, 3]]],      # name, KB id, token positions per occurrence
     "t": ["wide receiver", "Q918224", [[6, 7]]]}

Text is the tokens joined by single spaces, so token → character offsets are exact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kept.errors import KeptError

ENTITY_MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")
_SKIP_FILES = {"pid2name.json"}


@dataclass(frozen=True)
class FewRelEntity:
    name: str
    kb_id: str
    positions: tuple[tuple[int, ...], ...]  # token indices of each occurrence

    @property
    def first(self) -> tuple[int, int]:
        """(first token, last token + 1) of the first occurrence."""
        occurrence = self.positions[0]
        return occurrence[0], occurrence[-1] + 1


@dataclass(frozen=True)
class FewRelExample:
    tokens: tuple[str, ...]
    head: FewRelEntity
    tail: FewRelEntity
    relation: str | None  # None for unlabelled sets
    source: str = ""  # file name : index

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    @property
    def item_id(self) -> str:
        """A stable id for per-item results: the source (``file:relation[index]``) when loaded from a
        file, else a hash of the sentence, the head and tail spans and the relation."""
        if self.source:
            return self.source
        key = "\x1f".join([self.text, repr(self.head.first), repr(self.tail.first), self.relation or ""])
        return "sha1:" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]

    def token_offsets(self) -> list[tuple[int, int]]:
        """Character (start, end) of every token in :attr:`text`."""
        offsets, position = [], 0
        for token in self.tokens:
            offsets.append((position, position + len(token)))
            position += len(token) + 1
        return offsets

    def char_span(self, entity: FewRelEntity, occurrence: int = 0) -> tuple[int, int]:
        offsets = self.token_offsets()
        tokens = entity.positions[occurrence]
        return offsets[tokens[0]][0], offsets[tokens[-1]][1]


@dataclass
class FewRelSet:
    examples: list[FewRelExample]
    relation_names: dict[str, str] = field(default_factory=dict)  # id → readable name (pid2name.json)

    @property
    def relations(self) -> list[str]:
        return sorted({e.relation for e in self.examples if e.relation is not None})

    def __len__(self) -> int:
        return len(self.examples)


def _entity(raw: Any, where: str) -> FewRelEntity:
    if not (isinstance(raw, (list, tuple)) and len(raw) == 3 and isinstance(raw[2], list) and raw[2]):
        raise KeptError(
            "entity is not [name, id, [[token positions], ...]]",
            where=where,
            fix="this does not look like FewRel format",
        )
    name, kb_id, positions = raw
    occurrences = []
    for occurrence in positions:
        if not isinstance(occurrence, list) or not occurrence or not all(isinstance(i, int) for i in occurrence):
            raise KeptError("entity positions must be lists of token indices", where=where)
        occurrences.append(tuple(occurrence))
    return FewRelEntity(str(name), str(kb_id), tuple(occurrences))


def _example(raw: Any, relation: str | None, where: str) -> FewRelExample:
    if not isinstance(raw, dict) or "tokens" not in raw or "h" not in raw or "t" not in raw:
        raise KeptError("example lacks 'tokens', 'h' or 't'", where=where, fix="this does not look like FewRel format")
    if not isinstance(raw["tokens"], list) or not all(isinstance(t, str) for t in raw["tokens"]):
        raise KeptError("'tokens' is not a list of strings", where=where, fix="this does not look like FewRel format")
    tokens = tuple(raw["tokens"])
    head, tail = _entity(raw["h"], where + " h"), _entity(raw["t"], where + " t")
    for entity in (head, tail):
        if any(i < 0 or i >= len(tokens) for occ in entity.positions for i in occ):
            raise KeptError(
                f"entity '{entity.name}' points past the {len(tokens)} tokens",
                where=where,
                fix="token positions are 0-based indices into 'tokens'",
            )
    return FewRelExample(tokens, head, tail, relation, where)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json") if p.name not in _SKIP_FILES)
        if not files:
            raise KeptError("no FewRel JSON files in the directory", where=path)
        return files
    if not path.exists():
        raise KeptError("FewRel file not found", where=path, fix="give a FewRel-format JSON file or directory")
    return [path]


def load_fewrel(path: str | Path, *, max_per_relation: int | None = None) -> FewRelSet:
    """Load a FewRel file (``{relation: [examples]}`` or a list) or every such file of a directory."""
    path = Path(path)
    examples: list[FewRelExample] = []
    for file in _files(path):
        try:
            data = json.loads(file.read_bytes().decode("utf-8-sig"))
        except UnicodeDecodeError as error:
            raise KeptError(
                f"not UTF-8 text (byte {error.start})", where=file, fix="re-encode the file as UTF-8"
            ) from None
        except (json.JSONDecodeError, RecursionError) as error:
            raise KeptError(
                f"not valid JSON: {getattr(error, 'msg', 'nested too deeply')}",
                where=file,
                line=getattr(error, "lineno", None),
                fix="FewRel files are one JSON object {relation: [examples]} or a list of examples",
            ) from None
        if isinstance(data, dict):
            for relation, items in data.items():
                if not isinstance(items, list):
                    raise KeptError(f"relation '{relation}' does not map to a list of examples", where=file)
                for index, raw in enumerate(items[:max_per_relation] if max_per_relation else items):
                    examples.append(_example(raw, str(relation), f"{file.name}:{relation}[{index}]"))
        elif isinstance(data, list):
            for index, raw in enumerate(data):
                examples.append(_example(raw, None, f"{file.name}[{index}]"))
        else:
            raise KeptError("expected a JSON object {relation: [examples]} or a list of examples", where=file)
    names_file = (path if path.is_dir() else path.parent) / "pid2name.json"
    names: dict[str, str] = {}
    if names_file.exists():
        from kg import KGError
        from kg.sources import read_relation_labels

        try:
            names = read_relation_labels(names_file)
        except KGError:
            names = {}  # readable relation names are optional: the ids still work
    return FewRelSet(examples, names)


# ------------------------------------------------------------------ as a corpus and a KG


def fewrel_entities(dataset: FewRelSet) -> list[tuple[str, str]]:
    """Unique (kb_id, name) of every head/tail, in first-seen order (their index = KG id)."""
    seen: dict[str, str] = {}
    for example in dataset.examples:
        for entity in (example.head, example.tail):
            seen.setdefault(entity.kb_id, entity.name)
    return list(seen.items())


def fewrel_triples(dataset: FewRelSet) -> list[tuple[str, str, str]]:
    """(head kb id, relation, tail kb id) of every labelled example, deduplicated, in order."""
    seen: dict[tuple[str, str, str], None] = {}
    for example in dataset.examples:
        if example.relation is not None:
            seen.setdefault((example.head.kb_id, example.relation, example.tail.kb_id), None)
    return list(seen)


def fewrel_documents(dataset: FewRelSet, entity_index: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """One document per sentence; every head/tail occurrence becomes a gold entity span.

    ``entity_index`` maps KB ids to KG ids (``entity_id``); ids not in it (or no index) give -1.
    """
    documents = []
    for number, example in enumerate(dataset.examples):
        spans = []
        for entity in (example.head, example.tail):
            for occurrence in range(len(entity.positions)):
                start, end = example.char_span(entity, occurrence)
                spans.append(
                    {
                        "start": start,
                        "end": end,
                        "kind": "entity",
                        "label": entity.kb_id,
                        "entity_id": int(entity_index.get(entity.kb_id, -1)) if entity_index else -1,
                        "source": "gold",
                    }
                )
        spans = _non_overlapping(spans)
        documents.append({"id": f"fewrel-{number}", "title": "", "text": example.text, "spans": spans})
    return documents


def _non_overlapping(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Longer beats shorter, earlier beats later (heads and tails may nest, e.g. 'mhc' in 'mhc ii')."""
    kept: list[dict[str, Any]] = []
    for span in sorted(spans, key=lambda s: (-(s["end"] - s["start"]), s["start"])):
        if all(span["end"] <= other["start"] or other["end"] <= span["start"] for other in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s["start"])


# ------------------------------------------------------------------ as a relation-classification task


@dataclass(frozen=True)
class RelationExample:
    """A sentence with entity markers around head and tail, and its relation label."""

    text: str  # tokens joined by spaces, markers inserted as their own tokens
    label: int
    relation: str
    head_marker: int  # character offset of the head's start marker in ``text``
    tail_marker: int  # character offset of the tail's start marker in ``text``
    words: tuple[str, ...]  # the marked token list
    head_word: int  # index in ``words`` of the head start marker
    tail_word: int


def mark_entities(example: FewRelExample, markers: Sequence[str] = ENTITY_MARKERS) -> tuple[list[str], int, int]:
    """Insert ``[E1] head [/E1]`` and ``[E2] tail [/E2]`` (first occurrences) into the tokens."""
    h_start, h_end = example.head.first
    t_start, t_end = example.tail.first
    inserts = {h_start: [markers[0]], t_start: [markers[2]]}
    closes = {h_end: [markers[1]], t_end: [markers[3]]}
    words: list[str] = []
    head_word = tail_word = -1
    for index in range(len(example.tokens) + 1):
        for marker in closes.get(index, []):
            words.append(marker)
        for marker in inserts.get(index, []):
            if marker == markers[0]:
                head_word = len(words)
            else:
                tail_word = len(words)
            words.append(marker)
        if index < len(example.tokens):
            words.append(example.tokens[index])
    return words, head_word, tail_word


def relation_examples(
    dataset: FewRelSet | Iterable[FewRelExample],
    relations: Sequence[str] | None = None,
    markers: Sequence[str] = ENTITY_MARKERS,
) -> tuple[list[RelationExample], list[str]]:
    """Labelled examples with entity markers, and the label names (sorted relation ids unless given)."""
    examples = dataset.examples if isinstance(dataset, FewRelSet) else list(dataset)
    labelled = [e for e in examples if e.relation is not None]
    if not labelled:
        raise KeptError(
            "the FewRel set has no relation labels",
            where="fewrel",
            fix="use a labelled set such as val_nyt.json (pubmed_unsupervised.json has none)",
        )
    names = list(relations) if relations is not None else sorted({str(e.relation) for e in labelled})
    index = {name: i for i, name in enumerate(names)}
    out = []
    for example in labelled:
        if example.relation not in index:
            continue
        words, head_word, tail_word = mark_entities(example, markers)
        starts, position = [], 0
        for word in words:
            starts.append(position)
            position += len(word) + 1
        out.append(
            RelationExample(
                " ".join(words),
                index[example.relation],
                example.relation,
                starts[head_word],
                starts[tail_word],
                tuple(words),
                head_word,
                tail_word,
            )
        )
    return out, names
