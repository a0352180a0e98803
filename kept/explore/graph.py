"""The knowledge graph: overview, degrees, relations, neighbourhoods, entity embeddings, link prediction."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kept import analysis
from kept.errors import KeptError
from kept.explore._common import _figure
from kept.explore.runs import RunSet


def kg_overview(data_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The run's ``kg.KnowledgeGraph`` and its statistics (kg/stats.json, else computed)."""
    import json

    data_dir = Path(data_dir)
    graph = analysis.load_kg(data_dir)
    path = data_dir / "kg" / "stats.json"
    stats = None
    if path.is_file():
        try:
            stats = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            stats = None
    if not isinstance(stats, dict) or "num_entities" not in stats:
        stats = graph.stats().to_dict()
    return graph, stats


def degree_figure(stats: Mapping[str, Any]) -> Any:
    """Bars of the degree histogram (entities per degree bucket)."""
    histogram = stats.get("degree_histogram") or {}
    figure, axes = _figure(6, 3)
    axis = axes[0][0]
    axis.bar(range(len(histogram)), list(histogram.values()), color="#4C72B0")
    axis.set_xticks(range(len(histogram)))
    axis.set_xticklabels(list(histogram), rotation=30)
    axis.set_xlabel("degree (in + out)")
    axis.set_ylabel("entities")
    axis.set_title("degree distribution")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def relation_frequency_figure(stats: Mapping[str, Any], top: int = 20) -> Any:
    """Horizontal bars: triples per relation (the ``top`` most frequent)."""
    frequencies = list((stats.get("relation_frequencies") or {}).items())[:top]
    figure, axes = _figure(6, 0.3 * max(len(frequencies), 3) + 1)
    axis = axes[0][0]
    axis.barh(range(len(frequencies)), [c for _, c in frequencies], color="#55A868")
    axis.set_yticks(range(len(frequencies)))
    axis.set_yticklabels([r for r, _ in frequencies], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("triples")
    axis.set_title(f"relations (top {len(frequencies)})")
    figure.tight_layout()
    return figure


def neighbourhood_figure(graph: Any, entity: str | int, hops: int = 1, max_entities: int = 30, seed: int = 0) -> Any:
    """The entity's ``hops``-neighbourhood drawn with networkx (labels = entity labels, edges = relations)."""
    import networkx as nx

    hood = graph.neighbourhood(entity, hops=hops, max_entities=max_entities)
    labels_of = graph.entity_labels
    view = nx.MultiDiGraph()
    view.add_nodes_from(hood.entities)
    edge_labels: dict[tuple[int, int], str] = {}
    for head, relation, tail in hood.triples.tolist():
        view.add_edge(head, tail)
        name = graph.relations[relation]
        key = (head, tail)
        edge_labels[key] = (
            f"{edge_labels[key]}, {name}"
            if key in edge_labels and name not in edge_labels[key]
            else edge_labels.get(key, name)
        )
    positions = nx.spring_layout(nx.Graph(view), seed=seed)
    figure, axes = _figure(8, 6)
    axis = axes[0][0]
    colors = ["#ef476f" if node == hood.center else "#8ecae6" for node in view.nodes]
    nx.draw_networkx_nodes(view, positions, ax=axis, node_color=colors, node_size=500)
    nx.draw_networkx_edges(
        view, positions, ax=axis, arrows=True, arrowsize=12, edge_color="#888888", connectionstyle="arc3,rad=0.08"
    )
    nx.draw_networkx_labels(
        view, positions, ax=axis, font_size=8, labels={n: (labels_of[n] or graph.entities[n])[:28] for n in view.nodes}
    )
    nx.draw_networkx_edge_labels(view, positions, ax=axis, font_size=6, edge_labels=edge_labels)
    axis.set_title(
        f"{labels_of[hood.center] or graph.entities[hood.center]}: {hops}-hop neighbourhood "
        f"({len(hood.entities)} entities, {len(hood.triples)} triples)"
    )
    axis.axis("off")
    figure.tight_layout()
    return figure


def entity_projection(data_dir: str | Path, max_entities: int | None = None) -> tuple[Any, list[float]]:
    """2-D PCA (numpy SVD of the centred table) of ``kg/embeddings.safetensors``'s entity embeddings.

    Returns a DataFrame (id, name, label, degree, x, y) and the explained-variance ratio of the two axes.
    """
    import numpy as np
    import pandas as pd

    from kg import load_embeddings

    data_dir = Path(data_dir)
    path = data_dir / "kg" / "embeddings.safetensors"
    if not path.is_file():
        raise KeptError("KG embeddings not found", where=path, fix="run the kg embed step (`kept run CONFIG`)")
    table = load_embeddings(path, mmap=False).entity_embeddings.float().numpy()
    graph = analysis.load_kg(data_dir)
    count = min(len(table), graph.num_entities) if max_entities is None else min(len(table), max_entities)
    matrix = table[:count].astype(np.float64)
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2] if vt.shape[0] >= 2 else np.vstack([vt, np.zeros_like(vt)])[:2]
    coords = centred @ components.T
    variance = singular**2
    ratio = (variance[:2] / variance.sum()).tolist() if variance.sum() > 0 else [math.nan, math.nan]
    degree = graph.degrees().tolist()
    frame = pd.DataFrame(
        {
            "id": range(count),
            "name": graph.entities[:count],
            "label": graph.entity_labels[:count],
            "degree": degree[:count],
            "x": coords[:, 0],
            "y": coords[:, 1],
        }
    )
    return frame, (ratio + [math.nan, math.nan])[:2]


