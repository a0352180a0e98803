"""The sections of a run configuration that are kept's own: data, tokenizer, encode, model, train, distill.

:class:`kept.config.RunConfig` puts them together with the sections of the other packages (``kg``,
``annotation``, ``masking``) and ``eval``; loading, saving and error messages live in :mod:`kept.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field, ValidationInfo, field_validator

from kept.config_errors import _ExternalError
from kept.model_overrides import validate_model_overrides
from kg.config_model import ConfigModel

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
