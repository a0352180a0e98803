"""KeptConfig: BERT sizes plus the knowledge (K-encoder) layers, the entity table and the objectives."""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

from fusion.errors import FusionError
from fusion.kg_link import KG_INTERACTIONS, KG_LOSSES

# Presets. "base" follows ERNIE-THU (BERT-base width, 6 T + 6 K layers, 100-d TransE entities,
# 4 entity attention heads, BERT's intermediate size for the fused layer).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_knowledge_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        entity_dim=32,
        num_entity_attention_heads=4,
        max_position_embeddings=512,
        dea_num_negatives=16,
    ),
    "base": dict(
        hidden_size=768,
        num_hidden_layers=6,
        num_knowledge_layers=6,
        num_attention_heads=12,
        intermediate_size=3072,
        entity_dim=100,
        num_entity_attention_heads=4,
        max_position_embeddings=512,
        dea_num_negatives=100,
    ),
    "large": dict(
        hidden_size=1024,
        num_hidden_layers=12,
        num_knowledge_layers=12,
        num_attention_heads=16,
        intermediate_size=4096,
        entity_dim=100,
        num_entity_attention_heads=4,
        max_position_embeddings=512,
        dea_num_negatives=100,
    ),
}
# The original ERNIE-THU everywhere KEPT differs (see KeptConfig's "ERNIE-THU options"), at base sizes.
# Pair it with ``MaskingConfig(dea_replace="distinct")`` (run YAML: ``masking: {dea_replace: distinct}``).
ERNIE_THU_OPTIONS: dict[str, Any] = dict(
    first_knowledge_layer="mix",
    entity_bias_at="all",
    entity_mask_cls=True,
    dea_null_candidate=True,
    dea_num_negatives=0,
)
PRESETS["ernie_thu"] = {**PRESETS["base"], **ERNIE_THU_OPTIONS}
FIRST_KNOWLEDGE_LAYERS: tuple[str, ...] = ("norm", "mix")
ENTITY_BIAS_AT: tuple[str, ...] = ("aligned", "all")
#: sizes that must be positive, counts that may be 0, and (width, head count) pairs where the count must divide
#: the width: :meth:`KeptConfig.validate_sizes` and kept's check of ``model.overrides`` read the same lists.
POSITIVE_SIZES: tuple[str, ...] = (
    "vocab_size",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "entity_dim",
    "num_entity_attention_heads",
    "max_position_embeddings",
)
NON_NEGATIVE_COUNTS: tuple[str, ...] = (
    "num_hidden_layers",
    "num_knowledge_layers",
    "entity_vocab_size",
    "dea_num_negatives",
)
HEAD_DIVISORS: tuple[tuple[str, str], ...] = (
    ("hidden_size", "num_attention_heads"),
    ("entity_dim", "num_entity_attention_heads"),
)