def projection_figure(
    frame: Any, variance: Sequence[float] = (), annotate: int = 15, highlight: Iterable[str] = ()
) -> Any:
    """Scatter of the 2-D projection, point size by degree; the ``annotate`` highest-degree entities
    and the ``highlight`` names are labelled."""
    figure, axes = _figure(7, 5.5)
    axis = axes[0][0]
    sizes = 6 + 4 * frame["degree"].clip(upper=50)
    axis.scatter(frame["x"], frame["y"], s=sizes, alpha=0.5, color="#4C72B0", linewidths=0)
    wanted = set(highlight)
    labelled = frame.nlargest(annotate, "degree") if annotate else frame.iloc[:0]
    for _, row in frame[frame["name"].isin(wanted) | frame.index.isin(labelled.index)].iterrows():
        axis.annotate(
            str(row["label"] or row["name"])[:24],
            (row["x"], row["y"]),
            fontsize=7,
            color="#d62828" if row["name"] in wanted else "black",
        )
    axis.set_xlabel(
        f"PC1 ({variance[0]:.0%} of variance)" if len(variance) > 0 and not math.isnan(variance[0]) else "PC1"
    )
    axis.set_ylabel(
        f"PC2 ({variance[1]:.0%} of variance)" if len(variance) > 1 and not math.isnan(variance[1]) else "PC2"
    )
    axis.set_title(f"entity embeddings, PCA ({len(frame)} entities)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def linkpred_table(runs: RunSet) -> Any:
    """Link-prediction figures: kg/kg_metrics.json of the data, and each run's eval linkpred section.
    Rows that are skipped carry the reason in ``note``."""
    import pandas as pd

    columns = ["source", "model", "mrr", "hits_at_1", "hits_at_3", "hits_at_10", "note"]
    rows = []
    if runs.data_dir is not None:
        try:
            metrics = analysis.load_kg_metrics(runs.data_dir)
            rows.append(
                {
                    "source": "kg/kg_metrics.json",
                    "model": metrics.get("model"),
                    **{k: metrics.get(k) for k in columns[2:6]},
                    "note": "",
                }
            )
        except KeptError as error:
            rows.append({"source": "kg/kg_metrics.json", "note": str(error)})
    for label, run_dir in runs.runs.items():
        section = (analysis.load_metrics(run_dir).get("metrics") or {}).get("linkpred") or {}
        if "skipped" in section:
            rows.append({"source": f"{label}: eval linkpred", "note": section["skipped"]})
        elif section:
            rows.append(
                {
                    "source": f"{label}: eval linkpred",
                    "model": section.get("model"),
                    **{k: section.get(k) for k in columns[2:6]},
                    "note": section.get("source", ""),
                }
            )
    return pd.DataFrame(rows, columns=columns).set_index("source")
