"""KG link prediction: PyKEEN's rank-based MRR and hits@k of the run's KG embedding.

Read from ``kg/kg_metrics.json`` (written by the kg embed step). With ``recompute`` the embedding
is retrained with the run's embedding settings and evaluated again (slow; PyKEEN does the ranking).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from kept.analysis import finite, load_kg_metrics

KEYS = ("mrr", "hits_at_1", "hits_at_3", "hits_at_10")


def _pick(data: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in data.items():
        if key in KEYS or key.startswith("hits_at_") or key in ("mean_rank", "adjusted_mean_rank",
                                                                "adjusted_mean_rank_index"):
            if finite(value):
                result[key] = float(value)
        elif key in ("model", "dim", "epochs", "seed", "evaluation", "split", "num_testing", "num_entities",
                     "num_relations"):
            result[key] = value
    return result


def evaluate_linkpred(run_dir: str | Path, *, recompute: bool = False, embedding_config: Any = None
                      ) -> dict[str, Any]:
    """Link-prediction figures of the run's KG embedding; a ``skipped`` note when there is none.

    ``recompute``: train the embedding again with ``embedding_config`` (a ``kg.EmbeddingConfig``, the
    run's ``kg`` section) and let PyKEEN rank the test triples; nothing in the run directory changes.
    """
    run_dir = Path(run_dir)
    path = run_dir / "kg" / "kg_metrics.json"
    if recompute:
        return _recompute(run_dir, embedding_config)
    if not path.is_file():
        return {"skipped": f"{path} not found: the run has no KG embedding (run the kg embed step, "
                           "or set eval.linkpred.recompute: true)"}
    result = _pick(load_kg_metrics(run_dir))
    missing = [k for k in ("mrr", "hits_at_1") if k not in result]
    if missing:
        from kept.errors import KeptError

        raise KeptError(f"KG metrics lack {', '.join(missing)}", where=path, fix="re-run the kg embed step")
    result["source"] = "kg/kg_metrics.json"
    return result


def _recompute(run_dir: Path, embedding_config: Any) -> dict[str, Any]:
    from kg import EmbeddingConfig, train_embeddings

    from kept.analysis import load_kg

    graph = load_kg(run_dir)
    result = train_embeddings(graph, embedding_config if embedding_config is not None else EmbeddingConfig())
    picked = _pick(dict(result.metrics))
    picked["source"] = "recomputed"
    return picked
