"""KG embeddings with PyKEEN: train any model by name on OUR ids and evaluate it.

Row ``i`` of every trained matrix is our entity/relation id ``i``: the PyKEEN ``TriplesFactory``
is built from our ``entity_to_id``/``relation_to_id`` (entities in no triple still get a row).
Writing and reading the tables lives in :mod:`kg.embedding_files`.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch

from kg.embedding_config import EmbeddingConfig
from kg.errors import KGError
from kg.graph import KnowledgeGraph
from kg.metrics import rank_metrics
from kg.split import TripleSplit, predefined_split, split_triples

if TYPE_CHECKING:  # pragma: no cover
    from pykeen.models import ERModel
    from pykeen.triples import TriplesFactory


@dataclass
class EmbeddingResult:
    entity_embeddings: torch.Tensor  # [num_entities, entity_dim], row i == entity id i
    relation_embeddings: torch.Tensor  # [num_relations, relation_dim]
    metrics: dict[str, Any]
    entity_names: list[str] = field(default_factory=list)
    relation_names: list[str] = field(default_factory=list)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # further representations (TransH normals, ...)
    config: EmbeddingConfig | None = None
    model: Any = None  # the trained PyKEEN model (not saved)
    pipeline_result: Any = None
    split: TripleSplit | None = None  # the triples it was trained and tested on (None: all, no held-out set)


def resolve_model_name(name: str) -> str:
    """PyKEEN's canonical model name, or KGError with close matches."""
    from pykeen.models import model_resolver

    try:
        return model_resolver.lookup(name).__name__
    except (KeyError, ValueError, TypeError):
        choices = sorted(model_resolver.lookup_dict)
        close = difflib.get_close_matches(model_resolver.normalize(name), choices, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise KGError(
            f"PyKEEN has no model named {name!r}", where="model", fix=f"{hint}known models: {', '.join(choices)}"
        ) from None


def triples_factory(graph: KnowledgeGraph, triples: torch.Tensor | None = None) -> TriplesFactory:
    """A PyKEEN TriplesFactory whose ids are exactly our ids (all entities/relations, even unused ones)."""
    from pykeen.triples import TriplesFactory

    return TriplesFactory(
        mapped_triples=graph.triples if triples is None else triples,
        entity_to_id=graph.entity_to_id,
        relation_to_id=graph.relation_to_id,
    )


def make_split(graph: KnowledgeGraph, config: EmbeddingConfig) -> TripleSplit | None:
    """The split ``config.split`` asks for, or None (train and evaluate on all triples)."""
    if graph.num_triples == 0:
        raise KGError("the graph has no triples", where="graph", fix="load a graph with at least one triple")
    mode = config.split
    if mode == "auto":
        mode = "predefined" if graph.metadata.get("split_sizes") else "random"
    if mode == "predefined":
        return predefined_split(graph)
    if mode == "none" or graph.num_triples < config.min_triples_to_split:
        return None
    _, test_fraction, validation_fraction = config.ratios
    return split_triples(
        graph,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        seed=config.seed,
        min_test_triples=config.min_test_triples,
    )


def split_graph(
    graph: KnowledgeGraph,
    config: EmbeddingConfig,
    split: TripleSplit | None = None,
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(training, testing, validation or None, description) PyKEEN factories of ``split`` (made from
    ``config`` when not given; see :mod:`kg.split`)."""
    if split is None:
        split = make_split(graph, config)
    if split is None:
        reason = (
            "split='none'"
            if config.split == "none"
            else f"graph too small to split ({graph.num_triples} < min_triples_to_split={config.min_triples_to_split})"
        )
        return _no_split(graph, config, triples_factory(graph), reason)
    if split.test.numel() == 0:
        raise KGError(
            "the split holds out no test triple",
            where="split",
            fix="lower min_triples_to_split's graph size or use split='none'",
        )
    training = triples_factory(graph, split.triples(graph, "train"))
    testing = triples_factory(graph, split.triples(graph, "test"))
    validation = triples_factory(graph, split.triples(graph, "validation")) if split.validation.numel() else None
    return training, testing, validation, dict(split.info)


def _no_split(
    graph: KnowledgeGraph, config: EmbeddingConfig, full: Any, reason: str
) -> tuple[Any, Any, None, dict[str, Any]]:
    """Train on all triples; evaluate on (a seeded sample of) the training triples and say so."""
    testing = full
    note = f"{reason}; trained on all triples and evaluated on training triples (optimistic)"
    if config.max_evaluation_triples is not None and graph.num_triples > config.max_evaluation_triples:
        generator = torch.Generator().manual_seed(config.seed)
        chosen = torch.randperm(graph.num_triples, generator=generator)[: config.max_evaluation_triples].sort().values
        testing = triples_factory(graph, graph.triples[chosen])
        note += f" (a seeded sample of {config.max_evaluation_triples})"
    return full, testing, None, {"split": "none", "evaluated_on": "training triples", "split_note": note}


EVALUATION_SCORE_BUDGET = 2**27  # floats in one evaluation batch's [batch, num_entities, dim] intermediate


def evaluation_batch_size(config: EmbeddingConfig, num_entities: int) -> int:
    """``config.evaluation_batch_size``, or a memory-bounded default (PyKEEN's own is 32 on CPU)."""
    if config.evaluation_batch_size is not None:
        return config.evaluation_batch_size
    return max(1, min(256, EVALUATION_SCORE_BUDGET // max(1, num_entities * config.dim)))


def pipeline_kwargs(config: EmbeddingConfig, num_entities: int = 0) -> dict[str, Any]:
    """The keyword arguments handed to ``pykeen.pipeline.pipeline`` (besides the triples)."""
    model_kwargs = {"embedding_dim": config.dim, **config.model_kwargs}
    kwargs: dict[str, Any] = {
        "model": resolve_model_name(config.model),
        "model_kwargs": model_kwargs,
        "optimizer": config.optimizer,
        "optimizer_kwargs": {"lr": config.learning_rate},
        "training_loop": config.training_loop,
        "training_kwargs": {"num_epochs": config.epochs, "batch_size": config.batch_size, "use_tqdm": config.use_tqdm},
        "evaluation_kwargs": {"use_tqdm": config.use_tqdm, "batch_size": evaluation_batch_size(config, num_entities)},
        "random_seed": config.seed,
    }
    if config.loss is not None:
        kwargs["loss"] = config.loss
    if config.negative_sampler is not None:
        kwargs["negative_sampler"] = config.negative_sampler
    if config.num_negs_per_pos is not None:
        kwargs["negative_sampler_kwargs"] = {"num_negs_per_pos": config.num_negs_per_pos}
    if config.device is not None:
        kwargs["device"] = config.device
    return kwargs


def _matrix(representation: Any) -> torch.Tensor:
    with torch.no_grad():
        values = representation(indices=None).detach().cpu()
    if values.is_complex():
        values = torch.view_as_real(values)
    return values.reshape(values.shape[0], -1).contiguous()


def train_embeddings(
    graph: KnowledgeGraph, config: EmbeddingConfig | None = None, split: TripleSplit | None = None
) -> EmbeddingResult:
    """Train ``config.model`` with ``pykeen.pipeline.pipeline`` on the training triples of ``split`` (made
    from ``config`` when not given) and evaluate it on the test triples (rank-based, filtered)."""
    config = config or EmbeddingConfig()
    kwargs = pipeline_kwargs(config, graph.num_entities)  # validates the model name before any work
    if split is None:
        split = make_split(graph, config)
    training, testing, validation, split_info = split_graph(graph, config, split)
    from pykeen import get_version
    from pykeen.pipeline import pipeline

    started = time.perf_counter()
    try:
        result = pipeline(training=training, testing=testing, validation=validation, **kwargs)
    except (TypeError, ValueError, KeyError) as error:
        raise KGError(
            f"PyKEEN rejected the configuration: {error}",
            where="model_kwargs",
            fix="check the model's parameters (pykeen.models docs) and the loss/optimizer names",
        ) from None
    seconds = time.perf_counter() - started
    model = cast("ERModel", result.model)  # the pipeline's models are ERModels: representations as ModuleLists
    entity = _matrix(model.entity_representations[0])
    relation = _matrix(model.relation_representations[0])
    extra = {f"entity_embeddings_{i}": _matrix(r) for i, r in enumerate(model.entity_representations[1:], start=1)}
    extra.update(
        {f"relation_embeddings_{i}": _matrix(r) for i, r in enumerate(model.relation_representations[1:], start=1)}
    )
    used = torch.zeros(graph.num_entities, dtype=torch.bool)
    used[training.mapped_triples[:, [0, 2]].reshape(-1)] = True
    losses = [float(x) for x in result.losses]
    metrics: dict[str, Any] = {
        "model": kwargs["model"],
        "dim": config.dim,
        "entity_dim": int(entity.shape[1]),
        "relation_dim": int(relation.shape[1]),
        "epochs": config.epochs,
        "seed": config.seed,
        **rank_metrics(result.metric_results),
        "evaluation": "rank-based, filtered, both sides, realistic ranks",
        **split_info,
        "num_training": int(training.num_triples),
        "num_testing": int(testing.num_triples),
        "num_validation": int(validation.num_triples) if validation is not None else 0,
        "num_entities": graph.num_entities,
        "num_relations": graph.num_relations,
        "entities_without_triples": int((~used).sum()),
        "final_loss": losses[-1] if losses else None,
        "pipeline_seconds": round(seconds, 3),
        "device": str(result.model.device),
        "pykeen_version": get_version(),
    }
    return EmbeddingResult(
        entity_embeddings=entity,
        relation_embeddings=relation,
        metrics=metrics,
        entity_names=list(graph.entities),
        relation_names=list(graph.relations),
        extra=extra,
        config=config,
        model=model,
        pipeline_result=result,
        split=split,
    )
