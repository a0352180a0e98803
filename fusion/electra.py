"""Replaced-token detection (ELECTRA, Clark et al. 2020) around the KEPT model.

A small generator (``generator_fraction`` of the discriminator's width and intermediate size, the
discriminator's total depth, no fusion) fills the masked positions of a knowledge-masked batch with
tokens sampled from its MLM distribution; the discriminator (``KeptForPreTraining``, fusion included)
reads the filled sequence and predicts, for every real token, whether it was replaced. A sampled token
equal to the original counts as *not* replaced (as in ELECTRA).

The generator shares the discriminator's word embeddings, input and output (ELECTRA's "tied
embeddings"): token ids -> discriminator embedding [H] -> linear -> generator width [Hg]; its MLM head
projects [Hg] -> [H] and scores against the same embedding matrix.

loss = generator MLM + rtd_weight * RTD + the discriminator's dEA / SOP / joint KG / RED losses (its own MLM
head gets no targets: its MLM figures say nothing about an ELECTRA model).
``discriminator`` is what a run saves as ``model/`` (``KeptForPreTraining``, loaded as usual).

Shapes: B batch, L tokens, H discriminator hidden, Hg generator hidden, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from fusion.configuration_kept import KeptConfig
from fusion.errors import FusionError
from fusion.modeling_kept import IGNORE_INDEX, KeptForPreTraining, KeptModel, KeptPreTrainedModel, mean_cross_entropy


@dataclass
class ElectraOutput(ModelOutput):
    """loss; generator_mlm_loss; rtd_loss, rtd_accuracy (over real tokens); dea/sop/kg losses of the
    discriminator; rtd_logits [B, L]; replaced [B, L] bool (the RTD labels); sop_logits [B, 2]."""

    loss: torch.Tensor | None = None
    generator_mlm_loss: torch.Tensor | None = None
    rtd_loss: torch.Tensor | None = None
    rtd_accuracy: torch.Tensor | None = None
    dea_loss: torch.Tensor | None = None
    sop_loss: torch.Tensor | None = None
    kg_loss: torch.Tensor | None = None
    red_loss: torch.Tensor | None = None
    red_accuracy: torch.Tensor | None = None
    rtd_logits: torch.Tensor | None = None
    replaced: torch.Tensor | None = None
    sop_logits: torch.Tensor | None = None


def generator_config(config: KeptConfig, fraction: float) -> KeptConfig:
    """The generator's KeptConfig: ``fraction`` of the width, heads and intermediate size (at least one
    64-wide head's worth where possible), the discriminator's total depth, no knowledge layers."""
    if not 0 < fraction <= 1:
        raise FusionError(
            f"generator_fraction is {fraction}",
            where="generator_fraction",
            fix="use a fraction in (0, 1], e.g. 0.25 (ELECTRA: 1/4 of the discriminator's width)",
        )
    heads = max(1, round(int(config.num_attention_heads) * fraction))
    head_dim = max(1, round(int(config.hidden_size) * fraction / heads))
    values = {k: v for k, v in config.to_dict().items() if k in KeptConfig.__dataclass_fields__}
    values.update(
        hidden_size=heads * head_dim,
        num_attention_heads=heads,
        intermediate_size=max(1, round(int(config.intermediate_size) * fraction)),
        num_hidden_layers=config.num_total_layers,
        num_knowledge_layers=0,
        vocab_size=1,
        entity_vocab_size=0,
        use_sop=False,
        dea_weight=0.0,
        joint_kg_weight=0.0,
        tie_word_embeddings=False,
        max_entity_slots=None,
    )
    return KeptConfig(**values)


def rtd_labels(original: torch.Tensor, filled: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """[B, L] float: 1 where the discriminator's input differs from the original token, 0 elsewhere
    (also where the generator sampled the original), -100 on padding."""
    labels = (filled != original).float()
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, float(IGNORE_INDEX))
    return labels


class KeptElectraForPreTraining(KeptPreTrainedModel):
    """Generator + discriminator; ``KeptElectraForPreTraining(config, generator_fraction=0.25,
    rtd_weight=50.0)`` or around an existing discriminator (``discriminator=KeptForPreTraining``, e.g. one
    loaded from BERT). ``save_pretrained`` writes the whole pair (Trainer checkpoints);
    ``model.discriminator.save_pretrained`` the model the rest of the pipeline uses."""

    base_model_prefix = "discriminator"

    def __init__(
        self,
        config: KeptConfig,
        generator_fraction: float = 0.25,
        rtd_weight: float = 50.0,
        discriminator: KeptForPreTraining | None = None,
    ) -> None:
        super().__init__(config)
        self.discriminator = discriminator if discriminator is not None else KeptForPreTraining(config)
        self.rtd_weight = float(rtd_weight)
        self.generator_fraction = float(generator_fraction)
        gen = generator_config(self.discriminator.config, generator_fraction)
        hidden = int(self.discriminator.config.hidden_size)
        self.generator = KeptModel(gen, add_pooling_layer=False)
        self.generator.embeddings.word_embeddings.requires_grad_(False)  # unused: the shared embeddings feed it
        self.generator_input = nn.Linear(hidden, gen.hidden_size)  # shared embedding [H] -> [Hg]
        self.generator_head = nn.Sequential(
            nn.Linear(gen.hidden_size, hidden), ACT2FN[gen.hidden_act], nn.LayerNorm(hidden, eps=gen.layer_norm_eps)
        )  # [Hg] -> [H]
        self.generator_bias = nn.Parameter(torch.zeros(int(self.discriminator.config.vocab_size)))
        self.rtd_head = nn.Sequential(
            nn.Linear(hidden, hidden), ACT2FN[self.discriminator.config.hidden_act], nn.Linear(hidden, 1)
        )  # ELECTRA's discriminator head
        for module in (self.generator, self.generator_input, self.generator_head, self.rtd_head):
            module.apply(self._init_weights)
        # the discriminator's MLM head gets no targets: keep its transform out of training (tied decoder aside)
        self.discriminator.cls.predictions.transform.requires_grad_(False)

    def _kept(self) -> KeptModel:  # the entity table lives in the discriminator
        return self.discriminator.kept

    def get_input_embeddings(self) -> nn.Embedding:
        return cast(nn.Embedding, self.discriminator.get_input_embeddings())  # KeptModel's word embeddings

    def generator_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        positions: torch.Tensor,
    ) -> torch.Tensor:
        """Generator MLM scores [M, V] at the ``positions`` [B, L] bool."""
        shared = self.get_input_embeddings()
        embeds = self.generator_input(shared(input_ids))  # [B, L, Hg]
        states = self.generator(
            inputs_embeds=embeds, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state  # [B, L, Hg]
        projected = self.generator_head(states[positions])  # [M, H]
        return projected @ shared.weight.t() + self.generator_bias  # [M, V]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        entity_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        entity_labels: torch.Tensor | None = None,
        sentence_order_label: torch.Tensor | None = None,
        kg_triples: torch.Tensor | None = None,
        kg_negatives: torch.Tensor | None = None,
        mention_spans: torch.Tensor | None = None,
        mention_labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ElectraOutput:
        if labels is None:
            raise FusionError(
                "ELECTRA pretraining needs MLM labels (the masked positions)",
                where="labels",
                fix="use the knowledge-masking collator's batches",
            )
        masked = labels != IGNORE_INDEX  # [B, L]
        scores = self.generator_logits(input_ids, attention_mask, token_type_ids, masked)  # [M, V]
        generator_mlm_loss = mean_cross_entropy(scores, labels[masked])
        with torch.no_grad():  # sample the replacements (no gradient through the sampling, as ELECTRA)
            sampled = (
                torch.multinomial(F.softmax(scores.float(), dim=-1), 1).squeeze(-1)
                if scores.shape[0]
                else scores.new_zeros(0, dtype=torch.long)
            )
            original = torch.where(masked, labels, input_ids)  # [B, L]
            filled = original.clone()
            filled[masked] = sampled
            targets = rtd_labels(original, filled, attention_mask)  # [B, L]
        # the discriminator's MLM head gets an all-ignore label tensor: a 0 loss with a graph (DDP)
        disc = self.discriminator(
            input_ids=filled,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            entity_ids=entity_ids,
            labels=torch.full_like(labels, IGNORE_INDEX),
            entity_labels=entity_labels,
            sentence_order_label=sentence_order_label,
            kg_triples=kg_triples,
            kg_negatives=kg_negatives,
            mention_spans=mention_spans,
            mention_labels=mention_labels,
            output_hidden_states=True,
        )
        sequence = disc.hidden_states[-1]  # [B, L, H]
        rtd_logits = self.rtd_head(sequence).squeeze(-1)  # [B, L]
        real = targets != IGNORE_INDEX
        rtd_loss = F.binary_cross_entropy_with_logits(rtd_logits[real].float(), targets[real])
        rtd_accuracy = ((rtd_logits[real] > 0).float() == targets[real]).float().mean().detach()
        loss = generator_mlm_loss + self.rtd_weight * rtd_loss + disc.loss
        return ElectraOutput(
            loss=loss,
            generator_mlm_loss=generator_mlm_loss,
            rtd_loss=rtd_loss,
            rtd_accuracy=rtd_accuracy,
            dea_loss=disc.dea_loss,
            sop_loss=disc.sop_loss,
            kg_loss=disc.kg_loss,
            red_loss=disc.red_loss,
            red_accuracy=disc.red_accuracy,
            rtd_logits=rtd_logits.detach(),
            replaced=real & (targets > 0),
            sop_logits=disc.sop_logits,
        )


def electra_flops_per_token(config: KeptConfig, generator_fraction: float, length: int) -> dict[str, float]:
    """Analytic training FLOPs per token (6 x multiply-adds of the matmuls, forward + backward) of the
    MLM model alone and of generator + discriminator: {"mlm": ..., "electra": ..., "ratio": ...}."""

    def encoder(hidden: int, inter: int, layers: int) -> float:
        per_layer = 4 * hidden * hidden + 2 * hidden * inter + 2 * length * hidden  # projections, FFN, attention
        return float(layers * per_layer)

    vocab, hidden = int(config.vocab_size), int(config.hidden_size)
    disc = encoder(hidden, int(config.intermediate_size), config.num_total_layers)
    gen = generator_config(config, generator_fraction)
    gen_enc = encoder(int(gen.hidden_size), int(gen.intermediate_size), int(gen.num_hidden_layers))
    mlm_share = 0.15  # the vocabulary projection runs on the masked positions only (mlm_logits_and_loss)
    mlm = 6 * (disc + mlm_share * (hidden * hidden + hidden * vocab))
    electra = 6 * (
        disc
        + hidden * hidden
        + hidden  # RTD head on every token
        + gen_enc
        + hidden * int(gen.hidden_size)  # generator + its input projection
        + mlm_share * (int(gen.hidden_size) * hidden + hidden * vocab)
    )
    return {"mlm": mlm, "electra": electra, "ratio": electra / mlm}


__all__ = ["KeptElectraForPreTraining", "ElectraOutput", "generator_config", "rtd_labels", "electra_flops_per_token"]
