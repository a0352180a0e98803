"""The run configuration: one YAML file, validated with pydantic, saved resolved in the run directory.

```yaml
name: demo                  # the run directory is runs_dir/name unless a command is given one
data: {source: wikipedia_sample, max_documents: 30}
kg: {model: TransE, dim: 64, epochs: 50}          # kg.EmbeddingConfig fields
annotation: {...}                                  # masking.AnnotationConfig fields
tokenizer: {vocab_size: 8000}                      # or base_model: bert-base-uncased
encode: {max_length: 128, validation_fraction: 0.1}
masking: {strategy: entity}                        # masking.MaskingConfig fields
model: {preset: tiny, fusion: true, init_from: null}
train: {max_steps: 200, batch_size: 16, learning_rate: 5e-4}
eval: {...}                                        # kept.evaluate.config.EvalConfig fields
```

Every section forbids unknown keys; a wrong key or type is a :class:`KeptError` naming the key
path, the file and the line. Numbers must be finite and not booleans; the YAML is read by
:func:`read_yaml` (no aliases, no duplicate keys, not empty). Command-line flags are overrides of the same fields
(``--set train.max_steps=50``), applied after the file.

The ``kg``, ``annotation`` and ``masking`` sections are the configuration classes of the ``kg`` and
``masking`` packages (pydantic models on the one base, :class:`kg.config_model.ConfigModel`), so their
fields are defined (and documented) in one place.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Collection, Iterable, Literal, Optional, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator

from kept.errors import KeptError
from kg.config_model import ConfigModel, boolean_number_problem  # noqa: F401 - boolean_number_problem: kept's name
from kg.embedding_config import EmbeddingConfig
from masking.detectors.config import AnnotationConfig
from masking.masking_config import MaskingConfig

DataSource = Literal["wikipedia_sample", "pykeen", "files", "fewrel", "sanguo_sample"]


class _Section(ConfigModel):
    """A configuration section of kept: :class:`kg.config_model.ConfigModel` (unknown keys, booleans where a
    number belongs refused; floats with a fraction are no integers), errors left as pydantic's."""


