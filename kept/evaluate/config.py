"""Configuration of `kept evaluate`: what to measure and how many items (the ``eval:`` section).

Defaults are sized so a tiny demo model evaluates in well under a minute on a 2-core CPU;
raise the caps for a real model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MLMEvalConfig(_Section):
    enabled: bool = True
    max_examples: int = Field(256, ge=1, description="encoded validation sequences evaluated")
    mlm_probability: Optional[float] = Field(None, gt=0, lt=1, description="None: the run's value (or 0.15)")


class ClozeEvalConfig(_Section):
    enabled: bool = True
    max_mentions: int = Field(256, ge=1, description="held-out linked mentions masked, one at a time")
    max_rows: int = Field(2000, ge=1, description="validation sequences scanned for linked mentions")
    max_pieces: int = Field(8, ge=1, description="mentions longer than this (word pieces) are skipped")
    context_tokens: int = Field(64, ge=8, description="tokens of context kept on each side of the mention")


def check_template_slots(template: str) -> str:
    """A probe template holds ``[X]`` (the head) and ``[Y]`` (the answer) exactly once each."""
    if template.count("[X]") != 1 or template.count("[Y]") != 1:
        raise ValueError(
            f"template {template!r} must contain [X] (the head) and [Y] (the answer) once each, "
            'e.g. "[X] is located in [Y] ."'
        )
    return template


class ProbeEvalConfig(_Section):
    enabled: bool = True
    max_facts: int = Field(200, ge=1, description="held-out triples turned into cloze facts")
    max_candidates: int = Field(100, ge=2, description="tail candidates per fact (gold always included)")
    max_pieces: int = Field(6, ge=1, description="candidates longer than this (word pieces) are dropped")
    score: Literal["sum", "mean"] = Field("sum", description="masked PLL: sum of piece log-probs, or their mean")
    filtered: bool = Field(True, description="drop other true tails of (head, relation) from the candidates")
    holdout_fraction: float = Field(
        0.1, gt=0, le=1, description="share of triples used as held-out facts when the KG has no test split"
    )
    templates: dict[str, str] = Field(
        default_factory=dict, description='per relation (name or label): "[X] is located in [Y] ."'
    )
    default_template: Optional[str] = Field(
        None,
        description="[X] head, [R] relation label, [Y] the answer; None: "
        "the language's ('[X] [R] [Y] .' en, '[X][R][Y]。' zh)",
    )
    language: Literal["auto", "en", "zh"] = Field(
        "auto", description="prompt language; auto: zh when most entity labels are CJK, else en"
    )
    relation_labels: Optional[Path] = Field(
        None,
        description="relation labels: TSV name<TAB>label, or JSON "
        "{name: label} / FewRel's pid2name.json {name: [label, description]}",
    )

    @field_validator("default_template")
    @classmethod
    def _template_has_slots(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_template_slots(value)

    @field_validator("templates")
    @classmethod
    def _templates_have_slots(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            check_template_slots(template)
        return value


class RelationEvalConfig(_Section):
    enabled: bool = True
    data: Optional[Path] = Field(None, description="FewRel-format JSON file; None: the run config's fewrel setting")
    max_relations: int = Field(5, ge=2)
    max_per_relation: int = Field(40, ge=2, description="sentences per relation (train + test)")
    test_fraction: float = Field(0.3, gt=0, lt=1)
    dev_fraction: float = Field(
        0.15,
        ge=0,
        lt=1,
        description="share of each relation's training sentences held out (seeded) as a "
        "dev split that picks the best epoch by macro-F1; 0: score the last epoch",
    )
    epochs: Optional[int] = Field(
        None, ge=1, description="None: derived from the model size (kept.evaluate.relation.finetune_defaults)"
    )
    learning_rate: Optional[float] = Field(
        None,
        gt=0,
        description="peak AdamW learning rate; None: derived from the model size (1e-4 small, 5e-5 base encoders)",
    )
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="share of the steps with a linear warm-up; then linear decay to 0"
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and LayerNorm weights)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(96, ge=16)


class TypingEvalConfig(_Section):
    """Entity typing (kept.evaluate.typing): a multi-label fine-tune scored by loose micro-F1."""

    enabled: bool = Field(
        False,
        description="opt-in (a fine-tune: minutes on a CPU); on: runs when typing data is available, else the metric says why "
        "it was skipped",
    )
    data: Optional[Path] = Field(
        None,
        description="OpenEntity/FIGER-format file (JSON array as in ERNIE-THU, or "
        "JSON lines: sent, start, end, labels[, ents, entity, id]) or a "
        "directory with train.json/test.json[/dev.json]; None: mentions "
        "derived from the run's gold entity links typed by its KG, test "
        "mentions from the held-out validation documents",
    )
    gold_only: bool = Field(True, description="derived items: gold links only (off: detector-linked spans too)")
    context_chars: int = Field(200, ge=10, description="derived items: characters of context on each side")
    max_per_entity: int = Field(5, ge=1, description="derived items: mentions of one entity kept per split")
    min_type_count: int = Field(3, ge=1, description="types with fewer training mentions are dropped")
    max_types: int = Field(64, ge=1, description="the most frequent types kept (columns of the classifier)")
    max_train_items: int = Field(2000, ge=1, description="training mentions (seeded sample); dev: up to a quarter")
    max_test_items: int = Field(500, ge=1, description="test mentions (seeded sample)")
    dev_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="share of the training documents (derived items) or "
        "items (a file without dev.json) used as the dev split "
        "that picks the best epoch; 0: the last epoch",
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="a single data file: share of items held out for test")
    threshold: float = Field(
        0.5, gt=0, lt=1, description="a type is predicted above this probability (and the top type always)"
    )
    link_threshold: float = Field(
        0.3,
        ge=0,
        description="data file: linked mentions (ents) above this score enter fusion models (ERNIE-THU's threshold)",
    )
    entity_input: bool = Field(
        True,
        description="fusion runs: the KG ids of the linked mentions in the sentence "
        "(the typed one included) enter the model, as in ERNIE-THU",
    )
    epochs: Optional[int] = Field(
        None, ge=1, description="None: from the model size (kept.evaluate.relation.finetune_defaults)"
    )
    learning_rate: Optional[float] = Field(
        None, gt=0, description="peak AdamW learning rate; None: from the model size"
    )
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(96, ge=16, description="word pieces per item (a window around the mention)")


class LinkPredEvalConfig(_Section):
    enabled: bool = True
    recompute: bool = Field(
        False, description="retrain the KG embedding and rank again instead of reading kg_metrics.json"
    )


class EvalConfig(_Section):
    """The ``eval:`` section of a run configuration."""

    seed: int = Field(
        0,
        description="seed of what is sampled to test (cloze mentions, probe facts, MLM masks, "
        "the relation and typing splits): the same test items for every run",
    )
    finetune_seed: int | None = Field(
        None,
        description="seed of the relation/typing fine-tunes (new classifier, data order, dropout); "
        "null: train.seed, so that each seed of a `kept compare` variant also fine-tunes "
        "with its own seed and the spread over seeds includes the fine-tuning's",
    )
    batch_size: int = Field(32, ge=1)
    num_examples: int = Field(10, ge=0, description="cloze/probe examples stored in metrics.json")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    mlm: MLMEvalConfig = MLMEvalConfig()
    cloze: ClozeEvalConfig = ClozeEvalConfig()
    probe: ProbeEvalConfig = ProbeEvalConfig()
    relation: RelationEvalConfig = RelationEvalConfig()
    typing: TypingEvalConfig = TypingEvalConfig()
    linkpred: LinkPredEvalConfig = LinkPredEvalConfig()


def coerce_eval_config(config: Any) -> EvalConfig:
    """Accept an EvalConfig, a run config carrying ``.eval``, a mapping, or None (defaults)."""
    if config is None:
        return EvalConfig()
    if isinstance(config, EvalConfig):
        return config
    section = getattr(config, "eval", None)
    if isinstance(section, EvalConfig):
        return section
    if section is not None and hasattr(section, "model_dump"):
        return EvalConfig.model_validate(section.model_dump())
    if isinstance(section, dict):
        return EvalConfig.model_validate(section)
    if isinstance(config, dict):
        return EvalConfig.model_validate(config.get("eval", config) if "eval" in config else config)
    from kept.errors import KeptError

    raise KeptError(
        f"cannot read evaluation settings from a {type(config).__name__}",
        where="eval",
        fix="pass an EvalConfig, a RunConfig or a dict",
    )
