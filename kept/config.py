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

This module holds the sections and loading/saving; beside it: :mod:`kept.yaml_loader` (the YAML reader),
:mod:`kept.overrides` (``--set``), :mod:`kept.config_errors` (error messages with file:line),
:mod:`kept.model_overrides` (``model.overrides`` checks), :mod:`kept.init_from` (``model.init_from``) and
:mod:`kept.config_diff` (what changed between two configurations).
Their public names (and ``read_yaml``, ``_yaml_line``, ...) stay importable from ``kept.config``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator

# the names below moved to their own modules; kept.config re-exports them (and uses some itself)
from kept.config_diff import NON_TRAINING_KEYS, TRAINING_SECTIONS, changed_keys, flatten, training_view  # noqa: F401
from kept.config_errors import (
    _PYDANTIC_EXTRA,
    _config_error,
    _describe,
    _ExternalError,
    _flatten_validation,
    non_finite_number,  # noqa: F401
    non_string_key,
)
from kept.errors import KeptError
from kept.evaluate.config import EvalConfig
from kept.init_from import REMOTE_CODE_FILES, check_checkpoint_dir, refuse_remote_code, resolve_init_from  # noqa: F401
from kept.model_overrides import closest_name, kept_config_fields, override_range_problem, validate_model_overrides  # noqa: F401
from kept.overrides import apply_overrides, override_pairs, parse_overrides  # noqa: F401
from kept.yaml_loader import MAX_YAML_DEPTH, RefusedYaml, _yaml_line, parse_yaml, read_yaml  # noqa: F401
from kg.config_model import ConfigModel, boolean_number_problem  # noqa: F401 - boolean_number_problem: kept's name
from kg.embedding_config import EmbeddingConfig
from masking.detectors.config import AnnotationConfig
from masking.masking_config import MaskingConfig

DataSource = Literal["wikipedia_sample", "pykeen", "files", "fewrel", "sanguo_sample"]


class _Section(ConfigModel):
    """A configuration section of kept: :class:`kg.config_model.ConfigModel` (unknown keys, booleans where a
    number belongs refused; floats with a fraction are no integers), errors left as pydantic's."""


# ------------------------------------------------------------------ our own sections


class DataConfig(_Section):
    """Where the corpus and the knowledge graph come from."""

    source: DataSource = Field(
        "wikipedia_sample", description="wikipedia_sample | pykeen | files | fewrel | sanguo_sample (Chinese)"
    )
    corpus: Optional[Path] = Field(
        None,
        description="files: txt/jsonl/parquet file or HF dataset dir; "
        "fewrel: a FewRel JSON file or a directory of them",
    )
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
    segmenter: str = Field(
        "none",
        description="word units for text without spaces: none | jieba | pkuseg | spacy:<pipeline> (masking.segmenters)",
    )
    max_unk_rate: Optional[float] = Field(
        0.05, ge=0.0, le=1.0, description="refuse an encoding with more [UNK] tokens than this share; null: never"
    )
    sentence_pairs: bool = Field(
        False,
        description="ALBERT sentence-order pairs ([CLS] A [SEP] B [SEP], swapped "
        "half the time, token_type_ids, sentence_order_label): the "
        "data that model.overrides.use_sop trains on",
    )

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
        "tiny",
        description="fusion.PRESETS: sizes (and for ernie_thu the original ERNIE-THU layer options; "
        "pair it with masking.dea_replace: distinct)",
    )
    overrides: dict[str, Any] = Field(default_factory=dict, description="KeptConfig fields")
    fusion: bool = Field(True, description="entity table + dEA; off: same model, no entity input, dEA weight 0")
    init_from: Optional[str] = Field(None, description="a model dir (kept or BERT) or run:NAME")
    freeze_entity_table: bool = True
    joint_kg_weight: float = Field(
        0.0,
        ge=0,
        description="joint KG link-prediction loss on the trainable entity "
        "table (KEPLER/DRAGON; kept.joint_kg); 0: off",
    )
    joint_kg_interaction: Optional[Literal["TransE", "DistMult"]] = Field(
        None, description="null: the run's kg.model (its relation embeddings start the KG head)"
    )
    joint_kg_loss: Literal["margin", "softplus"] = "margin"
    joint_kg_margin: float = Field(1.0, gt=0)
    joint_kg_negatives: int = Field(8, ge=1, description="corruptions (head or tail) per triple")
    joint_kg_triples_per_batch: int = Field(32, ge=1, description="training triples touching the batch's entities")
    objective: Literal["mlm", "electra"] = Field(
        "mlm",
        description="electra: a small generator fills the masked units, the KEPT model (fusion included) "
        "detects replaced tokens (fusion.electra); model/ is that discriminator",
    )
    generator_fraction: float = Field(0.25, gt=0, le=1, description="ELECTRA generator width / discriminator width")
    rtd_weight: float = Field(50.0, ge=0, description="ELECTRA: loss = generator MLM + rtd_weight * RTD")
    red_weight: float = Field(
        1.0,
        ge=0,
        description="WKLM replaced-entity detection loss weight, with "
        "masking.replaced_entity_probability > 0 (kept.replaced_entity)",
    )

    @field_validator("overrides", mode="before")
    @classmethod
    def _kept_config_fields(cls, value: Any, info: ValidationInfo) -> dict[str, Any]:
        validated = validate_model_overrides(value, preset=info.data.get("preset"))
        joint = sorted(k for k in validated if k.startswith("joint_kg_") or k == "relation_vocab_size")
        if joint:  # kept.joint_kg fills these from model.joint_kg_* and the run's KG
            raise _ExternalError(
                [
                    (
                        (joint[0],),
                        "value_error",
                        "set the joint KG loss with model.joint_kg_weight, model.joint_kg_loss, ... instead",
                    )
                ]
            )
        if "red_weight" in validated:  # kept.replaced_entity sets it from model.red_weight when the swaps are on
            raise _ExternalError(
                [
                    (
                        ("red_weight",),
                        "value_error",
                        "set the WKLM loss weight with model.red_weight (and masking.replaced_entity_probability)",
                    )
                ]
            )
        return validated

    @field_validator("joint_kg_weight")
    @classmethod
    def _joint_kg_trains_the_table(cls, value: float, info: ValidationInfo) -> float:
        if value > 0 and info.data.get("freeze_entity_table", True):
            raise ValueError(
                "the joint KG loss trains the entity table; set model.freeze_entity_table: false "
                "(or model.joint_kg_weight: 0)"
            )
        if value > 0 and info.data.get("fusion") is False:
            raise ValueError(
                "the joint KG loss trains the entity table of the fusion model; set model.fusion: true "
                "(or model.joint_kg_weight: 0)"
            )
        return value


