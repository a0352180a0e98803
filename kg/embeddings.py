"""KG embeddings with PyKEEN: train any model by name on OUR ids, evaluate, export to safetensors, load back.

Row ``i`` of every exported matrix is our entity/relation id ``i``: the PyKEEN ``TriplesFactory``
is built from our ``entity_to_id``/``relation_to_id`` (entities in no triple still get a row).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from kg._io import atomic_write_with
from kg.embedding_config import EmbeddingConfig
from kg.errors import KGError
from kg.graph import KnowledgeGraph
from kg.metrics import rank_metrics
from kg.split import TripleSplit, predefined_split, split_triples

if TYPE_CHECKING:  # pragma: no cover
    from pykeen.models import ERModel
    from pykeen.triples import TriplesFactory

FORMAT = "kept-kg-embeddings/1"
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Vocabulary names go into the safetensors header up to this size; larger vocabularies keep a hash.
MAX_VOCAB_METADATA_BYTES = 32 * 1024 * 1024


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


# export / import ------------------------------------------------------------------------------
def vocabulary_hash(names: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    key = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "float": "float32"}.get(
        key, key
    )
    if key not in DTYPES:
        raise KGError(f"unsupported dtype {dtype!r}", where="dtype", fix="use float32, float16 or bfloat16")
    return DTYPES[key]


def save_embedding_tensors(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    *,
    entity_names: Sequence[str] = (),
    relation_names: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
    dtype: str | torch.dtype | None = None,
) -> Path:
    """Write tensors (needs ``entity_embeddings``, ``relation_embeddings``) and vocabulary metadata atomically."""
    from safetensors.torch import save_file

    target = _dtype(dtype)
    if "entity_embeddings" not in tensors or "relation_embeddings" not in tensors:
        raise KGError("tensors need 'entity_embeddings' and 'relation_embeddings'", where=str(path))
    prepared = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        if target is not None and tensor.is_floating_point():
            tensor = tensor.to(target)
        prepared[name] = tensor.contiguous()
    entity, relation = prepared["entity_embeddings"], prepared["relation_embeddings"]
    for what, names, tensor in (("entity", entity_names, entity), ("relation", relation_names, relation)):
        if names and len(names) != tensor.shape[0]:
            raise KGError(
                f"{len(names)} {what} names for {tensor.shape[0]} rows",
                where=str(path),
                fix="pass one name per row, in id order",
            )
    header: dict[str, str] = {
        "format": FORMAT,
        "num_entities": str(entity.shape[0]),
        "num_relations": str(relation.shape[0]),
        "entity_dim": str(entity.shape[1]),
        "relation_dim": str(relation.shape[1]),
        "dtype": str(entity.dtype).replace("torch.", ""),
    }
    for key, value in (metadata or {}).items():
        header[key] = value if isinstance(value, str) else json.dumps(value)
    for what, names in (("entities", entity_names), ("relations", relation_names)):
        if names:
            header[f"{what}_sha256"] = vocabulary_hash(names)
            encoded = json.dumps(list(names), ensure_ascii=False)
            if len(encoded) <= MAX_VOCAB_METADATA_BYTES:
                header[what] = encoded
    return atomic_write_with(path, lambda tmp: save_file(prepared, str(tmp), metadata=header))


def save_embeddings(result: EmbeddingResult, path: str | Path, dtype: str | torch.dtype | None = None) -> Path:
    """Export a training result: ``entity_embeddings``, ``relation_embeddings`` (+ extras), vocabulary, metrics."""
    metadata: dict[str, Any] = {
        "model": str(result.metrics.get("model", "")),
        "dim": str(result.metrics.get("dim", "")),
        "metrics": result.metrics,
    }
    if result.config is not None:
        metadata["config"] = result.config.to_dict()
    tensors = {
        "entity_embeddings": result.entity_embeddings,
        "relation_embeddings": result.relation_embeddings,
        **result.extra,
    }
    return save_embedding_tensors(
        path,
        tensors,
        entity_names=result.entity_names,
        relation_names=result.relation_names,
        metadata=metadata,
        dtype=dtype,
    )


_ST_DTYPES = {
    "F64": ("float64", torch.float64),
    "F32": ("float32", torch.float32),
    "F16": ("float16", torch.float16),
    "BF16": ("uint16", torch.bfloat16),
    "I64": ("int64", torch.int64),
    "I32": ("int32", torch.int32),
    "I16": ("int16", torch.int16),
    "I8": ("int8", torch.int8),
    "U8": ("uint8", torch.uint8),
    "BOOL": ("bool", torch.bool),
}


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise KGError(
                "not a safetensors file (too short)", where=path, fix="pass a file written by save_embeddings"
            )
        (size,) = struct.unpack("<Q", prefix)
        if size > 100 * 1024 * 1024:
            raise KGError(
                "not a safetensors file (bad header size)", where=path, fix="pass a file written by save_embeddings"
            )
        try:
            header = json.loads(handle.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise KGError(
                "not a safetensors file (unreadable header)", where=path, fix="pass a file written by save_embeddings"
            ) from None
    return header, 8 + size


@dataclass
class LoadedEmbeddings:
    """Embedding tables indexed by our ids (``entity_embeddings[i]`` is entity ``i``)."""

    entity_embeddings: torch.Tensor
    relation_embeddings: torch.Tensor
    metadata: dict[str, str]
    entity_names: list[str] | None = None
    relation_names: list[str] | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    path: str = ""

    @property
    def num_entities(self) -> int:
        return int(self.entity_embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.entity_embeddings.shape[1])

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads(self.metadata["metrics"]) if "metrics" in self.metadata else {}

    def lookup(self, entity_ids: torch.Tensor | Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Rows for ``entity_ids`` (any shape; -1 gives zeros) as ``dtype`` - touches only those rows."""
        ids = torch.as_tensor(entity_ids, dtype=torch.long)
        valid = ids >= 0
        if bool((ids >= self.num_entities).any()):
            raise KGError(f"entity id {int(ids.max())} is outside 0..{self.num_entities - 1}", where="entity_ids")
        rows = self.entity_embeddings[ids.clamp(min=0).reshape(-1)].to(dtype)
        rows = rows * valid.reshape(-1, 1).to(dtype)
        return rows.reshape(*ids.shape, self.dim)

    def entity(self, name: str) -> torch.Tensor:
        if self.entity_names is None:
            raise KGError(
                "this file carries no entity names",
                where=self.path,
                fix="look rows up by id (KnowledgeGraph.entity_id)",
            )
        index = getattr(self, "_name_index", None)
        if index is None:
            index = {n: i for i, n in enumerate(self.entity_names)}
            self._name_index = index
        if name not in index:
            raise KGError(f"unknown entity {name!r}", where=self.path)
        return self.entity_embeddings[index[name]]

    def check_vocabulary(self, graph: KnowledgeGraph) -> None:
        """KGError unless these tables were trained on ``graph``'s vocabulary (same names, same ids)."""
        if self.num_entities != graph.num_entities or self.relation_embeddings.shape[0] != graph.num_relations:
            raise KGError(
                f"embeddings have {self.num_entities} entities/{self.relation_embeddings.shape[0]} relations, "
                f"the graph {graph.num_entities}/{graph.num_relations}",
                where=self.path,
                fix="re-run `kept kg embed` on this graph",
            )
        expected = self.metadata.get("entities_sha256")
        if expected and expected != vocabulary_hash(graph.entities):
            raise KGError(
                "entity vocabulary differs from the graph's",
                where=self.path,
                fix="re-run `kept kg embed` on this graph",
            )


