"""Knowledge graphs for KEPT: vocabulary, sources, networkx view, PyKEEN embeddings, alias index.

Imports nothing else of KEPT. Heavy optional dependencies (pykeen, mwparserfromhell, gensim,
networkx, safetensors) are imported inside the functions that need them.
"""

from kg.aliases import AliasIndex, Candidate, normalize_mention
from kg.embeddings import (
    EmbeddingConfig,
    EmbeddingResult,
    LoadedEmbeddings,
    load_embeddings,
    save_embedding_tensors,
    save_embeddings,
    train_embeddings,
)
from kg.errors import KGError
from kg.graph import KGStats, KnowledgeGraph, Neighbourhood
from kg.report import LoadReport
from kg.sources import apply_aliases, apply_labels, load_pykeen_dataset, load_triples

__all__ = [
    "AliasIndex", "Candidate", "EmbeddingConfig", "EmbeddingResult", "KGError", "KGStats", "KnowledgeGraph",
    "LoadReport", "LoadedEmbeddings", "Neighbourhood", "apply_aliases", "apply_labels", "load_embeddings",
    "load_pykeen_dataset", "load_triples", "normalize_mention", "save_embedding_tensors", "save_embeddings",
    "train_embeddings",
]
