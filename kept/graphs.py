"""The knowledge graph of a run directory: find it, load it, count it, embed it.

``kept kg ...`` (kept/commands/kg.py) and the runner's ``kg`` stage call these.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

EMBEDDINGS_FILE = Path("kg") / "embeddings.safetensors"
METRICS_FILE = Path("kg") / "kg_metrics.json"


def kg_dir(path: str | Path) -> Path:
    """The kg/ directory of a run directory, or ``path`` itself when it is a kg/ directory."""
    from kg import KGError

    path = Path(path)
    if (path / "kg" / "entities.tsv").exists():
        return path / "kg"
    if (path / "entities.tsv").exists():
        return path
    raise KGError(
        "no kg/entities.tsv here",
        where=path,
        fix="pass a run directory made by `kept data ...`, a kg/ directory, or a triples file",
    )


def load_graph(path: str | Path, *, strict: bool = False) -> Any:
    """A KnowledgeGraph from a run directory, a kg/ directory, or a triples TSV/CSV file."""
    from kg import KGError, KnowledgeGraph, load_triples

    path = Path(path)
    if path.is_file():
        return load_triples(path, strict=strict)
    if not path.exists():
        raise KGError("not found", where=path, fix="pass a run directory, a kg/ directory or a triples file")
    return KnowledgeGraph.load(kg_dir(path))


def kg_stats(path: str | Path) -> dict[str, Any]:
    """``KnowledgeGraph.stats().to_dict()`` of a run dir, kg/ dir or triples file."""
    return load_graph(path).stats().to_dict()


def embed_run_dir(run_dir: str | Path, config: Any = None, *, dtype: str | None = None) -> dict[str, Any]:
    """Train KG embeddings for ``run_dir/kg`` and write kg/embeddings.safetensors and kg/kg_metrics.json.

    ``config`` is a ``kg.EmbeddingConfig``, a mapping of its fields, or None (TransE, dim 100).
    ``dtype`` (float32/float16/bfloat16) is the storage type of the exported tables. Returns the metrics.
    """
    from kg import EmbeddingConfig, KnowledgeGraph, save_embeddings, train_embeddings
    from kg._io import atomic_write_json

    directory = kg_dir(run_dir)
    if config is None:
        config = EmbeddingConfig()
    elif isinstance(config, Mapping):
        config = EmbeddingConfig(**config)  # unknown keys and bad values: a KGError naming the field
    graph = KnowledgeGraph.load(directory)
    split = current_split(graph, directory, config)
    result = train_embeddings(graph, config, split=split)
    path = save_embeddings(result, directory / "embeddings.safetensors", dtype=dtype)
    metrics = {**result.metrics, "dtype": dtype or "float32", "embeddings": str(path)}
    atomic_write_json(directory / "kg_metrics.json", metrics)
    return metrics


def current_split(graph: Any, directory: Path, config: Any) -> Any:
    """The KG's train/test split (seeded, so re-running gives the same one), saved before anything is
    embedded: the probe and link prediction read its test triples. With no split the old split files are
    removed so that nothing reads a stale held-out set."""
    from kg.embeddings import make_split
    from kg.split import SPLIT_FILES, SPLIT_INFO_FILE, save_split

    split = make_split(graph, config)
    if split is None:
        for name in (*SPLIT_FILES.values(), SPLIT_INFO_FILE):
            (directory / name).unlink(missing_ok=True)
        return None
    save_split(split, graph, directory)
    return split
