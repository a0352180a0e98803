"""MaskingConfig: what the collator masks and how (configuration is data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from masking.errors import MaskingError

#: Strategies the collator knows. ``ernie`` switches between the basic ones (staged or mixed).
STRATEGIES: tuple[str, ...] = ("token", "whole_word", "span", "phrase", "entity", "ernie")
BASIC_STRATEGIES: tuple[str, ...] = ("token", "whole_word", "span", "phrase", "entity")
#: What a dEA-replaced alignment draws from: ``positions`` (an aligned position of the batch, so frequent
#: entities are drawn more often) or ``distinct`` (each distinct entity of the batch alike: ERNIE-THU).
DEA_REPLACE_MODES: tuple[str, ...] = ("positions", "distinct")

#: Baidu ERNIE 1.0: basic-level (word/character) masking, then phrase-level, then entity-level,
#: each for a share of training (strategy, share); shares are normalised to sum to 1.
DEFAULT_ERNIE_STAGES: tuple[tuple[str, float], ...] = (("whole_word", 1 / 3), ("phrase", 1 / 3), ("entity", 1 / 3))


@dataclass
class MaskingConfig:
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
    """

    strategy: str = "entity"
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    span_geometric_p: float = 0.2
    span_max_words: int = 10
    entity_share: float = 0.5
    phrase_share: float = 0.5
    ernie_stages: tuple[tuple[str, float], ...] = DEFAULT_ERNIE_STAGES
    ernie_mixture: dict[str, float] | None = None
    dea: bool = True
    dea_replace_prob: float = 0.05
    dea_remove_prob: float = 0.15
    dea_replace: str = "positions"
    dea_hide_masked: bool = False
    seed: int = 0
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        # YAML/JSON give lists: store the stages as a tuple of (strategy, share) pairs
        try:
            self.ernie_stages = tuple((str(name), float(share)) for name, share in self.ernie_stages)
        except (TypeError, ValueError):
            raise MaskingError(f"invalid stages {self.ernie_stages!r}", where="masking.ernie_stages",
                               fix="give a list of [strategy, share] pairs, e.g. [[whole_word, 1], [phrase, 1], "
                                   "[entity, 1]]") from None
        if self.ernie_mixture is not None:
            self.ernie_mixture = {str(k): float(v) for k, v in dict(self.ernie_mixture).items()}

    @property
    def keep_prob(self) -> float:
        return 1.0 - self.mask_replace_prob - self.random_replace_prob

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> "MaskingConfig":
        def bad(field_name: str, what: str, fix: str) -> MaskingError:
            return MaskingError(what, where=f"masking.{field_name}", fix=fix)

        if self.strategy not in STRATEGIES:
            raise bad("strategy", f"unknown masking strategy {self.strategy!r}", f"use one of {', '.join(STRATEGIES)}")
        if not 0.0 <= self.mlm_probability <= 1.0:
            raise bad("mlm_probability", f"{self.mlm_probability} is not in [0, 1]", "use e.g. 0.15")
        for name in ("mask_replace_prob", "random_replace_prob", "dea_replace_prob", "dea_remove_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise bad(name, f"{value} is not in [0, 1]", "give a probability")
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise bad("mask_replace_prob", "mask_replace_prob + random_replace_prob exceeds 1",
                      "e.g. 0.8 and 0.1 (the remaining 0.1 keeps the tokens)")
        if self.dea_replace_prob + self.dea_remove_prob > 1.0 + 1e-9:
            raise bad("dea_replace_prob", "dea_replace_prob + dea_remove_prob exceeds 1", "e.g. 0.05 and 0.15")
        if self.dea_replace not in DEA_REPLACE_MODES:
            raise bad("dea_replace", f"unknown dEA replacement {self.dea_replace!r}",
                      f"use one of {', '.join(DEA_REPLACE_MODES)}")
        for name in ("entity_share", "phrase_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise bad(name, f"{value} is not in [0, 1]",
                          "give the share of the budget for those units, e.g. 0.5 (1.0: all of it first)")
        if not 0.0 < self.span_geometric_p <= 1.0 or self.span_max_words < 1:
            raise bad("span_geometric_p", f"p={self.span_geometric_p}, max={self.span_max_words}",
                      "use 0 < p <= 1 and span_max_words >= 1 (SpanBERT: 0.2 and 10)")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise bad("pad_to_multiple_of", f"{self.pad_to_multiple_of} < 1", "use None or a positive integer")
        stages = list(self.ernie_stages)
        if not stages or any(s not in BASIC_STRATEGIES or w < 0 for s, w in stages) or sum(w for _, w in stages) <= 0:
            raise bad("ernie_stages", f"invalid stages {stages!r}",
                      f"give (strategy, share) pairs with strategies from {', '.join(BASIC_STRATEGIES)} and shares >= 0")
        if self.ernie_mixture is not None:
            mix = dict(self.ernie_mixture)
            if not mix or any(s not in BASIC_STRATEGIES or w < 0 for s, w in mix.items()) or sum(mix.values()) <= 0:
                raise bad("ernie_mixture", f"invalid mixture {mix!r}",
                          f"give strategy -> weight with strategies from {', '.join(BASIC_STRATEGIES)}, weights >= 0")
        return self
