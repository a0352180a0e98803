"""KeptConfig: BERT sizes plus the knowledge (K-encoder) layers, the entity table and the objectives."""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

from fusion.errors import FusionError

# Preset sizes. "base" follows ERNIE-THU (BERT-base width, 6 T + 6 K layers, 100-d TransE entities,
# 4 entity attention heads, BERT's intermediate size for the fused layer).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_knowledge_layers=2, num_attention_heads=4,
                 intermediate_size=256, entity_dim=32, num_entity_attention_heads=4,
                 max_position_embeddings=512, dea_num_negatives=16),
    "base": dict(hidden_size=768, num_hidden_layers=6, num_knowledge_layers=6, num_attention_heads=12,
                 intermediate_size=3072, entity_dim=100, num_entity_attention_heads=4,
                 max_position_embeddings=512, dea_num_negatives=100),
    "large": dict(hidden_size=1024, num_hidden_layers=12, num_knowledge_layers=12, num_attention_heads=16,
                  intermediate_size=4096, entity_dim=100, num_entity_attention_heads=4,
                  max_position_embeddings=512, dea_num_negatives=100),
}


@strict
class KeptConfig(PreTrainedConfig):
    """Configuration of the ERNIE-THU style knowledge-fusion model.

    ``num_hidden_layers`` is the depth of the T-encoder (plain BERT layers), ``num_knowledge_layers``
    the depth of the K-encoder (aggregator layers that fuse token and entity states). The entity
    table (``entity_vocab_size`` x ``entity_dim``) is frozen and kept off the accelerator unless
    ``freeze_entity_table`` is False. Losses: ``mlm_weight * MLM + dea_weight * dEA (+ sop_weight * SOP
    when use_sop)``; dEA scores each labelled token against the batch's entities plus
    ``dea_num_negatives`` uniformly sampled entities.
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
        for name in ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size", "entity_dim",
                     "num_entity_attention_heads", "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                raise FusionError(f"{name} must be positive, got {getattr(self, name)}",
                                  where=f"KeptConfig.{name}", fix="Use a positive size.")
        for name in ("num_hidden_layers", "num_knowledge_layers", "entity_vocab_size", "dea_num_negatives"):
            if int(getattr(self, name)) < 0:
                raise FusionError(f"{name} must be >= 0, got {getattr(self, name)}",
                                  where=f"KeptConfig.{name}", fix="Use 0 or a positive number.")
        if self.hidden_size % self.num_attention_heads:
            raise FusionError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}",
                where="KeptConfig.num_attention_heads", fix="Choose a head count that divides hidden_size.")
        if self.entity_dim % self.num_entity_attention_heads:
            raise FusionError(
                f"entity_dim {self.entity_dim} is not a multiple of num_entity_attention_heads "
                f"{self.num_entity_attention_heads}",
                where="KeptConfig.num_entity_attention_heads", fix="Choose a head count that divides entity_dim.")

    @property
    def num_total_layers(self) -> int:
        """T-encoder plus K-encoder depth."""
        return int(self.num_hidden_layers) + int(self.num_knowledge_layers)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "KeptConfig":
        """``KeptConfig.from_preset("tiny"|"base"|"large", **overrides)``."""
        if name not in PRESETS:
            raise FusionError(f"unknown preset {name!r}", where="KeptConfig.from_preset",
                              fix=f"Use one of: {', '.join(PRESETS)}.")
        values = dict(PRESETS[name])
        values.update(overrides)
        return cls(**values)


__all__ = ["KeptConfig", "PRESETS"]
