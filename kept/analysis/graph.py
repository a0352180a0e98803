"""A run's knowledge graph (``kg/``): the graph itself, its tables as pandas frames, and the KG
embedding's link-prediction figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kept.analysis.files import existing_dir, read_json_object
from kept.errors import KeptError


def load_kg_metrics(run_dir: str | Path) -> dict[str, Any]:
    """``kg/kg_metrics.json`` (link prediction of the KG embedding, written by the kg embed step)."""
    path = existing_dir(run_dir) / "kg" / "kg_metrics.json"
    return read_json_object(
        path, "KG metrics", "run the kg embed step (`kept run` or `kept kg embed`)", "re-run the kg embed step"
    )


def _read_kg(kg_dir: Path) -> Any:
    """``KnowledgeGraph.load`` (the one reader of the kg/ tables), its errors as KeptError."""
    from kg import KGError, KnowledgeGraph

    for name in ("entities.tsv", "relations.tsv", "triples.tsv"):
        if not (kg_dir / name).is_file():
            raise KeptError("KG table not found", where=kg_dir / name, fix="run the kg step (`kept run CONFIG`)")
    try:
        return KnowledgeGraph.load(kg_dir)
    except KGError as error:
        raise KeptError(error.what, where=error.where, line=error.line, fix="re-run the kg step") from None


def load_kg_tables(run_dir: str | Path) -> dict[str, Any]:
    """The KG of a run as pandas DataFrames: ``entities`` (id, name, label, aliases list),
    ``relations`` (id, name, label) and ``triples`` (head, relation, tail names)."""
    import pandas as pd

    graph = _read_kg(existing_dir(run_dir) / "kg")
    entity_frame = pd.DataFrame(
        {
            "id": range(graph.num_entities),
            "name": graph.entities,
            "label": graph.entity_labels,
            "aliases": graph.entity_aliases,
        }
    )
    relation_frame = pd.DataFrame(
        {"id": range(graph.num_relations), "name": graph.relations, "label": graph.relation_labels}
    )
    return {
        "entities": entity_frame,
        "relations": relation_frame,
        "triples": pd.DataFrame(graph.triple_names(), columns=["head_name", "relation_name", "tail_name"]),
    }


def load_kg(run_dir: str | Path) -> Any:
    """The run's KG as a ``kg.KnowledgeGraph`` (``KnowledgeGraph.load(run_dir / "kg")``)."""
    from kg import KnowledgeGraph

    path = existing_dir(run_dir) / "kg"
    if not (path / "entities.tsv").is_file():
        raise KeptError("KG not found", where=path / "entities.tsv", fix="run the kg step (`kept run CONFIG`)")
    return KnowledgeGraph.load(path)