def non_finite_number(data: Any, loc: tuple = ()) -> tuple | None:
    """The key path of the first ``.inf``/``.nan`` in a raw configuration (no field takes one), or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return loc
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found = non_finite_number(value, (*loc, key))
        if found is not None:
            return found
    return None


#: pydantic's message for an unknown key; a validator that knows better says its own (a hint, used as the fix).
_PYDANTIC_EXTRA = "Extra inputs are not permitted"


class _ExternalError(ValueError):
    def __init__(self, problems: list[tuple[tuple, str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, _, msg in problems))


# ------------------------------------------------------------------ our own sections

class DataConfig(_Section):
    """Where the corpus and the knowledge graph come from."""

    source: DataSource = Field("wikipedia_sample", description="wikipedia_sample | pykeen | files | fewrel | sanguo_sample (Chinese)")
    corpus: Optional[Path] = Field(None, description="files: txt/jsonl/parquet file or HF dataset dir; "
                                                     "fewrel: a FewRel JSON file or a directory of them")
    text_field: str = Field("text", description="column holding the text (jsonl/parquet/HF)")
    title_field: str = "title"
    id_field: str = "id"
    max_documents: Optional[int] = Field(None, ge=1, description="keep only the first N documents")
    wikipedia_dump: Optional[Path] = Field(None, description="wikipedia_sample: another MediaWiki XML dump")
    pykeen_dataset: str = Field("Nations", description="pykeen: a bundled dataset name")
    kg_triples: Optional[Path] = Field(None, description="files: head<TAB>relation<TAB>tail file")
    kg_labels: Optional[Path] = Field(None, description="files: entity<TAB>label file")
    kg_aliases: Optional[Path] = Field(None, description="files: entity<TAB>alias file")
    fewrel: Optional[Path] = Field(None, description="FewRel-format file for relation classification")


class TokenizerConfig(_Section):
    base_model: Optional[str] = Field(None, description="a local model dir or hub name; None: train WordPiece")
    vocab_size: int = Field(8000, ge=100)
    min_frequency: int = Field(2, ge=1)
    lowercase: bool = True


class EncodeConfig(_Section):
    max_length: int = Field(128, ge=16, le=8192)
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of documents held out")
    packing: bool = Field(False, description="pack chunks of consecutive documents into full sequences")
    seed: int = 0
    num_proc: int = Field(1, ge=1)
    segmenter: str = Field("none", description="word units for text without spaces: none | jieba | pkuseg | "
                                               "spacy:<pipeline> (masking.segmenters)")
    max_unk_rate: Optional[float] = Field(0.05, ge=0.0, le=1.0, description="refuse an encoding with more [UNK] "
                                                                             "tokens than this share; null: never")
    sentence_pairs: bool = Field(False, description="ALBERT sentence-order pairs ([CLS] A [SEP] B [SEP], swapped "
                                                    "half the time, token_type_ids, sentence_order_label): the "
                                                    "data that model.overrides.use_sop trains on")

    @field_validator("segmenter")
    @classmethod
    def _known_segmenter(cls, value: str) -> str:
        from masking.errors import MaskingError
        from masking.segmenters import check_segmenter_name

        try:
            return check_segmenter_name(value)
        except MaskingError as error:
            raise ValueError(f"{error.what}; {error.fix}") from None

    @field_validator("sentence_pairs")
    @classmethod
    def _pairs_not_packed(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("packing"):
            raise ValueError("sentence pairs are one pair per sequence; set encode.packing: false")
        return value


class ModelConfig(_Section):
    preset: Literal["tiny", "base", "large", "ernie_thu"] = Field(
        "tiny", description="fusion.PRESETS: sizes (and for ernie_thu the original ERNIE-THU layer options; "
                            "pair it with masking.dea_replace: distinct)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="KeptConfig fields")
    fusion: bool = Field(True, description="entity table + dEA; off: same model, no entity input, dEA weight 0")
    init_from: Optional[str] = Field(None, description="a model dir (kept or BERT) or run:NAME")
    freeze_entity_table: bool = True
    joint_kg_weight: float = Field(0.0, ge=0, description="joint KG link-prediction loss on the trainable entity "
                                                          "table (KEPLER/DRAGON; kept.joint_kg); 0: off")
    joint_kg_interaction: Optional[Literal["TransE", "DistMult"]] = Field(
        None, description="null: the run's kg.model (its relation embeddings start the KG head)")
    joint_kg_loss: Literal["margin", "softplus"] = "margin"
    joint_kg_margin: float = Field(1.0, gt=0)
    joint_kg_negatives: int = Field(8, ge=1, description="corruptions (head or tail) per triple")
    joint_kg_triples_per_batch: int = Field(32, ge=1, description="training triples touching the batch's entities")
    objective: Literal["mlm", "electra"] = Field(
        "mlm", description="electra: a small generator fills the masked units, the KEPT model (fusion included) "
                           "detects replaced tokens (fusion.electra); model/ is that discriminator")
    generator_fraction: float = Field(0.25, gt=0, le=1, description="ELECTRA generator width / discriminator width")
    rtd_weight: float = Field(50.0, ge=0, description="ELECTRA: loss = generator MLM + rtd_weight * RTD")
    red_weight: float = Field(1.0, ge=0, description="WKLM replaced-entity detection loss weight, with "
                                                    "masking.replaced_entity_probability > 0 (kept.replaced_entity)")

    @field_validator("overrides", mode="before")
    @classmethod
    def _kept_config_fields(cls, value: Any, info: ValidationInfo) -> dict[str, Any]:
        validated = validate_model_overrides(value, preset=info.data.get("preset"))
        joint = sorted(k for k in validated if k.startswith("joint_kg_") or k == "relation_vocab_size")
        if joint:  # kept.joint_kg fills these from model.joint_kg_* and the run's KG
            raise _ExternalError([((joint[0],), "value_error", "set the joint KG loss with model.joint_kg_weight, "
                                                               "model.joint_kg_loss, ... instead")])
        return validated

    @field_validator("joint_kg_weight")
    @classmethod
    def _joint_kg_trains_the_table(cls, value: float, info: ValidationInfo) -> float:
        if value > 0 and info.data.get("freeze_entity_table", True):
            raise ValueError("the joint KG loss trains the entity table; set model.freeze_entity_table: false "
                             "(or model.joint_kg_weight: 0)")
        return value


def kept_config_fields() -> dict[str, Any]:
    """The fields ``model.overrides`` may set: ``fusion.KeptConfig``'s own fields with their types, and the
    fields it inherits from transformers' ``PreTrainedConfig`` (not type-checked here: ``Any``)."""
    import dataclasses
    import sys

    from fusion.configuration_kept import KeptConfig

    own = vars(sys.modules[KeptConfig.__module__])
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(KeptConfig):
        if not field.init:
            continue
        annotation: Any = Any
        if field.name in KeptConfig.__annotations__:
            annotation = field.type
            if isinstance(annotation, str):  # postponed annotations of fusion/configuration_kept.py
                annotation = eval(annotation, own)  # noqa: S307 - our own source's annotation text
        fields[field.name] = annotation
    return fields


def closest_name(name: str, names: Iterable[str]) -> str | None:
    """The known name closest to a misspelt one (``hiden_size`` → ``hidden_size``), or None."""
    import difflib

    found = difflib.get_close_matches(str(name), list(names), n=1, cutoff=0.6)
    return found[0] if found else None