class TrainConfig(_Section):
    max_steps: int = Field(200, ge=0, description="0: save the starting model untrained (a reference point)")
    batch_size: int = Field(16, ge=1, description="per device")
    eval_batch_size: Optional[int] = Field(None, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: Optional[float] = Field(
        None,
        gt=0,
        description="peak AdamW learning rate; null: derived from the model size and whether it "
        "starts from a checkpoint (kept.optim.resolve_train_defaults: 5e-4 for the tiny "
        "preset, 1e-4 for a ~20M-parameter pretrained encoder, 5e-5 for base)",
    )
    lr_scheduler: str = "linear"
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: Optional[float] = Field(
        None,
        ge=0,
        lt=1,
        description="share of max_steps with a linear warm-up, used when warmup_steps is 0; "
        "null: derived (0.06; 0.1 for a model of 60M+ parameters from scratch)",
    )
    warmup_tokens: Optional[int] = Field(
        None,
        ge=1,
        description="warm-up given in tokens (RoBERTa-style long runs): optimizer steps = ceil(tokens / "
        "(batch_size x gradient_accumulation_steps x encode.max_length x processes)) "
        "(kept.scale); not together with warmup_steps or warmup_ratio",
    )
    new_params_warmup_steps: Optional[int] = Field(
        None,
        ge=0,
        description="first optimizer steps that train only the parameters the init checkpoint "
        "did not provide (MLM head, fusion and dEA parts; see the run's "
        "logs/loading_report.json); the loaded ones are held still, then follow "
        "the schedule with their own warm-up. null: derived (10% of max_steps "
        "when starting from a BERT checkpoint, else 0)",
    )
    new_params_learning_rate: Optional[float] = Field(
        None,
        gt=0,
        description="peak learning rate of the new parameters; null: derived (10 x learning_rate "
        "from a BERT checkpoint, else learning_rate)",
    )
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0
    eval_steps: int = Field(50, ge=1)
    final_eval_max_examples: Optional[int] = Field(
        256,
        ge=1,
        description="the validation loss after training (when the last step had no periodic "
        "evaluation) is measured on a seeded sample of at most this many sequences; "
        "null: the whole split",
    )
    save_steps: int = Field(50, ge=1)
    logging_steps: int = Field(10, ge=1)
    save_total_limit: Optional[int] = Field(3, ge=1)
    bf16: Union[bool, Literal["auto"]] = Field("auto", description="auto: bf16 on a GPU that supports it")
    dataloader_num_workers: int = Field(0, ge=0)
    use_cpu: bool = False
    report_to: Optional[list[Literal["tensorboard", "wandb", "mlflow"]]] = Field(
        None,
        description="where the Trainer also sends its logs (logs/tensorboard for tensorboard); each must be "
        "installed. null: tensorboard when it is installed; []: nowhere",
    )

    @field_validator("warmup_tokens")
    @classmethod
    def _one_warmup(cls, value: Optional[int], info: ValidationInfo) -> Optional[int]:
        if value is not None and (info.data.get("warmup_steps") or info.data.get("warmup_ratio") is not None):
            raise ValueError(
                "give the warm-up once: warmup_tokens, warmup_steps or warmup_ratio (set the others to 0 / null)"
            )
        return value


class DistillConfig(_Section):
    """``kept distill``: a plain BERT student learns from the run's (fusion) model; see kept.distill."""

    student: Optional[str] = Field(
        None,
        description="a student preset (tiny | half | small) or a BERT model "
        "directory; `kept distill --student` sets it",
    )
    student_overrides: dict[str, Any] = Field(
        default_factory=dict, description="BertConfig fields of a preset student (hidden_size, ...)"
    )
    init_from_teacher: bool = Field(
        True,
        description="a preset student of the teacher's width starts from the "
        "teacher's text layers (those of the layer map)",
    )
    temperature: float = Field(2.0, gt=0, description="softens both MLM distributions of the KD loss")
    kd_weight: float = Field(1.0, ge=0, description="KL on the masked positions' logits, times T^2")
    hidden_weight: float = Field(1.0, ge=0, description="MSE of mapped hidden states (projected when widths differ)")
    attention_weight: float = Field(1.0, ge=0, description="distance of mapped layers' attention distributions")
    attention_loss: Literal["kl", "mse"] = "kl"
    mlm_weight: float = Field(0.0, ge=0, description="the student's own MLM loss on the hard labels")
    layer_map: Union[Literal["uniform", "last"], list[int]] = Field(
        "uniform", description="teacher layer (1-based) of each student layer: uniform | last | a list"
    )
    max_steps: int = Field(200, ge=1)
    batch_size: Optional[int] = Field(None, ge=1, description="per device; null: train.batch_size")
    learning_rate: float = Field(5e-4, gt=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    report_relation: bool = Field(
        True,
        description="fine-tune teacher and student on the relation task for the report when FewRel data is configured",
    )
    speed_batches: int = Field(10, ge=1, description="timed batches of the inference-speed comparison")


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
    eval: EvalConfig = Field(default_factory=EvalConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)

    @field_validator("kg", "annotation", "masking", "eval", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # `masking:` with every key commented out: the defaults

    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ------------------------------------------------------------------ validating, loading, saving


def validate_config(
    data: dict[str, Any],
    *,
    source: str | Path | None = None,
    text: str | None = None,
    overridden: Collection[tuple[str, ...]] = (),
) -> RunConfig:
    """Validate a raw mapping; errors name the key path, the file and (from ``text``) the line, or the
    command line for a key in ``overridden`` (set by a flag or ``--set``)."""
    if not isinstance(data, dict):
        raise KeptError(
            "a run configuration must be a YAML mapping of sections",
            where=source,
            fix="start from the example in README.md (`kept run --help`)",
        )
    loc = non_finite_number(data)
    if loc is not None:
        raise _config_error(
            f"invalid value for '{'.'.join(map(str, loc))}': not a finite number",
            loc,
            "give a finite number (.inf and .nan are not allowed)",
            source,
            text,
            overridden,
        )
    loc = non_string_key(data)
    if loc is not None:
        where = f"'{'.'.join(map(str, loc[:-1]))}'" if loc[:-1] else "the top level"
        raise _config_error(
            f"invalid key {loc[-1]} at {where}: keys are names",
            loc[:-1],
            "write the section or field name as a key",
            source,
            text,
            overridden,
        )
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


_PATH_KEYS = {("data", k) for k in ("corpus", "wikipedia_dump", "kg_triples", "kg_labels", "kg_aliases", "fewrel")} | {
    ("runs_dir",),
    ("eval", "relation", "data"),
    ("eval", "probe", "relation_labels"),
}


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


def load_run_config(
    run_dir: str | Path, overrides: Iterable[str] | dict[str, Any] = (), required: bool = False
) -> RunConfig:
    """The configuration of a run directory (its config.yaml) with overrides applied.

    Without a config.yaml the defaults are used (or a KeptError when ``required``).
    """
    from kept.rundir import check_run_format, run_paths

    check_run_format(run_dir)
    path = run_paths(run_dir).config
    if not path.exists():
        if required:
            raise KeptError(
                "config.yaml not found in the run directory",
                where=run_dir,
                fix="run `kept run CONFIG` or an earlier stage first",
            )
        config = load_config(None, overrides)
        return (
            config.model_copy(update={"name": Path(run_dir).name or "run", "runs_dir": Path(run_dir).parent})
            if config.name == "run"
            else config
        )
    return load_config(path, overrides)


def resolve_run_config(
    run_dir: str | Path, config_file: str | Path | None = None, overrides: Iterable[str] | dict[str, Any] = ()
) -> RunConfig:
    """The configuration a command uses on RUN_DIR: ``config_file`` if given, else RUN_DIR/config.yaml,
    else the defaults; then the overrides (command-line flags and ``--set``)."""
    if config_file is not None:
        config = load_config(config_file, overrides)
    else:
        config = load_run_config(run_dir, overrides)
    return config
