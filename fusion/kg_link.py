"""Joint KG link prediction (KEPLER, DRAGON): a knowledge-graph loss on the model's own entity table.

With a trainable entity table, MLM + dEA move the entity vectors towards what the text needs; a
link-prediction loss on KG triples keeps them a knowledge-graph embedding at the same time, so text and
KG embeddings adapt to each other. The batch brings ``kg_triples`` [T, 3] (head, relation, tail KG ids:
training triples whose entities occur in the batch) and ``kg_negatives`` [T, K, 3] (each triple with its
head or tail replaced); the head scores both with the interaction the KG embedding was trained with and
applies PyKEEN's margin ranking or softplus loss.

The scoring functions are PyKEEN's ``TransEInteraction`` and ``DistMultInteraction`` in plain torch (fusion
imports no KG library; tests check them against PyKEEN's). Shapes: T triples, K negatives per triple,
E entity dim.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fusion.errors import FusionError

KG_INTERACTIONS: tuple[str, ...] = ("TransE", "DistMult")
KG_LOSSES: tuple[str, ...] = ("margin", "softplus")


def transe_score(h: torch.Tensor, r: torch.Tensor, t: torch.Tensor, p: int = 1) -> torch.Tensor:
    """TransE: -||h + r - t||_p over the last dim ([..., E] -> [...]); PyKEEN's TransEInteraction(p)."""
    return -torch.linalg.vector_norm(h + r - t, ord=p, dim=-1)


def distmult_score(h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """DistMult: sum(h * r * t) over the last dim; PyKEEN's DistMultInteraction."""
    return (h * r * t).sum(dim=-1)


def score_triples(interaction: str, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Scores of ``interaction`` (higher = more plausible) for vectors [..., E] -> [...]."""
    if interaction == "TransE":
        return transe_score(h, r, t, p)
    if interaction == "DistMult":
        return distmult_score(h, r, t)
    raise FusionError(
        f"unknown KG interaction {interaction!r}",
        where="KeptConfig.joint_kg_interaction",
        fix=f"Use one of: {', '.join(KG_INTERACTIONS)}.",
    )


def link_loss(positive: torch.Tensor, negative: torch.Tensor, loss: str, margin: float) -> torch.Tensor:
    """positive [T], negative [T, K] scores -> scalar loss.

    ``margin``: mean of relu(margin - positive + negative) over the T x K pairs (PyKEEN's MarginRankingLoss);
    ``softplus``: mean of softplus(-score) over positives and softplus(score) over negatives, all scores
    weighted alike (PyKEEN's SoftplusLoss)."""
    if loss == "margin":
        return F.relu(margin - positive.unsqueeze(-1) + negative).mean()
    if loss == "softplus":
        return torch.cat([F.softplus(-positive).reshape(-1), F.softplus(negative).reshape(-1)]).mean()
    raise FusionError(
        f"unknown KG loss {loss!r}", where="KeptConfig.joint_kg_loss", fix=f"Use one of: {', '.join(KG_LOSSES)}."
    )


class KeptKGLinkHead(nn.Module):
    """Relation embeddings [relation_vocab_size, E] and the scoring of triples against the entity table."""

    def __init__(
        self,
        num_relations: int,
        dim: int,
        interaction: str = "TransE",
        loss: str = "margin",
        margin: float = 1.0,
        p: int = 1,
    ) -> None:
        super().__init__()
        if interaction not in KG_INTERACTIONS:
            raise FusionError(
                f"unknown KG interaction {interaction!r}",
                where="KeptConfig.joint_kg_interaction",
                fix=f"Use one of: {', '.join(KG_INTERACTIONS)}.",
            )
        if loss not in KG_LOSSES:
            raise FusionError(
                f"unknown KG loss {loss!r}",
                where="KeptConfig.joint_kg_loss",
                fix=f"Use one of: {', '.join(KG_LOSSES)}.",
            )
        if num_relations <= 0:
            raise FusionError(
                "the joint KG loss needs the number of relations",
                where="KeptConfig.relation_vocab_size",
                fix="Set relation_vocab_size to the KG's relation count.",
            )
        self.interaction, self.loss, self.margin, self.p = interaction, loss, float(margin), int(p)
        self.relation_embeddings = nn.Embedding(num_relations, dim)

    def load_relations(self, weight: torch.Tensor) -> None:
        """Start from a trained KG model's relation embeddings [relation_vocab_size, E]."""
        if tuple(weight.shape) != tuple(self.relation_embeddings.weight.shape):
            raise FusionError(
                f"relation embeddings have shape {list(weight.shape)}, the head "
                f"{list(self.relation_embeddings.weight.shape)}",
                where="relation_embeddings",
                fix="Use the relation embeddings of the KG model the entity table came from.",
            )
        with torch.no_grad():
            self.relation_embeddings.weight.copy_(weight.to(self.relation_embeddings.weight))

    def score(self, triples: torch.Tensor, entity_vectors: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """triples [..., 3] KG ids -> scores [...]; ``entity_vectors(ids [...]) -> [..., E]`` reads the table."""
        device = self.relation_embeddings.weight.device
        h = entity_vectors(triples[..., 0]).float()  # [..., E]
        t = entity_vectors(triples[..., 2]).float()
        r = self.relation_embeddings(triples[..., 1].to(device)).float()
        return score_triples(self.interaction, h, r, t, self.p)

    def forward(
        self, triples: torch.Tensor, negatives: torch.Tensor, entity_vectors: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """triples [T, 3], negatives [T, K, 3] -> the link-prediction loss (scalar; 0 with no triple, the head
        still in the graph)."""
        if (
            triples.dim() != 2
            or triples.shape[-1] != 3
            or negatives.dim() != 3
            or negatives.shape[:1] != triples.shape[:1]
        ):
            raise FusionError(
                f"kg_triples {list(triples.shape)} / kg_negatives {list(negatives.shape)}: expected "
                "[T, 3] and [T, K, 3]",
                where="kg_triples",
                fix="Build the batch with the joint KG collator.",
            )
        if triples.shape[0] == 0 or negatives.shape[1] == 0:
            return self.relation_embeddings.weight.sum() * 0.0
        # one lookup for positives and negatives: [T, 1 + K, 3]
        everything = torch.cat([triples.unsqueeze(1), negatives], dim=1).long()
        scores = self.score(everything, entity_vectors)  # [T, 1 + K]
        return link_loss(scores[:, 0], scores[:, 1:], self.loss, self.margin)


__all__ = [
    "KG_INTERACTIONS",
    "KG_LOSSES",
    "KeptKGLinkHead",
    "distmult_score",
    "link_loss",
    "score_triples",
    "transe_score",
]