@strict
class KeptConfig(PreTrainedConfig):
    """Configuration of the ERNIE-THU style knowledge-fusion model.

    ``num_hidden_layers`` is the depth of the T-encoder (plain BERT layers), ``num_knowledge_layers``
    the depth of the K-encoder (aggregator layers that fuse token and entity states). The entity
    table (``entity_vocab_size`` x ``entity_dim``) is frozen and kept off the accelerator unless
    ``freeze_entity_table`` is False. Losses: ``mlm_weight * MLM + dea_weight * dEA (+ sop_weight * SOP
    when use_sop)``; dEA scores each labelled token against the batch's entities plus
    ``dea_num_negatives`` uniformly sampled entities. ``joint_kg_weight`` > 0 (with a trainable table and
    ``relation_vocab_size`` relations) adds ``joint_kg_weight * KG`` link prediction on the batch's
    ``kg_triples`` (fusion.kg_link: ``joint_kg_interaction`` TransE with ``joint_kg_norm`` or DistMult,
    ``joint_kg_loss`` margin (``joint_kg_margin``) or softplus).

    ERNIE-THU options: where KEPT departs from the original code (thunlp/ERNIE), each choice is an option
    whose default keeps KEPT's behaviour; the ``ernie_thu`` preset selects the original's everywhere.

    - ``first_knowledge_layer``: ``"norm"`` (default) gives every K layer its entity self-attention;
      ``"mix"`` makes the first one fuse the input entity embeddings as they are, without entity
      self-attention (the original's ``layer_types``: "mix" then "norm"). Default: the same layer
      everywhere, and KEPT checkpoints saved so far carry that layer's entity attention.
    - ``entity_bias_at``: where the bias ``b_e`` of ``W_e·ẽ + b_e`` enters the fused state: ``"aligned"``
      (default) at tokens with an entity only; ``"all"`` at every token, as the original (it applies
      ``dense_ent`` to a zero vector at tokens without entity). Default: a token without entity then goes
      through exactly a BERT layer, so text without entities is BERT's computation (``from_bert`` starts
      from BERT's function, ``kept export --text-only`` keeps it).
    - ``entity_mask_cls``: also put [CLS] (position 0) in the entity mask, as the original's run scripts
      (``mask[:, 0] = 1``): a slot with a zero entity vector (its linked entity's, if any) that the
      entities attend to and that fuses into [CLS]. Default False: [CLS] carries no entity, and the paper
      aligns entities with mentions only.
    - ``dea_null_candidate``: add a "no entity" candidate (KG id -1, a zero vector, so its score is 0) in
      front of the dEA candidates, as the original. With ``dea_num_negatives=0`` the candidates are the
      original's: the batch's distinct entities and the null one. Default False, with uniform negatives
      (``dea_num_negatives``): a small batch holds few entities, and random negatives keep the dEA task
      from being trivially easy there; a candidate that is never a target adds nothing to learn from.
    - NSP (the original's sentence head) is not offered: the head would equal the SOP head (``use_sop``,
      a linear layer on the pooled [CLS]); NSP differs in its data (a second segment from another
      document half of the time), which the encoder does not build.

    ``max_entity_slots``: None (default) sizes the entity slots per batch (the most aligned entities of
    any sequence), the fastest eager layout; an int fixes them (padding slots are masked, results are the
    same), so the model has no data-dependent shape: set it for ``torch.export``/ONNX export and for
    ``torch.compile(fullgraph=True)``. A sequence with more aligned entities raises.
    """

    model_type = "kept"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 6
    num_knowledge_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    classifier_dropout: float | int | None = None
    # entities
    entity_dim: int = 100
    num_entity_attention_heads: int = 4
    entity_vocab_size: int = 0
    freeze_entity_table: bool = True
    entity_table_sparse_grad: bool = True
    # objectives
    mlm_weight: float | int = 1.0
    dea_weight: float | int = 1.0
    sop_weight: float | int = 1.0
    use_sop: bool = False
    dea_num_negatives: int = 100
    # joint KG link prediction on a trainable entity table (KEPLER/DRAGON; fusion.kg_link): weight 0 = off
    joint_kg_weight: float | int = 0.0
    joint_kg_interaction: str = "TransE"
    joint_kg_loss: str = "margin"
    joint_kg_margin: float | int = 1.0
    joint_kg_norm: int = 1
    relation_vocab_size: int = 0
    # replaced-entity detection (WKLM; fusion.wklm): weight 0 = off (no head)
    red_weight: float | int = 0.0
    # ERNIE-THU options (see the docstring; the ernie_thu preset sets the original's value of each)
    first_knowledge_layer: str = "norm"
    entity_bias_at: str = "aligned"
    entity_mask_cls: bool = False
    dea_null_candidate: bool = False
    # static entity slots per sequence (None: the batch's most, dynamic); see the docstring
    max_entity_slots: int | None = None
    # BERT layer plumbing (encoder only)
    is_decoder: bool = False
    add_cross_attention: bool = False
    use_cache: bool = False
    tie_word_embeddings: bool = True

    preset_names: ClassVar[tuple[str, ...]] = tuple(PRESETS)

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.validate_sizes()

    def validate_sizes(self) -> None:
        """Raise FusionError when head counts do not divide the widths or a size is not positive."""
        for name in POSITIVE_SIZES:
            if int(getattr(self, name)) <= 0:
                raise FusionError(
                    f"{name} must be positive, got {getattr(self, name)}",
                    where=f"KeptConfig.{name}",
                    fix="Use a positive size.",
                )
        for name in NON_NEGATIVE_COUNTS:
            if int(getattr(self, name)) < 0:
                raise FusionError(
                    f"{name} must be >= 0, got {getattr(self, name)}",
                    where=f"KeptConfig.{name}",
                    fix="Use 0 or a positive number.",
                )
        if self.max_entity_slots is not None and int(self.max_entity_slots) < 1:
            raise FusionError(
                f"max_entity_slots must be >= 1 or None, got {self.max_entity_slots}",
                where="KeptConfig.max_entity_slots",
                fix="Use None (slots sized per batch) or a positive slot count.",
            )
        if float(self.joint_kg_weight) < 0 or int(self.joint_kg_norm) < 1:
            raise FusionError(
                f"joint_kg_weight must be >= 0 and joint_kg_norm >= 1, got {self.joint_kg_weight}, "
                f"{self.joint_kg_norm}",
                where="KeptConfig.joint_kg_weight",
                fix="Use 0 to turn it off.",
            )
        for name, allowed in (
            ("first_knowledge_layer", FIRST_KNOWLEDGE_LAYERS),
            ("entity_bias_at", ENTITY_BIAS_AT),
            ("joint_kg_interaction", KG_INTERACTIONS),
            ("joint_kg_loss", KG_LOSSES),
        ):
            if getattr(self, name) not in allowed:
                raise FusionError(
                    f"{name} is {getattr(self, name)!r}",
                    where=f"KeptConfig.{name}",
                    fix=f"Use one of: {', '.join(allowed)}.",
                )
        for width, heads in HEAD_DIVISORS:
            if getattr(self, width) % getattr(self, heads):
                raise FusionError(
                    f"{width} {getattr(self, width)} is not a multiple of {heads} {getattr(self, heads)}",
                    where=f"KeptConfig.{heads}",
                    fix=f"Choose a head count that divides {width}.",
                )

    @property
    def num_total_layers(self) -> int:
        """T-encoder plus K-encoder depth."""
        return int(self.num_hidden_layers) + int(self.num_knowledge_layers)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> KeptConfig:
        """``KeptConfig.from_preset("tiny"|"base"|"large"|"ernie_thu", **overrides)``."""
        if name not in PRESETS:
            raise FusionError(
                f"unknown preset {name!r}", where="KeptConfig.from_preset", fix=f"Use one of: {', '.join(PRESETS)}."
            )
        values = dict(PRESETS[name])
        values.update(overrides)
        return cls(**values)


__all__ = ["KeptConfig", "PRESETS"]
