"""Joint KG learning (KEPLER/DRAGON) for `kept pretrain`: the triples of the batch and the model's KG head.

``model.joint_kg_weight`` > 0 (with ``model.freeze_entity_table: false``) adds a link-prediction loss on
the entity table the model trains (:mod:`fusion.kg_link`). This module is the run side of it:

* :func:`training_triples` — the run's KG triples the loss may see: the **train split** only
  (``kg/train_triples.tsv``); held-out triples feed the KG probe and link prediction and never a loss.
  A KG embedded without a split (``kg.split: none``) has no held-out triples: all of them are used, as
  the KG embedding used them.
* :class:`TripleSampler` / :class:`JointKGCollator` — per batch, up to ``model.joint_kg_triples_per_batch``
  training triples with the head or the tail among the batch's linked entities, each with
  ``model.joint_kg_negatives`` corruptions (head or tail, half each, replaced by a uniformly drawn
  entity), drawn from the masking collator's generator, so a resumed run draws the same triples.
* :func:`model_overrides` / :func:`init_relations` — the KeptConfig fields of the KG head (interaction from
  the run's ``kg.model``, TransE's norm from ``kg.model_kwargs``) and its relation embeddings, started from
  the run's trained KG model (``kg/embeddings.safetensors``) when it is of that interaction and size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kept.errors import KeptError

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # torch loads with the functions that use it
    import torch

#: KG models whose interaction the joint loss has (fusion.kg_link.KG_INTERACTIONS), by lower-case name.
SUPPORTED: dict[str, str] = {"transe": "TransE", "distmult": "DistMult"}


@dataclass(frozen=True)
class TrainingTriples:
    triples: torch.Tensor  # [M, 3] long (head, relation, tail) KG ids
    num_entities: int
    num_relations: int
    note: str


def training_triples(run_dir: str | Path) -> TrainingTriples:
    """The run's training triples (``kg/train_triples.tsv`` of the split; all triples when the KG has none)."""
    from kg import KnowledgeGraph
    from kg.split import has_split, train_triples

    kg_dir = Path(run_dir) / "kg"
    if not (kg_dir / "triples.tsv").is_file():
        raise KeptError(
            "the joint KG loss needs the run's KG triples",
            where=kg_dir / "triples.tsv",
            fix="run the kg step (`kept run CONFIG`), or set model.joint_kg_weight: 0",
        )
    graph = KnowledgeGraph.load(kg_dir)
    triples = train_triples(graph, kg_dir)
    if has_split(kg_dir):
        note = f"{len(triples)} training triples of the KG split (held-out triples never enter the loss)"
    else:
        note = f"{len(triples)} triples (the KG has no split: no held-out triples, all are training triples)"
    return TrainingTriples(triples.long().contiguous(), graph.num_entities, graph.num_relations, note)


