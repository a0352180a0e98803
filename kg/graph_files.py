"""The ``kg/`` directory format of a :class:`~kg.graph.KnowledgeGraph`: entities.tsv (id, name, label,
aliases joined by ``|``), relations.tsv (id, name, label), triples.tsv (head, relation, tail names), and
optionally metadata.json and stats.json. Writes are atomic; reading checks every row and names
file:line on errors. :meth:`KnowledgeGraph.save`/:meth:`KnowledgeGraph.load` call these."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kg._io import atomic_write_json, clean_cell, read_text, write_tsv
from kg.errors import KGError

if TYPE_CHECKING:  # pragma: no cover
    from kg.graph import KnowledgeGraph

ENTITIES_FILE = "entities.tsv"
RELATIONS_FILE = "relations.tsv"
TRIPLES_FILE = "triples.tsv"
STATS_FILE = "stats.json"
METADATA_FILE = "metadata.json"
ALIAS_SEPARATOR = "|"


def save_graph(graph: KnowledgeGraph, directory: str | Path, *, write_stats: bool = True) -> Path:
    """Write entities.tsv, relations.tsv, triples.tsv (+ stats.json, metadata.json) atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for what, names in (("entity", graph.entities), ("relation", graph.relations)):
        for name in names:
            if "\t" in name or "\n" in name or "\r" in name:
                raise KGError(
                    f"{what} name {name!r} contains a tab or newline",
                    where=f"{what} names",
                    fix="names are TSV cells: replace tabs/newlines before saving",
                )
    write_tsv(
        directory / ENTITIES_FILE,
        ("id", "name", "label", "aliases"),
        (
            (
                i,
                name,
                clean_cell(label),
                ALIAS_SEPARATOR.join(clean_cell(a).replace(ALIAS_SEPARATOR, " ") for a in aliases),
            )
            for i, (name, label, aliases) in enumerate(zip(graph.entities, graph.entity_labels, graph.entity_aliases))
        ),
    )
    write_tsv(
        directory / RELATIONS_FILE,
        ("id", "name", "label"),
        ((i, name, clean_cell(label)) for i, (name, label) in enumerate(zip(graph.relations, graph.relation_labels))),
    )
    write_tsv(directory / TRIPLES_FILE, ("head", "relation", "tail"), graph.triple_names())
    if graph.metadata:
        atomic_write_json(directory / METADATA_FILE, graph.metadata)
    if write_stats:
        atomic_write_json(directory / STATS_FILE, graph.stats().to_dict())
    return directory


def read_graph_files(directory: str | Path) -> dict[str, Any]:
    """The :class:`KnowledgeGraph` constructor arguments of a ``kg/`` directory (or a run directory
    holding ``kg/``) written by :func:`save_graph`: ``entities``, ``relations``, ``triples`` [N, 3] and
    the keyword arguments ``entity_labels``, ``entity_aliases``, ``relation_labels``, ``metadata``."""
    directory = Path(directory)
    if not (directory / ENTITIES_FILE).exists() and (directory / "kg" / ENTITIES_FILE).exists():
        directory = directory / "kg"
    for name in (ENTITIES_FILE, RELATIONS_FILE, TRIPLES_FILE):
        if not (directory / name).exists():
            raise KGError(
                f"missing {name}",
                where=directory,
                fix="pass a kg/ directory written by KnowledgeGraph.save (or `kept data ...`)",
            )
    entities: list[str] = []
    labels: list[str] = []
    aliases: list[list[str]] = []
    for line_no, cells in _rows(directory / ENTITIES_FILE, min_cols=2, max_cols=4, header="id", require_header=True):
        _check_id(cells[0], len(entities), directory / ENTITIES_FILE, line_no)
        entities.append(cells[1])
        labels.append(cells[2] if len(cells) > 2 and cells[2] else cells[1])
        aliases.append(split_aliases(cells[3]) if len(cells) > 3 else [])
    relations: list[str] = []
    relation_labels: list[str] = []
    for line_no, cells in _rows(directory / RELATIONS_FILE, min_cols=2, max_cols=3, header="id", require_header=True):
        _check_id(cells[0], len(relations), directory / RELATIONS_FILE, line_no)
        relations.append(cells[1])
        relation_labels.append(cells[2] if len(cells) > 2 and cells[2] else cells[1])
    entity_index = {name: i for i, name in enumerate(entities)}
    relation_index = {name: i for i, name in enumerate(relations)}
    rows: list[tuple[int, int, int]] = []
    path = directory / TRIPLES_FILE
    for line_no, names in read_triple_rows(path):
        try:
            rows.append((entity_index[names[0]], relation_index[names[1]], entity_index[names[2]]))
        except KeyError as error:
            raise KGError(
                f"name {error.args[0]!r} is not in entities.tsv/relations.tsv",
                where=path,
                line=line_no,
                fix="the three files must come from the same save; re-create the kg/ directory",
            ) from None
    metadata = {}
    if (directory / METADATA_FILE).exists():
        metadata = json.loads(read_text(directory / METADATA_FILE))
    triples = torch.tensor(rows, dtype=torch.long) if rows else torch.empty((0, 3), dtype=torch.long)
    return {
        "entities": entities,
        "relations": relations,
        "triples": triples,
        "entity_labels": labels,
        "entity_aliases": aliases,
        "relation_labels": relation_labels,
        "metadata": metadata,
    }


def _check_id(cell: str, expected: int, path: Path, line: int) -> None:
    if cell != str(expected):
        raise KGError(
            f"id {cell!r} where {expected} was expected (ids are 0..n-1 in file order)",
            where=path,
            line=line,
            fix="do not reorder or edit the id column; re-create the file with KnowledgeGraph.save",
        )


def read_triple_rows(path: Path) -> Iterable[tuple[int, tuple[str, str, str]]]:
    """``(line_number, (head, relation, tail))`` names of a triples file written by :meth:`KnowledgeGraph.save`."""
    for line_no, cells in _rows(path, min_cols=3, max_cols=3, header="head"):
        yield line_no, (cells[0], cells[1], cells[2])


def split_aliases(cell: str) -> list[str]:
    """The aliases of an entities.tsv cell, as :meth:`KnowledgeGraph.save` joined them."""
    return [alias for alias in cell.split(ALIAS_SEPARATOR) if alias]


def _rows(
    path: Path, *, min_cols: int, max_cols: int, header: str, require_header: bool = False
) -> Iterable[tuple[int, list[str]]]:
    text = read_text(path)
    for line_no, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        cells = line.split("\t")
        if line_no == 1 and cells[0] == header:
            continue
        if line_no == 1 and require_header:  # an id file without its header would read as shifted rows
            raise KGError(
                f"expected a header row starting with '{header}', found {cells}",
                where=path,
                line=1,
                fix="re-create the kg/ directory with KnowledgeGraph.save (or the kg step)",
            )
        if not min_cols <= len(cells) <= max_cols:
            raise KGError(
                f"{len(cells)} tab-separated columns, expected {min_cols}"
                f"{'' if min_cols == max_cols else f'-{max_cols}'}",
                where=path,
                line=line_no,
                fix="fix the row (names must not contain tabs)",
            )
        if any(not cells[i] for i in range(min(len(cells), 2 if min_cols < 3 else 3))):
            raise KGError("empty field", where=path, line=line_no, fix="fill in the field or delete the row")
        yield line_no, cells
