"""MaskingConfig: what the collator masks and how (configuration is data)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, get_args

from pydantic import Field, ValidationInfo, field_validator

from kg.config_model import ConfigModel
from masking.errors import MaskingError

Strategy = Literal["token", "whole_word", "span", "phrase", "entity", "ernie"]
BasicStrategy = Literal["token", "whole_word", "span", "phrase", "entity"]
DeaReplace = Literal["positions", "distinct"]

#: Strategies the collator knows. ``ernie`` switches between the basic ones (staged or mixed).
STRATEGIES: tuple[str, ...] = get_args(Strategy)
BASIC_STRATEGIES: tuple[str, ...] = get_args(BasicStrategy)
#: What a dEA-replaced alignment draws from: ``positions`` (an aligned position of the batch, so frequent
#: entities are drawn more often) or ``distinct`` (each distinct entity of the batch alike: ERNIE-THU).
DEA_REPLACE_MODES: tuple[str, ...] = get_args(DeaReplace)

#: Baidu ERNIE 1.0: basic-level (word/character) masking, then phrase-level, then entity-level,
#: each for a share of training (strategy, share); shares are normalised to sum to 1.
DEFAULT_ERNIE_STAGES: tuple[tuple[BasicStrategy, float], ...] = (
    ("whole_word", 1 / 3),
    ("phrase", 1 / 3),
    ("entity", 1 / 3),
)


class MaskingConfig(ConfigModel):
    """How to build an MLM (+ dEA) batch.

    - ``strategy``: one of STRATEGIES.
    - ``mlm_probability``: budget, as a share of the non-special tokens of each sequence, filled with
      whole units.
    - ``mask_replace_prob`` / ``random_replace_prob``: per chosen unit, [MASK] / random tokens; the rest
      (``keep_prob``) keeps its tokens.
    - ``span_geometric_p`` / ``span_max_words``: SpanBERT span lengths in words (geometric, truncated).
    - ``entity_share`` / ``phrase_share``: with the ``entity`` (``phrase``) strategy, also inside
      ``ernie``, the share of each sequence's budget that goes to entity (phrase) units; the rest goes to
      the other units (words, and phrases/entities of the other kind), as in Baidu ERNIE's mix of basic,
      phrase and entity masking. What one part cannot use flows to the other: a sequence with few
      mentions fills its budget with words, one that is all mentions with more mentions. ``0.5`` keeps
      about half of the masked tokens words on entity-dense text (36 % of tokens in mentions: 15 % x 0.5
      on entities, the rest on words); ``1.0`` spends the budget on the preferred units first (the old
      behaviour: no word is masked while a mention is left); ``0.0`` masks them only when words run out.
    - ``ernie_stages``: (strategy, share of training) in order, used by ``ernie`` unless
      ``ernie_mixture`` (strategy -> weight; each sequence draws its strategy) is given.
    - ``dea``: build ``entity_ids``/``entity_labels``; of the aligned positions ``dea_replace_prob`` get
      a random entity of the batch, ``dea_remove_prob`` lose their alignment (-1), the rest keep it.
    - ``dea_replace``: where that random entity comes from: ``positions`` (default: an aligned position
      of the batch drawn uniformly, so the replacements follow the entities' frequency in the batch, as
      KEPT always did; runs stay reproducible) or ``distinct`` (each distinct entity of the batch alike,
      as ERNIE-THU's pretraining script does: a frequent entity no longer takes most replacements).
    - ``dea_hide_masked``: also remove the alignment of every masked mention (any of its tokens
      predicted) from the model input, so that a fusion model cannot read a masked entity from its own
      embedding (the held-out MLM evaluation and the entity cloze always do this). Off by default, as in
      ERNIE-THU, where masked mentions keep their alignment (subject to the dEA corruption) and the
      model learns to use the entity embedding for the masked tokens; on, training matches the
      evaluation, where a masked mention is predicted from its context only.
    - ``seed``: the collator's own torch.Generator seed.
    - ``pad_to_multiple_of``: pad the sequence length to a multiple of this.
    - ``replaced_entity_probability``: WKLM (:mod:`masking.replaced_entity`): this share of the linked
      mentions gets the tokens of another KG entity's label (and its entity id); the model says per mention
      whether it was replaced (``model.red_weight``). 0: off.
    """

    error_class: ClassVar[type[MaskingError]] = MaskingError
    section: ClassVar[str] = "masking"

    strategy: Strategy = "entity"
    mlm_probability: float = Field(0.15, ge=0.0, le=1.0)
    mask_replace_prob: float = Field(0.8, ge=0.0, le=1.0)
    random_replace_prob: float = Field(0.1, ge=0.0, le=1.0)
    span_geometric_p: float = Field(0.2, gt=0.0, le=1.0, description="SpanBERT: 0.2")
    span_max_words: int = Field(10, ge=1, description="SpanBERT: 10")
    entity_share: float = Field(0.5, ge=0.0, le=1.0)
    phrase_share: float = Field(0.5, ge=0.0, le=1.0)
    ernie_stages: tuple[tuple[BasicStrategy, Annotated[float, Field(ge=0.0)]], ...] = DEFAULT_ERNIE_STAGES
    ernie_mixture: Optional[dict[BasicStrategy, Annotated[float, Field(ge=0.0)]]] = None
    dea: bool = True
    dea_replace_prob: float = Field(0.05, ge=0.0, le=1.0)
    dea_remove_prob: float = Field(0.15, ge=0.0, le=1.0)
    dea_replace: DeaReplace = "positions"
    dea_hide_masked: bool = False
    seed: int = 0
    pad_to_multiple_of: Optional[int] = Field(None, ge=1)
    replaced_entity_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="WKLM replaced-entity detection: share of the linked mentions swapped for "
        "another KG entity (same type where the KG types them; "
        "masking.replaced_entity); 0: off",
    )

    @field_validator("random_replace_prob")
    @classmethod
    def _replacements_fit(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("mask_replace_prob", 0.0) + value > 1.0 + 1e-9:
            raise ValueError(
                "mask_replace_prob + random_replace_prob exceeds 1; e.g. 0.8 and 0.1 (the remaining "
                "0.1 keeps the tokens)"
            )
        return value

    @field_validator("dea_remove_prob")
    @classmethod
    def _dea_corruption_fits(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("dea_replace_prob", 0.0) + value > 1.0 + 1e-9:
            raise ValueError("dea_replace_prob + dea_remove_prob exceeds 1; e.g. 0.05 and 0.15")
        return value

    @field_validator("ernie_stages", "ernie_mixture")
    @classmethod
    def _some_weight(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return value
        weights = [w for _, w in value] if isinstance(value, tuple) else list(value.values())
        if sum(weights) <= 0:
            raise ValueError(
                f"{info.field_name} needs at least one strategy with a weight > 0, e.g. "
                "[[whole_word, 1], [phrase, 1], [entity, 1]]"
            )
        return value

    @property
    def keep_prob(self) -> float:
        return 1.0 - self.mask_replace_prob - self.random_replace_prob
