"""Loading knowledge graphs: triple files (TSV/CSV), label and alias files, PyKEEN's bundled sets."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from kg._io import read_text
from kg.errors import KGError
from kg.graph import ALIAS_SEPARATOR, KnowledgeGraph
from kg.report import LoadReport

HEADER_WORDS = {
    "head",
    "relation",
    "tail",
    "h",
    "r",
    "t",
    "subject",
    "predicate",
    "object",
    "s",
    "p",
    "o",
    "source",
    "target",
    "rel",
    "relation_name",
    "head_name",
    "tail_name",
    "edge",
    "from",
    "to",
    "head_label",
    "tail_label",
    "relation_label",
    "entity",
    "name",
    "label",
    "alias",
    "id",
    "entity_name",
}
PYKEEN_BUNDLED = ("nations", "kinships", "umls")


def check_delimiter(delimiter: str) -> str:
    """A column separator: one character that is not a line break or a quote; KGError naming it otherwise."""
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise KGError(
            f"the column separator {delimiter!r} is not one character (other than a quote or line break)",
            where="delimiter",
            fix="give one character, e.g. --delimiter ',' or a tab: --delimiter $'\\t'",
        )
    return delimiter


def _delimiter_for(path: Path, delimiter: str | None, first_line: str) -> str:
    if delimiter is not None:
        return delimiter
    suffix = "".join(path.suffixes).lower()
    if suffix.endswith(".csv"):
        return ","
    if suffix.endswith((".tsv", ".txt", ".tab")):
        return "\t"
    return "\t" if "\t" in first_line or "," not in first_line else ","


def iter_rows(
    path: str | Path,
    *,
    delimiter: str | None = None,
    header: bool | None = None,
    encoding: str = "utf-8",
    columns: int | Sequence[int] | None = None,
    header_words: set[str] = HEADER_WORDS,
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, cells)`` of a delimited file; blank lines and ``#`` comments are skipped.

    ``header=None`` detects a header row (all cells are column words such as head/relation/tail).
    ``columns``: the exact column count (int) or a tuple of allowed counts; a row with another count
    or an empty cell raises KGError naming the file and line.
    """
    path = Path(path)
    if delimiter is not None:
        check_delimiter(delimiter)
    text = read_text(path, encoding)
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    delim = _delimiter_for(path, delimiter, first)
    allowed = (columns,) if isinstance(columns, int) else tuple(columns) if columns is not None else None
    if delim == "\t":
        lines: Iterator[tuple[int, list[str]]] = (
            (n, line.rstrip("\r").split("\t")) for n, line in enumerate(text.split("\n"), start=1)
        )
    else:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
        lines = ((reader.line_num, row) for row in reader)
    seen_content = False
    for line_no, cells in lines:
        if not cells or (len(cells) == 1 and not cells[0].strip()) or cells[0].startswith("#"):
            continue
        cells = [c.strip() for c in cells]
        if not seen_content:
            seen_content = True
            is_header = (
                header if header is not None else all(c.lower().replace(" ", "_") in header_words for c in cells)
            )
            if is_header:
                continue
        if allowed is not None and len(cells) not in allowed:
            expected = " or ".join(str(a) for a in allowed)
            sep = "tab" if delim == "\t" else repr(delim)
            raise KGError(
                f"{len(cells)} {sep}-separated columns, expected {expected}",
                where=path,
                line=line_no,
                fix=f"fix the row; pass delimiter=... if the file is not {sep}-separated",
            )
        for index, cell in enumerate(cells):
            if not cell:
                raise KGError(
                    f"empty field in column {index + 1}",
                    where=path,
                    line=line_no,
                    fix="fill in the field or delete the row",
                )
        yield line_no, cells


def load_triples(
    path: str | Path,
    *,
    delimiter: str | None = None,
    header: bool | None = None,
    labels: str | Path | None = None,
    aliases: str | Path | None = None,
    strict: bool = False,
    encoding: str = "utf-8",
) -> KnowledgeGraph:
    """Read (head, relation, tail) rows from a TSV/CSV file into a :class:`KnowledgeGraph`.

    Duplicate triples are skipped and counted in ``graph.load_report`` (``strict=True`` raises instead).
    Entity and relation ids follow first appearance. Optional label/alias files are applied after.
    """
    path = Path(path)
    report = LoadReport(path=str(path))
    entity_index: dict[str, int] = {}
    relation_index: dict[str, int] = {}
    rows: list[tuple[int, int, int]] = []
    seen: dict[tuple[int, int, int], int] = {}
    for line_no, (head, relation, tail) in iter_rows(
        path, delimiter=delimiter, header=header, encoding=encoding, columns=3
    ):
        report.rows += 1
        row = (
            entity_index.setdefault(head, len(entity_index)),
            relation_index.setdefault(relation, len(relation_index)),
            entity_index.setdefault(tail, len(entity_index)),
        )
        if row in seen:
            if strict:
                raise KGError(
                    f"duplicate triple ({head}, {relation}, {tail}) (first on line {seen[row]})",
                    where=path,
                    line=line_no,
                    fix="delete the repeated row, or load without strict to skip duplicates",
                )
            report.skip("duplicate triple", line_no)
            continue
        seen[row] = line_no
        rows.append(row)
    if not rows:
        raise KGError("no triples", where=path, fix="the file needs rows of head, relation, tail")
    report.kept = len(rows)
    graph = KnowledgeGraph(
        list(entity_index), list(relation_index), torch.tensor(rows, dtype=torch.long), metadata={"source": str(path)}
    )
    graph.load_report = report
    if labels is not None:
        graph.load_report = report.merge(apply_labels(graph, labels, strict=strict, encoding=encoding))
    if aliases is not None:
        graph.load_report = graph.load_report.merge(apply_aliases(graph, aliases, strict=strict, encoding=encoding))
    return graph


