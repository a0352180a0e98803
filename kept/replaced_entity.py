"""The run side of replaced-entity detection (WKLM; ``masking.replaced_entity_probability`` > 0).

* :func:`entity_pool` — what a mention may become: every KG entity's label (``kg/entities.tsv``), tokenized
  with the run's tokenizer, and the entity types. Types come from the KG's training triples (never the
  held-out ones) when it has a type relation (:mod:`kg.type_relations`, e.g. Wikidata's ``instance
  of``/P31, ``rdf:type``, ``类型``): an entity's type is the tail of its first such triple, and an entity
  without one is swapped for any entity. A KG without a type
  relation (the embedded Wikipedia sample's infobox relations have none) swaps for any entity; the pool's
  ``source`` says which, (``collator.pool.source``).
* :func:`wrap_collators` — the training and evaluation collators wrapped in
  :class:`masking.replaced_entity.ReplacedEntityCollator` (one entity pool).
* :func:`model_overrides` — ``red_weight`` of the model (``model.red_weight``) when the swaps are on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from kept.errors import KeptError

logger = logging.getLogger(__name__)


def red_on(config: Any) -> bool:
    return config.masking.replaced_entity_probability > 0


def model_overrides(config: Any) -> dict[str, Any]:
    """KeptConfig fields of the RED head: ``red_weight`` when the swaps are on, else none (no head)."""
    return {"red_weight": float(config.model.red_weight)} if red_on(config) else {}


def entity_pool(run_dir: str | Path, tokenizer: Any) -> Any:
    """The run KG's entities as swap candidates (label tokens, types and where the types came from)."""
    from kg import KnowledgeGraph
    from kg.split import train_triples
    from kg.type_relations import type_relation_ids
    from masking.replaced_entity import EntityPool

    kg_dir = Path(run_dir) / "kg"
    if not (kg_dir / "entities.tsv").is_file():
        raise KeptError(
            "replaced-entity detection swaps mentions for KG entities: the run has no KG",
            where=kg_dir / "entities.tsv",
            fix="run the kg step (`kept run CONFIG`), or set masking.replaced_entity_probability: 0",
        )
    graph = KnowledgeGraph.load(kg_dir)
    labels = [label or name for label, name in zip(graph.entity_labels, graph.entities)]
    tokens = [list(ids) for ids in tokenizer(labels, add_special_tokens=False)["input_ids"]]
    types = np.full(graph.num_entities, -1, dtype=np.int64)
    names = set(type_relation_ids(graph))
    # the held-out triples (probe, link prediction) never shape training: types from the training split
    known = train_triples(graph, kg_dir)
    if names and len(known):
        triples = known.numpy()
        typed = triples[np.isin(triples[:, 1], sorted(names))]
        for head, _, tail in typed[::-1]:  # the first triple of each head wins
            types[head] = tail
        which = ", ".join(repr(graph.relation_labels[i]) for i in sorted(names))
        source = (
            f"same type by the KG relation {which} ({int((types >= 0).sum())} of {graph.num_entities} "
            "entities typed; the others: any entity)"
        )
    else:
        source = "any entity (the KG has no type relation such as 'instance of')"
    return EntityPool(tokens=tokens, types=types, source=source)


def wrap_collators(collators: tuple[Any, Any], config: Any, run_dir: str | Path, tokenizer: Any) -> tuple[Any, Any]:
    """The (training, evaluation) collators with WKLM swaps when ``masking.replaced_entity_probability`` > 0,
    else as they are; one entity pool for both, and one log line saying where its types came from."""
    if not red_on(config):
        return collators
    from masking.replaced_entity import ReplacedEntityCollator

    pool = entity_pool(run_dir, tokenizer)
    logger.info(
        f"replaced-entity detection: {config.masking.replaced_entity_probability:.0%} of the linked mentions "
        f"swapped for {pool.source}; the swapped mention takes the new entity's id"
    )
    probability, max_length = config.masking.replaced_entity_probability, config.encode.max_length
    train, evaluation = (ReplacedEntityCollator(c, pool, probability, max_length) for c in collators)
    return train, evaluation


__all__ = ["red_on", "model_overrides", "entity_pool", "wrap_collators"]