#: ranges of model.overrides values: (lowest, lowest allowed itself?, highest or None)
_OVERRIDE_RANGES: dict[str, tuple[float, bool, float | None]] = {
    **{name: (0, False, None) for name in (
        "vocab_size", "hidden_size", "num_attention_heads", "intermediate_size", "entity_dim",
        "num_entity_attention_heads", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
        "max_entity_slots")},
    **{name: (0, True, None) for name in (
        "num_hidden_layers", "num_knowledge_layers", "entity_vocab_size", "dea_num_negatives", "initializer_range",
        "mlm_weight", "dea_weight", "sop_weight", "red_weight")},
    **{name: (0, True, 1) for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")},
}
#: widths and the head counts that must divide them
_HEAD_DIVISORS = (("hidden_size", "num_attention_heads"), ("entity_dim", "num_entity_attention_heads"))


def override_range_problem(key: str, value: Any) -> str | None:
    """What is wrong with the (type-checked) value of ``model.overrides.<key>``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    bounds = _OVERRIDE_RANGES.get(key)
    if bounds is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, inclusive, high = bounds
    if value < low or (value == low and not inclusive):
        return f"must be {'at least' if inclusive else 'greater than'} {low:g}, got {value}"
    if high is not None and value > high:
        return f"must be between {low:g} and {high:g} (a probability), got {value}"
    return None


def _head_problems(validated: dict[str, Any], preset: str | None) -> list[tuple[tuple, str, str]]:
    """A head count that does not divide its width, the other from the overrides or else the preset."""
    from fusion.configuration_kept import PRESETS

    base = PRESETS.get(preset or "", {})
    problems: list[tuple[tuple, str, str]] = []
    for width_key, heads_key in _HEAD_DIVISORS:
        if width_key not in validated and heads_key not in validated:
            continue
        width, heads = validated.get(width_key, base.get(width_key)), validated.get(heads_key, base.get(heads_key))
        if isinstance(width, int) and isinstance(heads, int) and width > 0 and heads > 0 and width % heads:
            key = heads_key if heads_key in validated else width_key
            problems.append(((key,), "value_error",
                             f"{heads_key} {heads} does not divide {width_key} {width}"
                             f"{'' if width_key in validated and heads_key in validated else f' (preset {preset})'}"
                             f"; choose a head count that divides {width_key}"))
    return problems


def validate_model_overrides(value: Any, preset: str | None = None) -> dict[str, Any]:
    """Check ``model.overrides`` against ``fusion.KeptConfig``: every key a field, every value of its type
    (booleans are no numbers) and range (sizes positive, dropouts in [0, 1], head counts dividing their width,
    the width or head count not overridden taken from ``preset``); returns the values as validated (``"8"``
    for an int field becomes 8)."""
    from pydantic import TypeAdapter

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of fusion.KeptConfig fields, got {type(value).__name__}")
    if not value:
        return {}
    fields = kept_config_fields()
    problems: list[tuple[tuple, str, str]] = []
    validated: dict[str, Any] = {}
    for key, item in value.items():
        if key not in fields:
            close = closest_name(key, fields)
            hint = f"did you mean '{close}'? " if close else ""
            problems.append(((key,), "extra_forbidden",
                             f"{hint}model.overrides takes fusion.KeptConfig fields (e.g. hidden_size, "
                             "num_hidden_layers, entity_dim, use_sop)"))
            continue
        problem = boolean_number_problem(fields[key], item)
        if problem:
            problems.append(((key,), "value_error", problem))
            continue
        try:
            validated[key] = TypeAdapter(fields[key]).validate_python(item)
        except ValidationError as error:
            problems.append(((key,), "value_error", error.errors()[0]["msg"]))
            continue
        problem = override_range_problem(key, validated[key])
        if problem:
            problems.append(((key,), "value_error", problem))
            del validated[key]
    if not problems:
        problems = _head_problems(validated, preset)
    if problems:
        raise _ExternalError(problems)
    return validated


class TrainConfig(_Section):
    max_steps: int = Field(200, ge=0, description="0: save the starting model untrained (a reference point)")
    batch_size: int = Field(16, ge=1, description="per device")
    eval_batch_size: Optional[int] = Field(None, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: Optional[float] = Field(
        None, gt=0, description="peak AdamW learning rate; null: derived from the model size and whether it "
                                "starts from a checkpoint (kept.optim.resolve_train_defaults: 5e-4 for the tiny "
                                "preset, 1e-4 for a ~20M-parameter pretrained encoder, 5e-5 for base)")
    lr_scheduler: str = "linear"
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: Optional[float] = Field(
        None, ge=0, lt=1, description="share of max_steps with a linear warm-up, used when warmup_steps is 0; "
                                      "null: derived (0.06; 0.1 for a model of 60M+ parameters from scratch)")
    warmup_tokens: Optional[int] = Field(
        None, ge=1, description="warm-up given in tokens (RoBERTa-style long runs): optimizer steps = ceil(tokens / "
                                "(batch_size x gradient_accumulation_steps x encode.max_length x processes)) "
                                "(kept.scale); not together with warmup_steps or warmup_ratio")
    new_params_warmup_steps: Optional[int] = Field(
        None, ge=0, description="first optimizer steps that train only the parameters the init checkpoint "
                                "did not provide (MLM head, fusion and dEA parts; see the run's "
                                "logs/loading_report.json); the loaded ones are held still, then follow "
                                "the schedule with their own warm-up. null: derived (10% of max_steps "
                                "when starting from a BERT checkpoint, else 0)")
    new_params_learning_rate: Optional[float] = Field(
        None, gt=0, description="peak learning rate of the new parameters; null: derived (10 x learning_rate "
                                "from a BERT checkpoint, else learning_rate)")
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0
    eval_steps: int = Field(50, ge=1)
    final_eval_max_examples: Optional[int] = Field(
        256, ge=1, description="the validation loss after training (when the last step had no periodic "
                               "evaluation) is measured on a seeded sample of at most this many sequences; "
                               "null: the whole split")
    save_steps: int = Field(50, ge=1)
    logging_steps: int = Field(10, ge=1)
    save_total_limit: Optional[int] = Field(3, ge=1)
    bf16: Union[bool, Literal["auto"]] = Field("auto", description="auto: bf16 on a GPU that supports it")
    dataloader_num_workers: int = Field(0, ge=0)
    use_cpu: bool = False
    report_to: Optional[list[Literal["tensorboard", "wandb", "mlflow"]]] = Field(
        None, description="where the Trainer also sends its logs (logs/tensorboard for tensorboard); each must be "
                          "installed. null: tensorboard when it is installed; []: nowhere")

    @field_validator("warmup_tokens")
    @classmethod
    def _one_warmup(cls, value: Optional[int], info: ValidationInfo) -> Optional[int]:
        if value is not None and (info.data.get("warmup_steps") or info.data.get("warmup_ratio") is not None):
            raise ValueError("give the warm-up once: warmup_tokens, warmup_steps or warmup_ratio (set the others "
                             "to 0 / null)")
        return value


class DistillConfig(_Section):
    """``kept distill``: a plain BERT student learns from the run's (fusion) model; see kept.distill."""

    student: Optional[str] = Field(None, description="a student preset (tiny | half | small) or a BERT model "
                                                     "directory; `kept distill --student` sets it")
    student_overrides: dict[str, Any] = Field(default_factory=dict, description="BertConfig fields of a preset "
                                                                                "student (hidden_size, ...)")
    init_from_teacher: bool = Field(True, description="a preset student of the teacher's width starts from the "
                                                      "teacher's text layers (those of the layer map)")
    temperature: float = Field(2.0, gt=0, description="softens both MLM distributions of the KD loss")
    kd_weight: float = Field(1.0, ge=0, description="KL on the masked positions' logits, times T^2")
    hidden_weight: float = Field(1.0, ge=0, description="MSE of mapped hidden states (projected when widths "
                                                        "differ)")
    attention_weight: float = Field(1.0, ge=0, description="distance of mapped layers' attention distributions")
    attention_loss: Literal["kl", "mse"] = "kl"
    mlm_weight: float = Field(0.0, ge=0, description="the student's own MLM loss on the hard labels")
    layer_map: Union[Literal["uniform", "last"], list[int]] = Field(
        "uniform", description="teacher layer (1-based) of each student layer: uniform | last | a list")
    max_steps: int = Field(200, ge=1)
    batch_size: Optional[int] = Field(None, ge=1, description="per device; null: train.batch_size")
    learning_rate: float = Field(5e-4, gt=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    report_relation: bool = Field(True, description="fine-tune teacher and student on the relation task for "
                                                    "the report when FewRel data is configured")
    speed_batches: int = Field(10, ge=1, description="timed batches of the inference-speed comparison")


#: Train fields that do not change what is learned (allowed to differ when resuming).
NON_TRAINING_KEYS: frozenset[str] = frozenset({
    "train.eval_steps", "train.save_steps", "train.logging_steps", "train.save_total_limit",
    "train.eval_batch_size", "train.dataloader_num_workers", "train.use_cpu", "train.bf16",
    "train.final_eval_max_examples", "train.report_to", "encode.num_proc",
})
#: Sections whose values shape training (compared when resuming from a checkpoint).
TRAINING_SECTIONS: tuple[str, ...] = ("tokenizer", "encode", "masking", "model", "train")


def _eval_config_class() -> type:
    from kept.evaluate.config import EvalConfig

    return EvalConfig


class RunConfig(_Section):
    """A whole run: data → kg → annotation → tokenizer → encode → pretrain → eval."""

    #: a plain name of at most 200 characters (a folder name takes 255; kept adds suffixes such as ``.old-<pid>``)
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=200)
    runs_dir: Path = Path("runs")
    data: DataConfig = Field(default_factory=DataConfig)
    kg: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    annotation: AnnotationConfig = Field(default_factory=AnnotationConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    distill: DistillConfig = Field(default_factory=DistillConfig)

    @field_validator("kg", "annotation", "masking", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # `masking:` with every key commented out: the defaults

    @field_validator("eval", mode="before")
    @classmethod
    def _eval(cls, value: Any) -> dict[str, Any]:
        eval_cls = _eval_config_class()
        if value is None:
            value = {}
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        try:
            return eval_cls.model_validate(value).model_dump(mode="json")
        except ValidationError as error:
            raise _ExternalError([(tuple(e["loc"]), e["type"], e["msg"]) for e in error.errors()]) from None

    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    def eval_config(self) -> Any:
        return _eval_config_class().model_validate(self.eval)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ------------------------------------------------------------------ loading, overrides, saving

def _yaml_line(text: str | None, loc: tuple) -> int | None:
    """The 1-based line of a key path in YAML text (the deepest key that exists)."""
    if not text:
        return None
    try:
        node = yaml.compose(text, Loader=_ConfigLoader)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            node = node.value[key]  # a list item: its own line
            line = node.start_mark.line + 1
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if key_node.value == str(key):
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            break
    return line


def _describe(errors: list[tuple[tuple, str, str]]) -> tuple[tuple, str]:
    loc, kind, msg = errors[0]
    path = ".".join(str(part) for part in loc if part not in ("function-after", "function-before"))
    if kind == "extra_forbidden":
        what = f"unknown key '{path}'"
    elif kind == "missing":
        what = f"missing key '{path}'"
    else:
        what = f"invalid value for '{path}': {msg}"
    if len(errors) > 1:
        what += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return loc, what


def _flatten_validation(error: ValidationError) -> list[tuple[tuple, str, str]]:
    problems: list[tuple[tuple, str, str]] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        ctx_error = (item.get("ctx") or {}).get("error")
        if isinstance(getattr(ctx_error, "problems", None), list):  # _ExternalError, a ConfigModel's InputError
            problems.extend((loc + sub_loc, kind, msg) for sub_loc, kind, msg in ctx_error.problems)
        elif isinstance(ctx_error, KeptError):
            problems.append((loc, "value_error", ctx_error.what))
        else:
            problems.append((loc, item["type"], item["msg"].removeprefix("Value error, ")))
    return problems


def validate_config(data: dict[str, Any], *, source: str | Path | None = None, text: str | None = None,
                    overridden: Collection[tuple[str, ...]] = ()) -> RunConfig:
    """Validate a raw mapping; errors name the key path, the file and (from ``text``) the line, or the
    command line for a key in ``overridden`` (set by a flag or ``--set``)."""
    if not isinstance(data, dict):
        raise KeptError("a run configuration must be a YAML mapping of sections", where=source,
                        fix="start from the example in README.md (`kept run --help`)")
    loc = non_finite_number(data)
    if loc is not None:
        raise _config_error(f"invalid value for '{'.'.join(map(str, loc))}': not a finite number", loc,
                            "give a finite number (.inf and .nan are not allowed)", source, text, overridden)
    try:
        return RunConfig.model_validate(data)
    except KeptError:
        raise
    except ValidationError as error:
        problems = _flatten_validation(error)
        loc, what = _describe(problems)
        valid = ", ".join(RunConfig.model_fields) if len(loc) == 1 else None
        kind, msg = problems[0][1], problems[0][2]
        if valid and kind == "extra_forbidden":
            fix = f"top-level sections are: {valid}"
        elif kind == "extra_forbidden" and msg != _PYDANTIC_EXTRA:  # a validator's own hint (closest field name)
            fix = msg
        else:
            fix = "fix the value or remove the key (see README.md for every field)"
        raise _config_error(what, loc, fix, source, text, overridden) from None


def _config_error(what: str, loc: tuple, fix: str, source: str | Path | None, text: str | None,
                  overridden: Collection[tuple[str, ...]]) -> KeptError:
    """A configuration error at key path ``loc``: on the command line when a flag or ``--set`` gave that key
    (or a section above it), else in ``source`` at the key's line."""
    keys = tuple(str(part) for part in loc)
    if any(keys[:len(key)] == tuple(key) for key in overridden):
        return KeptError(what, where="command line", fix=fix)
    return KeptError(what, where=source or "config", line=_yaml_line(text, loc), fix=fix)


def parse_overrides(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``["train.max_steps=50", "model.fusion=false"]`` → key paths and YAML-parsed values."""
    parsed = []
    for item in items:
        if "=" not in item:
            raise KeptError(f"override '{item}' is not KEY=VALUE", where="--set",
                            fix="write e.g. --set train.max_steps=50")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise KeptError(f"override '{item}' has an empty key", where="--set")
        try:
            value = parse_yaml(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parsed.append((key.split("."), value))
    return parsed


def override_pairs(overrides: Iterable[str] | dict[str, Any]) -> list[tuple[list[str], Any]]:
    """Key paths and values of overrides: a mapping of dotted keys, or ``KEY=VALUE`` strings (``--set``)."""
    if isinstance(overrides, dict):
        return [(key.split("."), value) for key, value in overrides.items()]
    return parse_overrides(overrides)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str] | dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a raw configuration mapping (creating sections as needed)."""
    for path, value in override_pairs(overrides):
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise KeptError(f"cannot set '{'.'.join(path)}': '{part}' is not a section", where="--set")
            node = child
        node[path[-1]] = value
    return data


class RefusedYaml(yaml.YAMLError):
    """YAML that parses but that kept refuses (an alias, a duplicate key); ``line`` is 1-based."""

    def __init__(self, problem: str, line: int, fix: str) -> None:
        self.problem, self.line, self.fix = problem, line, fix
        super().__init__(problem)


#: The deepest nesting of a configuration's YAML (sections, mappings and lists within each other).
MAX_YAML_DEPTH = 64


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases, without duplicate keys and at most :data:`MAX_YAML_DEPTH` levels
    deep (see :func:`read_yaml`)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RefusedYaml(f"YAML alias '*{event.anchor}' is not allowed in a configuration",
                              event.start_mark.line + 1,
                              "write the values out in full (kept refuses aliases, so a small file cannot "
                              "expand into a huge one)")
        depth = getattr(self, "_depth", 0)
        if depth >= MAX_YAML_DEPTH:  # PyYAML composes recursively: deeper nesting ends in a RecursionError
            raise RefusedYaml(f"YAML nested more than {MAX_YAML_DEPTH} levels deep",
                              self.peek_event().start_mark.line + 1,
                              "a configuration is a few levels deep; check the brackets and the indentation")
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception as error:  # noqa: BLE001 - PyYAML's constructors fail on odd tagged values (`!!int ''`)
            raise _unreadable(node, error) from None

    def construct_document(self, node: Any) -> Any:
        try:  # collections are filled in after construct_object returned (generators)
            return super().construct_document(node)
        except yaml.YAMLError:
            raise
        except Exception as error:  # noqa: BLE001 - as in construct_object
            raise _unreadable(node, error) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if not isinstance(node, yaml.MappingNode):  # e.g. `!!set` on a list: SafeLoader says so
            return super().construct_mapping(node, deep=deep)
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            try:
                key = self.construct_object(key_node, deep=True)
                hash(key)
            except TypeError:
                continue  # unhashable: SafeLoader reports it
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise RefusedYaml(f"duplicate key '{key}' (lines {first_line[key]} and {line})", line,
                                  "keep one of them (merge the two into one section)")
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _unreadable(node: Any, error: Exception) -> RefusedYaml:
    """A value PyYAML's constructors fail on with a plain exception (``!!int ''`` is an IndexError)."""
    tag = str(node.tag).rsplit(":", 1)[-1]
    value = f" {node.value[:40]!r}" if isinstance(node, yaml.ScalarNode) else ""
    return RefusedYaml(f"the value{value} cannot be read as a YAML {tag} ({type(error).__name__})",
                       node.start_mark.line + 1, "write a plain value (or remove the `!!` tag)")


def parse_yaml(text: str) -> Any:
    """Parse YAML text with kept's one configuration loader (safe; no aliases; no duplicate keys)."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - _ConfigLoader is a SafeLoader


def read_yaml(path: str | Path) -> tuple[Any, str]:
    """Read a YAML configuration file: the one loader of configurations (run, compare, annotation).

    Refused with a :class:`KeptError` naming the file and line: a missing file or a directory, text
    that is not UTF-8, a YAML syntax error, a file with no content (empty or only comments: an empty
    ``--config`` would silently mean "all defaults"), a key given twice in one mapping (e.g. two
    ``train:`` sections; both lines are named), nesting deeper than :data:`MAX_YAML_DEPTH` levels (PyYAML
    would end in a RecursionError) and any alias (``*name``, ``<<: *name``). Aliases are refused outright
    rather than bounded: configurations are small, and a file of a few lines must not expand into millions
    of nodes ("billion laughs"). Anchors alone are harmless and allowed.
    """
    path = Path(path)
    if not path.exists():
        raise KeptError("configuration file not found", where=path, fix="give the path of a YAML run configuration")
    if path.is_dir():
        raise KeptError("expected a YAML file, got a directory", where=path,
                        fix="give the path of a YAML run configuration")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise KeptError(f"not UTF-8 text (byte {error.start})", where=path, line=raw.count(b"\n", 0, error.start) + 1,
                        fix="save the configuration as UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        data = parse_yaml(text)
    except RefusedYaml as error:
        raise KeptError(error.problem, where=path, line=error.line, fix=error.fix) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise KeptError(f"not valid YAML: {problem}", where=path, line=mark.line + 1 if mark else None,
                        fix="fix the YAML syntax (indentation, brackets, quotes)") from None
    if data is None:
        raise KeptError("the configuration file is empty (no settings)", where=path,
                        fix="write the settings to change (e.g. `train: {max_steps: 50}`), or leave out the file "
                            "to use the run's own config.yaml")
    return data, text


def load_config(path: str | Path | None = None, overrides: Iterable[str] | dict[str, Any] = ()) -> RunConfig:
    """Read a YAML file (or start from defaults when None), apply overrides, validate."""
    data: dict[str, Any] = {}
    text = None
    if path is not None:
        data, text = read_yaml(path)
        if not isinstance(data, dict):
            raise KeptError("a run configuration must be a YAML mapping of sections", where=path)
        # relative paths inside the file are relative to the file
        data = _absolutize(data, Path(path).resolve().parent)
    pairs = override_pairs(overrides)
    data = apply_overrides(data, {".".join(key): value for key, value in pairs})
    return validate_config(data, source=path, text=text, overridden=[tuple(key) for key, _ in pairs])


_PATH_KEYS = {("data", k) for k in ("corpus", "wikipedia_dump", "kg_triples", "kg_labels", "kg_aliases",
                                    "fewrel")} | {("runs_dir",), ("eval", "relation", "data"),
                                                  ("eval", "probe", "relation_labels")}


def _absolutize(data: dict[str, Any], base: Path) -> dict[str, Any]:
    for keys in _PATH_KEYS:
        node: Any = data
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            value = Path(node[keys[-1]]).expanduser()
            if not value.is_absolute() and (base / value).exists():
                node[keys[-1]] = str(base / value)
    return data


def save_config(config: RunConfig, run_dir: str | Path) -> Path:
    """Write the resolved configuration to ``RUN_DIR/config.yaml`` (atomically, rank 0 only)."""
    from kept.rundir import atomic_write_text, is_main_process, run_paths

    path = run_paths(run_dir).config
    if is_main_process():
        text = "# resolved KEPT run configuration (written by kept; edit and re-run to change)\n"
        text += yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
        atomic_write_text(path, text)
    return path


def load_run_config(run_dir: str | Path, overrides: Iterable[str] | dict[str, Any] = (),
                    required: bool = False) -> RunConfig:
    """The configuration of a run directory (its config.yaml) with overrides applied.

    Without a config.yaml the defaults are used (or a KeptError when ``required``).
    """
    from kept.rundir import check_run_format, run_paths

    check_run_format(run_dir)
    path = run_paths(run_dir).config
    if not path.exists():
        if required:
            raise KeptError("config.yaml not found in the run directory", where=run_dir,
                            fix="run `kept run CONFIG` or an earlier stage first")
        config = load_config(None, overrides)
        return config.model_copy(update={"name": Path(run_dir).name or "run",
                                         "runs_dir": Path(run_dir).parent}) if config.name == "run" else config
    return load_config(path, overrides)


def resolve_run_config(run_dir: str | Path, config_file: str | Path | None = None,
                       overrides: Iterable[str] | dict[str, Any] = ()) -> RunConfig:
    """The configuration a command uses on RUN_DIR: ``config_file`` if given, else RUN_DIR/config.yaml,
    else the defaults; then the overrides (command-line flags and ``--set``)."""
    if config_file is not None:
        config = load_config(config_file, overrides)
    else:
        config = load_run_config(run_dir, overrides)
    return config


# ------------------------------------------------------------------ comparing configurations

def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        if not data and prefix:
            out[prefix[:-1]] = {}
        return out
    return {prefix[:-1]: data}


def training_view(config: RunConfig | dict[str, Any]) -> dict[str, Any]:
    """The flattened keys of a configuration that change what pretraining learns."""
    data = config.to_dict() if isinstance(config, RunConfig) else config
    flat = flatten({section: data.get(section, {}) for section in TRAINING_SECTIONS})
    return {key: value for key, value in flat.items() if key not in NON_TRAINING_KEYS}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two flattened mappings (added/removed included)."""
    return sorted(key for key in set(old) | set(new) if old.get(key, "<unset>") != new.get(key, "<unset>"))


# ------------------------------------------------------------------ init_from

def resolve_init_from(value: str | None, runs_dir: str | Path = "runs") -> Path | None:
    """``run:NAME`` → ``runs_dir/NAME/model``; ``packaged:NAME`` → a packaged checkpoint
    (:func:`kept.checkpoints.offline_checkpoint_dir`); a path stays a path. Checks it is a loadable model dir."""
    if value is None:
        return None
    if value.startswith("packaged:"):  # a checkpoint shipped in a Python package (kept demo: packaged:minilm-l6)
        from kept.checkpoints import offline_checkpoint_dir

        path = offline_checkpoint_dir(value[len("packaged:"):])
    elif value.startswith("run:"):
        import re

        name = value[4:]
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
            raise KeptError(f"init_from '{value}': '{name}' is not a run name", where="model.init_from",
                            fix="run:NAME takes the name of a run under runs_dir (letters, digits, '.', '_', '-'; "
                                "no '/' or '..'); give a path for a model elsewhere")
        path = Path(runs_dir) / name / "model"
        if not path.exists():
            raise KeptError(f"init_from '{value}': run '{value[4:]}' has no final model", where="model.init_from",
                            fix=f"finish pretraining that run first ({path} missing)")
    else:
        path = Path(value).expanduser()
        if not path.exists():
            raise KeptError(f"init_from '{value}' does not exist", where="model.init_from",
                            fix="give a model directory (a run's model/ or a BERT checkpoint) or run:NAME")
    check_checkpoint_dir(path)
    return path


#: Files of a model or tokenizer directory whose ``auto_map`` makes transformers offer to run code
#: shipped in the directory (``trust_remote_code``).
REMOTE_CODE_FILES: tuple[str, ...] = ("config.json", "tokenizer_config.json")


def refuse_remote_code(directory: str | Path, where: str) -> None:
    """Refuse a model or tokenizer directory that asks for custom code (an ``auto_map`` in its config.json or
    tokenizer_config.json). kept loads everything with ``trust_remote_code=False`` as well; this says so up
    front, in one line naming the file, instead of transformers' question or traceback."""
    import json

    for name in REMOTE_CODE_FILES:
        file = Path(directory) / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise KeptError(f"'{file}' is not valid JSON", where=where,
                            fix="re-save the directory with save_pretrained") from None
        if isinstance(data, dict) and "auto_map" in data:
            raise KeptError(f"'{file}' has an `auto_map` key: loading it would run code from the directory",
                            where=where, fix="kept never runs custom model code (trust_remote_code); use a "
                                             "kept or BERT checkpoint, or remove `auto_map` if the classes are built in")


def check_checkpoint_dir(path: Path) -> dict[str, Any]:
    """A model dir must hold config.json of a kept or BERT model and its weights, and no ``auto_map``."""
    import json

    where = "model.init_from"
    config_file = path / "config.json"
    if not path.is_dir() or not config_file.exists():
        raise KeptError(f"'{path}' is not a model checkpoint (no config.json)", where=where,
                        fix="point init_from at a directory written by save_pretrained (a run's model/)")
    try:
        model_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KeptError(f"'{config_file}' is not valid JSON", where=where,
                        fix="point init_from at a directory written by save_pretrained (a run's model/)") from None
    if not isinstance(model_config, dict):
        raise KeptError(f"'{config_file}' is not a model configuration (a JSON object)", where=where,
                        fix="point init_from at a directory written by save_pretrained (a run's model/)")
    refuse_remote_code(path, where)
    model_type = model_config.get("model_type")
    if model_type not in ("kept", "bert"):
        raise KeptError(f"'{path}' holds a '{model_type}' model; init_from needs a kept or BERT checkpoint",
                        where=where, fix="start from a run's model/ dir or a BERT checkpoint")
    weights = [p for p in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
               if (path / p).exists()]
    if not weights:
        raise KeptError(f"'{path}' has no weights (model.safetensors)", where=where,
                        fix="the checkpoint is incomplete; re-run the stage that saved it")
    if model_type == "kept" and weights == ["pytorch_model.bin"]:
        raise KeptError(f"'{path / 'pytorch_model.bin'}' is a pickle file; kept checkpoints are loaded from "
                        "model.safetensors only", where=where,
                        fix="re-save the model with save_pretrained(DIR) (safetensors is its default) and point "
                            "init_from at DIR")
    if weights[0] == "model.safetensors":
        from safetensors import safe_open

        try:  # reads only the header: cheap, and catches truncated or foreign files before training starts
            with safe_open(str(path / "model.safetensors"), framework="numpy") as handle:
                handle.keys()
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise KeptError(f"'{path / 'model.safetensors'}' is not a readable safetensors file "
                            f"({str(error).splitlines()[0][:100]})", where=where,
                            fix="the checkpoint is damaged or incomplete; re-run the stage that saved it") from None
    return model_config