def _known_rows(
    graph: KnowledgeGraph, path: Path, report: LoadReport, strict: bool, delimiter: str | None, encoding: str
) -> Iterator[tuple[int, int, str]]:
    """``(line_number, entity_id, value)`` of the ``name<TAB>value`` rows whose entity is in ``graph``.

    Every row is counted in ``report``; a row for an unknown entity is skipped and counted (strict: KGError).
    """
    for line_no, (name, value) in iter_rows(path, delimiter=delimiter, encoding=encoding, columns=2):
        report.rows += 1
        if graph.has_entity(name):
            yield line_no, graph.entity_id(name), value
            continue
        if strict:
            raise KGError(
                f"entity {name!r} is not in the graph",
                where=path,
                line=line_no,
                fix="add a triple that uses it, fix the name, or load without strict to skip such rows",
            )
        report.skip("unknown entity", line_no)


def apply_labels(
    graph: KnowledgeGraph,
    path: str | Path,
    *,
    strict: bool = False,
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> LoadReport:
    """Set display labels from ``name<TAB>label`` rows; rows for unknown entities are skipped and counted."""
    path = Path(path)
    report = LoadReport(path=str(path))
    for _, entity_id, label in _known_rows(graph, path, report, strict, delimiter, encoding):
        graph.entity_labels[entity_id] = label
        report.kept += 1
    return report


def apply_aliases(
    graph: KnowledgeGraph,
    path: str | Path,
    *,
    strict: bool = False,
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> LoadReport:
    """Add aliases from ``name<TAB>alias`` rows (an alias cell may hold several, ``|``-separated).

    Rows for unknown entities and repeated aliases are skipped and counted (strict: unknown raises).
    """
    path = Path(path)
    report = LoadReport(path=str(path))
    for line_no, entity_id, cell in _known_rows(graph, path, report, strict, delimiter, encoding):
        existing = graph.entity_aliases[entity_id]
        added = False
        for alias in (a.strip() for a in cell.split(ALIAS_SEPARATOR)):
            if alias and alias not in existing:
                existing.append(alias)
                added = True
        if added:
            report.kept += 1
        else:
            report.skip("repeated alias", line_no)
    return report


def read_relation_labels(path: str | Path, *, delimiter: str | None = None, encoding: str = "utf-8") -> dict[str, str]:
    """Relation name -> readable label from ``name<TAB>label`` rows, or from JSON: ``{name: label}`` or
    FewRel's ``pid2name.json`` ``{name: [label, description]}``."""
    import json

    path = Path(path)
    if path.suffix.lower() != ".json":
        return {name: label for _, (name, label) in iter_rows(path, delimiter=delimiter, encoding=encoding, columns=2)}
    try:
        data = json.loads(read_text(path, encoding))
    except json.JSONDecodeError as error:
        raise KGError(
            f"not valid JSON ({error.msg})",
            where=path,
            line=error.lineno,
            fix="fix the file, or give a TSV of name<TAB>label rows",
        ) from None
    if not isinstance(data, dict):
        raise KGError(
            "expected a JSON object {relation: label} or {relation: [label, description]}",
            where=path,
            fix="write the relation labels as a JSON object",
        )
    labels: dict[str, str] = {}
    for name, value in data.items():
        label = value[0] if isinstance(value, list) and value else value
        if not isinstance(label, str) or not label.strip():
            raise KGError(
                f"relation {name!r} has no label (got {value!r})",
                where=path,
                fix="give a string, or a list whose first item is the label",
            )
        labels[str(name)] = label.strip()
    return labels


def load_pykeen_dataset(name: str) -> KnowledgeGraph:
    """One of PyKEEN's bundled sets (nations, kinships, umls; no download) with PyKEEN's own ids.

    Triples are training, then validation, then testing; ``metadata["split_sizes"]`` keeps the
    predefined split so embeddings can be evaluated exactly as ``pipeline(dataset=name)`` does.
    """
    key = name.strip().lower()
    if key not in PYKEEN_BUNDLED:
        raise KGError(
            f"unknown PyKEEN bundled dataset {name!r}",
            where="dataset",
            fix=f"use one of {', '.join(PYKEEN_BUNDLED)} (they ship inside the pykeen wheel)",
        )
    from pykeen.datasets import get_dataset

    dataset = get_dataset(dataset=key)
    # the bundled sets are labelled TriplesFactory objects with all three parts
    entity_to_id: dict[str, int] = dataset.training.entity_to_id  # type: ignore[attr-defined]
    relation_to_id: dict[str, int] = dataset.training.relation_to_id  # type: ignore[attr-defined]
    entities = sorted(entity_to_id, key=entity_to_id.__getitem__)
    relations = sorted(relation_to_id, key=relation_to_id.__getitem__)
    parts = [
        factory.mapped_triples
        for factory in (dataset.training, dataset.validation, dataset.testing)
        if factory is not None
    ]
    triples = torch.cat(parts).long()
    return KnowledgeGraph(
        entities,
        relations,
        triples,
        metadata={"source": f"pykeen:{key}", "split_sizes": [int(p.shape[0]) for p in parts]},
    )
