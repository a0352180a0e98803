"""KG link prediction: PyKEEN's rank-based MRR and hits@k of the run's KG embedding.

Read from ``kg/kg_metrics.json`` (written by the kg embed step). With ``recompute`` the embedding
is retrained with the run's embedding settings and evaluated again (slow; PyKEEN does the ranking).

A model that trained its entity table (``model.freeze_entity_table: false``, with or without the joint KG
loss of :mod:`kept.joint_kg`) no longer uses the KG embedding's vectors: its figures are then ranked from
the saved model's own table, with its KG head's relation embeddings (else the KG embedding's), by PyKEEN's
evaluator on the KG's test triples, filtered, both sides, realistic ranks, as the kg embed step ranks them
(:func:`model_linkpred`); ``kg_embedding_mrr`` keeps the KG embedding's figure beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kept.analysis import load_kg_metrics
from kept.analysis.files import finite

KEYS = ("mrr", "hits_at_1", "hits_at_3", "hits_at_10")


def _pick(data: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in data.items():
        if (
            key in KEYS
            or key.startswith("hits_at_")
            or key in ("mean_rank", "adjusted_mean_rank", "adjusted_mean_rank_index")
        ):
            if finite(value):
                result[key] = float(value)
        elif key in (
            "model",
            "dim",
            "epochs",
            "seed",
            "evaluation",
            "split",
            "num_testing",
            "num_entities",
            "num_relations",
        ):
            result[key] = value
    return result


def evaluate_linkpred(run_dir: str | Path, *, recompute: bool = False, embedding_config: Any = None) -> dict[str, Any]:
    """Link-prediction figures of the run's KG embedding; a ``skipped`` note when there is none.

    ``recompute``: train the embedding again with ``embedding_config`` (a ``kg.EmbeddingConfig``, the
    run's ``kg`` section) and let PyKEEN rank the test triples; nothing in the run directory changes.
    """
    run_dir = Path(run_dir)
    path = run_dir / "kg" / "kg_metrics.json"
    if recompute:
        return _recompute(run_dir, embedding_config)
    own = model_linkpred(run_dir)
    if own is not None:
        if path.is_file():
            own["kg_embedding_mrr"] = _pick(load_kg_metrics(run_dir)).get("mrr")
        return own
    if not path.is_file():
        return {
            "skipped": f"{path} not found: the run has no KG embedding (run the kg embed step, "
            "or set eval.linkpred.recompute: true)"
        }
    result = _pick(load_kg_metrics(run_dir))
    missing = [k for k in ("mrr", "hits_at_1") if k not in result]
    if missing:
        from kept.errors import KeptError

        raise KeptError(f"KG metrics lack {', '.join(missing)}", where=path, fix="re-run the kg embed step")
    result["source"] = "kg/kg_metrics.json"
    return result


def _recompute(run_dir: Path, embedding_config: Any) -> dict[str, Any]:
    from kept.analysis import load_kg
    from kg import EmbeddingConfig, train_embeddings

    graph = load_kg(run_dir)
    result = train_embeddings(graph, embedding_config if embedding_config is not None else EmbeddingConfig())
    picked = _pick(dict(result.metrics))
    picked["source"] = "recomputed"
    return picked


#: Tensor names of a trained entity table and of the joint KG head's relations in a saved KeptForPreTraining.
TABLE_KEY = "kept.entity_embeddings.weight"
RELATIONS_KEY = "kg_head.relation_embeddings.weight"
#: KG embedding models whose interaction the model-side ranking has (PyKEEN interaction names).
INTERACTIONS = {"transe": "TransE", "distmult": "DistMult"}


def model_tensors(model_dir: Path) -> dict[str, Any]:
    """The trained table and KG-head relations of ``model_dir/model.safetensors`` (missing keys left out)."""
    from safetensors import safe_open

    path = model_dir / "model.safetensors"
    if not path.is_file():
        return {}
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key).float() for key in (TABLE_KEY, RELATIONS_KEY) if key in handle.keys()}


def model_linkpred(run_dir: str | Path, batch_size: int = 64) -> dict[str, Any] | None:
    """Link prediction with the saved model's own trained entity table; None when the model has none
    (a frozen table is the KG embedding: kg_metrics.json speaks for it) or when there are no relation
    vectors (no joint KG head and no kg/embeddings.safetensors)."""
    from kept.analysis import load_kg
    from kept.rundir import read_json
    from kg import load_embeddings

    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        return None
    config = read_json(model_dir / "config.json", "model config")
    tensors = model_tensors(model_dir)
    if config.get("model_type") != "kept" or TABLE_KEY not in tensors:
        return None
    if RELATIONS_KEY in tensors:
        interaction, norm = str(config.get("joint_kg_interaction", "TransE")), int(config.get("joint_kg_norm", 1))
        relations, source = tensors[RELATIONS_KEY], "model: trained entity table, joint KG head's relations"
    else:
        embeddings = run_dir / "kg" / "embeddings.safetensors"
        if not embeddings.is_file():  # no relation vectors to rank with: kg_metrics.json speaks, as without a model
            return None
        kg_file = load_embeddings(embeddings, mmap=False)
        known = INTERACTIONS.get(str(kg_file.metadata.get("model", "")).lower())
        if known is None:
            return {
                "skipped": f"the model trained its entity table, and the KG embedding's model "
                f"{kg_file.metadata.get('model')!r} has no interaction here (TransE, DistMult)"
            }
        interaction = known
        import json

        embedding_config = json.loads(kg_file.metadata.get("config") or "{}")  # kg.EmbeddingConfig as trained
        norm = int((embedding_config.get("model_kwargs") or {}).get("scoring_fct_norm", 1))
        relations, source = kg_file.relation_embeddings.float(), "model: trained entity table, KG embedding's relations"
    graph = load_kg(run_dir)
    result = rank_test_triples(graph, run_dir / "kg", tensors[TABLE_KEY], relations, interaction, norm, batch_size)
    result.update({"model": interaction, "source": source})
    return result


def rank_test_triples(
    graph: Any, kg_dir: Path, entities: Any, relations: Any, interaction: str, norm: int = 1, batch_size: int = 64
) -> dict[str, Any]:
    """PyKEEN's RankBasedEvaluator over the KG's test triples (filtered by training and validation
    triples) for entity vectors [num_entities, E] and relation vectors [num_relations, E]."""
    import torch
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import ERModel

    from kg.embeddings import triples_factory
    from kg.metrics import rank_metrics
    from kg.split import has_split, load_split

    if has_split(kg_dir):
        split = load_split(graph, kg_dir)
        test, filters = (
            split.triples(graph, "test"),
            [split.triples(graph, "train"), split.triples(graph, "validation")],
        )
        note = "the KG's test triples"
    else:  # as the kg embed step without a split: training triples (optimistic)
        test, filters = graph.triples, []
        note = "training triples (the KG has no split: optimistic)"
    model: Any = ERModel(
        triples_factory=triples_factory(graph),
        interaction=interaction,
        interaction_kwargs={"p": norm} if interaction == "TransE" else None,
        entity_representations_kwargs={"shape": int(entities.shape[1])},
        relation_representations_kwargs={"shape": int(relations.shape[1])},
        random_seed=0,
    )
    with torch.no_grad():
        model.entity_representations[0]._embeddings.weight.copy_(entities)
        model.relation_representations[0]._embeddings.weight.copy_(relations)
    model.eval()
    results = RankBasedEvaluator().evaluate(
        model, test, additional_filter_triples=[f for f in filters if len(f)], batch_size=batch_size, use_tqdm=False
    )
    return {
        **rank_metrics(results),
        "num_testing": int(len(test)),
        "evaluated_on": note,
        "evaluation": "rank-based, filtered, both sides, realistic ranks",
    }