@dataclass
class TripleSampler:
    """Picks a batch's triples and their corruptions (pure tensor code, seeded by ``generator``)."""

    triples: torch.Tensor  # [M, 3]
    num_entities: int
    per_batch: int
    negatives: int

    def sample(self, entity_ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """entity_ids (any shape, -1 = none) -> kg_triples [T, 3], kg_negatives [T, K, 3], T <= per_batch."""
        import torch

        present = torch.unique(entity_ids[entity_ids >= 0].long())  # [n]
        touches = torch.isin(self.triples[:, 0], present) | torch.isin(self.triples[:, 2], present)  # [M]
        rows = torch.nonzero(touches).flatten()
        if rows.numel() > self.per_batch:
            rows = rows[torch.randperm(rows.numel(), generator=generator)[: self.per_batch]].sort().values
        chosen = self.triples[rows]  # [T, 3]
        count = chosen.shape[0]
        negatives = chosen.unsqueeze(1).repeat(1, self.negatives, 1)  # [T, K, 3]
        replacement = torch.randint(self.num_entities, (count, self.negatives), generator=generator)
        corrupt_tail = torch.rand(count, self.negatives, generator=generator) < 0.5  # [T, K]
        negatives[..., 2] = torch.where(corrupt_tail, replacement, negatives[..., 2])
        negatives[..., 0] = torch.where(corrupt_tail, negatives[..., 0], replacement)
        return chosen, negatives


class JointKGCollator:
    """The masking collator plus ``kg_triples``/``kg_negatives`` of the batch's entities.

    Attributes it does not have (``generator``, ``set_progress``, ...) are the masking collator's, so
    :class:`kept.pretrain.BatchSeededCollator` reseeds it as the masking collator itself; the triples are
    drawn after the masks, from the same generator."""

    def __init__(self, collator: Any, sampler: TripleSampler) -> None:
        self.collator = collator
        self.sampler = sampler

    def __getattr__(self, name: str) -> Any:
        if name in ("collator", "sampler"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.collator, name)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.collator(features)
        ids = [torch.as_tensor(f["entity_ids"], dtype=torch.long).reshape(-1) for f in features if "entity_ids" in f]
        linked = torch.cat(ids) if ids else torch.empty(0, dtype=torch.long)
        batch["kg_triples"], batch["kg_negatives"] = self.sampler.sample(linked, self.collator.generator)
        return batch


def joint_kg_on(config: Any) -> bool:
    """Whether the run configuration (a RunConfig) turns the joint KG loss on."""
    return bool(config.model.fusion and config.model.joint_kg_weight > 0)


def interaction_of(config: Any) -> tuple[str, int]:
    """(interaction, TransE norm) of the joint loss: ``model.joint_kg_interaction``, else the run's ``kg.model``."""
    name = config.model.joint_kg_interaction or config.kg.model
    interaction = SUPPORTED.get(name.lower())
    if interaction is None:
        raise KeptError(
            f"the joint KG loss has no interaction for kg.model {name!r}",
            where="model.joint_kg_weight",
            fix="embed the KG with TransE or DistMult, set model.joint_kg_interaction (its relation "
            "embeddings then start from random), or set model.joint_kg_weight: 0",
        )
    norm = int(config.kg.model_kwargs.get("scoring_fct_norm", 1))
    return interaction, norm


def model_overrides(config: Any, run_dir: str | Path) -> dict[str, Any]:
    """The KeptConfig fields of the joint KG head (weight 0 when the loss is off); a trainable table gets
    dense gradients (the Trainer's AdamW and gradient clipping take no sparse ones) unless model.overrides
    says otherwise."""
    mcfg = config.model
    dense = (
        {}
        if mcfg.freeze_entity_table or "entity_table_sparse_grad" in mcfg.overrides
        else {"entity_table_sparse_grad": False}
    )
    if not joint_kg_on(config):
        return {**dense, "joint_kg_weight": 0.0}
    interaction, norm = interaction_of(config)
    triples = training_triples(run_dir)
    return {
        **dense,
        "joint_kg_weight": float(mcfg.joint_kg_weight),
        "joint_kg_interaction": interaction,
        "joint_kg_loss": mcfg.joint_kg_loss,
        "joint_kg_margin": float(mcfg.joint_kg_margin),
        "joint_kg_norm": norm,
        "relation_vocab_size": triples.num_relations,
    }


def init_relations(model: Any, config: Any, run_dir: str | Path) -> None:
    """Start the KG head's relation embeddings from the run's trained KG model when it matches (same
    interaction, same shape); else they train from their random start. Logs which."""
    head = getattr(model, "kg_head", None)
    if head is None:
        return
    from kg import load_embeddings

    path = Path(run_dir) / "kg" / "embeddings.safetensors"
    loaded = load_embeddings(path, mmap=False)
    trained_with = SUPPORTED.get(str(loaded.metadata.get("model", "")).lower())
    weight = loaded.relation_embeddings
    if trained_with == head.interaction and tuple(weight.shape) == tuple(head.relation_embeddings.weight.shape):
        head.load_relations(weight.float())
        source = f"from the KG's {trained_with} model"
    else:
        source = (
            f"random (the KG embedding is {loaded.metadata.get('model') or 'unnamed'} "
            f"{list(weight.shape)}, the head {head.interaction} {list(head.relation_embeddings.weight.shape)})"
        )
    logger.info(
        f"joint KG loss: {head.interaction} {head.loss} loss x {model.config.joint_kg_weight}, "
        f"relation embeddings {source}; {training_triples(run_dir).note}"
    )


def wrap_collator(collator: Any, config: Any, run_dir: str | Path) -> Any:
    """``collator`` with the batch's KG triples when the joint loss is on, else ``collator`` itself."""
    if not joint_kg_on(config):
        return collator
    triples = training_triples(run_dir)
    sampler = TripleSampler(
        triples.triples, triples.num_entities, config.model.joint_kg_triples_per_batch, config.model.joint_kg_negatives
    )
    return JointKGCollator(collator, sampler)


__all__ = [
    "JointKGCollator",
    "SUPPORTED",
    "TrainingTriples",
    "TripleSampler",
    "init_relations",
    "interaction_of",
    "joint_kg_on",
    "model_overrides",
    "training_triples",
    "wrap_collator",
]
