"""Relations whose tails are their heads' types: Wikidata's ``instance of`` (P31), ``rdf:type``, UMLS's
``isa``, the shipped Chinese sample's ``类型`` ... One list, read by replaced-entity detection (same-type
swaps) and by entity typing (type labels from the KG)."""

from __future__ import annotations

import re
from typing import Any

#: Relation names or labels, compared by :func:`relation_key` (case, spaces, ``_ - :`` ignored).
TYPE_RELATION_KEYS: frozenset[str] = frozenset(
    {"p31", "instanceof", "rdftype", "type", "isa", "infoboxtype", "entitytype", "类型"}
)


def relation_key(name: str) -> str:
    """``"Instance of"``, ``"instance_of"`` and ``"instance-of"`` all give ``"instanceof"``."""
    return re.sub(r"[\s_\-:]+", "", str(name).strip().lower())


def is_type_relation(name: str, label: str | None = None) -> bool:
    return relation_key(name) in TYPE_RELATION_KEYS or relation_key(label or "") in TYPE_RELATION_KEYS


def type_relation_ids(graph: Any) -> list[int]:
    """Ids of a ``KnowledgeGraph``'s type relations (by name or label)."""
    return [
        i
        for i, (name, label) in enumerate(zip(graph.relations, graph.relation_labels))
        if is_type_relation(name, label)
    ]
