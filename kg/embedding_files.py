"""Saved KG embeddings: write tables + vocabulary to safetensors, read them back (memory-mapped).

Row ``i`` of every table is our entity/relation id ``i``; the vocabularies travel in the header (with
their SHA-256) so a loaded table can be checked against the graph it is used with.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kg._io import atomic_write_with
from kg.errors import KGError
from kg.graph import KnowledgeGraph

if TYPE_CHECKING:  # pragma: no cover
    from kg.embeddings import EmbeddingResult

FORMAT = "kept-kg-embeddings/1"
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Vocabulary names go into the safetensors header up to this size; larger vocabularies keep a hash.
MAX_VOCAB_METADATA_BYTES = 32 * 1024 * 1024


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
