"""Knowledge graphs for KEPT: vocabulary, sources, networkx view, PyKEEN embeddings, alias index.

Imports nothing else of KEPT. The public names below are resolved lazily (module-level
``__getattr__``, PEP 562), so ``import kg.errors`` (the error base every package shares) does not
load torch through ``kg.embeddings``. Heavy optional dependencies (pykeen, mwparserfromhell, gensim,
networkx, safetensors) are imported inside the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kg._lazy import lazy_exports

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AliasIndex": "kg.aliases",
    "Candidate": "kg.aliases",
    "normalize_mention": "kg.aliases",
    "EmbeddingConfig": "kg.embeddings",
    "EmbeddingResult": "kg.embeddings",
    "train_embeddings": "kg.embeddings",
    **{
        name: "kg.embedding_files"
        for name in ("LoadedEmbeddings", "load_embeddings", "save_embedding_tensors", "save_embeddings")
    },
    "InputError": "kg.errors",
    "KGError": "kg.errors",
    "KGStats": "kg.graph",
    "KnowledgeGraph": "kg.graph",
    "Neighbourhood": "kg.graph",
    "LoadReport": "kg.report",
    **{name: "kg.sources" for name in ("apply_aliases", "apply_labels", "load_pykeen_dataset", "load_triples")},
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static type checkers and IDEs see the real names
    from kg.aliases import AliasIndex, Candidate, normalize_mention
    from kg.embedding_files import LoadedEmbeddings, load_embeddings, save_embedding_tensors, save_embeddings
    from kg.embeddings import EmbeddingConfig, EmbeddingResult, train_embeddings
    from kg.errors import InputError, KGError
    from kg.graph import KGStats, KnowledgeGraph, Neighbourhood
    from kg.report import LoadReport
    from kg.sources import apply_aliases, apply_labels, load_pykeen_dataset, load_triples