def load_embeddings(path: str | Path, mmap: bool = True) -> LoadedEmbeddings:
    """Load a file written by :func:`save_embeddings`.

    ``mmap=True`` maps the tensors from disk without reading them (copy-on-write ``numpy.memmap``
    wrapped by ``torch.from_numpy``): a table of millions of rows costs no memory until rows are used.
    """
    path = Path(path)
    if not path.exists():
        raise KGError("file not found", where=path, fix="run `kept kg embed RUN_DIR` first")
    header, data_start = _read_header(path)
    metadata = dict(header.pop("__metadata__", {}) or {})
    tensors: dict[str, torch.Tensor] = {}
    if mmap:
        import numpy as np

        for name, info in header.items():
            if info["dtype"] not in _ST_DTYPES:
                raise KGError(f"tensor {name!r} has unsupported dtype {info['dtype']}", where=path)
            np_dtype, torch_dtype = _ST_DTYPES[info["dtype"]]
            shape = tuple(info["shape"])
            begin, end = info["data_offsets"]
            if end == begin:
                tensors[name] = torch.empty(shape, dtype=torch_dtype)
                continue
            array = np.memmap(path, dtype=np_dtype, mode="c", offset=data_start + begin, shape=shape)
            tensor = torch.from_numpy(array)
            tensors[name] = tensor.view(torch.bfloat16) if torch_dtype is torch.bfloat16 else tensor
    else:
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise KGError(f"cannot read safetensors file ({error})", where=path) from None
    for required in ("entity_embeddings", "relation_embeddings"):
        if required not in tensors:
            raise KGError(f"missing tensor {required!r}", where=path, fix="pass a file written by save_embeddings")
    entity_names = json.loads(metadata["entities"]) if "entities" in metadata else None
    relation_names = json.loads(metadata["relations"]) if "relations" in metadata else None
    extra = {k: v for k, v in tensors.items() if k not in ("entity_embeddings", "relation_embeddings")}
    return LoadedEmbeddings(
        entity_embeddings=tensors["entity_embeddings"],
        relation_embeddings=tensors["relation_embeddings"],
        metadata=metadata,
        entity_names=entity_names,
        relation_names=relation_names,
        extra=extra,
        path=str(path),
    )
