"""The two models of a distillation: the teacher (a run's KEPT model, fusion on) and the student (a plain BERT).

Student presets are sized from the teacher's text path (T + K layers, width H, A heads, intermediate I):

* ``tiny``: the text sizes of ``fusion.PRESETS["tiny"]`` (64 wide, 4 heads, 2 layers): fixed, whatever the teacher;
* ``half``: the teacher's width, half its layers; starts from the teacher's text layers of the layer map
  (``fusion.export``'s BERT view of the teacher, the mapped layers picked), as DistilBERT does;
* ``small``: half the layers and half the width (H/2, A/2 heads, I/2): random initialisation.

A BERT directory (``--student DIR``) loads as ``BertForMaskedLM``; one without an MLM head (a sentence
encoder such as the packaged MiniLM) gets a new head whose decoder is tied to its word embeddings, so only
the transform and the bias start from random (reported as ``new``). Its vocabulary must be the run's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kept.distill.losses import LayerMap, layer_map
from kept.errors import KeptError
from kept.rundir import RunPaths, require

logger = logging.getLogger(__name__)

#: preset name -> how it is sized (see the module docstring).
STUDENT_PRESETS: tuple[str, ...] = ("tiny", "half", "small")
TINY_STUDENT: dict[str, int] = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)


@dataclass
class Student:
    """The student model and where it came from."""

    model: Any  # transformers.BertForMaskedLM
    source: str  # "preset:<name>" or the BERT directory
    new: list[str] = field(default_factory=list)  # parameters that start from random (e.g. a missing MLM head)
    from_teacher: list[int] = field(default_factory=list)  # teacher layers copied into the student (1-based)

    def summary(self) -> str:
        config = self.model.config
        size = sum(p.numel() for p in self.model.parameters()) / 1e6
        origin = (
            f", layers {self.from_teacher} of the teacher"
            if self.from_teacher
            else f", {len(self.new)} new tensors"
            if self.new
            else ""
        )
        return (
            f"student {self.source}: {config.num_hidden_layers} layers x {config.hidden_size} "
            f"({config.num_attention_heads} heads, {size:.2f}M parameters{origin})"
        )


def load_teacher(paths: RunPaths, fusion: bool, attentions: bool) -> Any:
    """The run's ``KeptForPreTraining`` in eval mode with no gradients; eager attention when ``attentions``."""
    from fusion import ENTITY_TABLE_FILE, KeptForPreTraining
    from kept.evaluate.common import quiet_from_pretrained

    model_dir = require(
        paths.model / "config.json",
        "the teacher's model (model/config.json)",
        "pretrain the teacher run first (`kept pretrain RUN_DIR`)",
    ).parent
    kind = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
    if kind != "kept":
        raise KeptError(
            f"the teacher holds a '{kind}' model, not a kept model",
            where=model_dir / "config.json",
            fix="distil from a KEPT run (a run whose model/ `kept pretrain` wrote)",
        )
    extra = {"attn_implementation": "eager"} if attentions else {}
    teacher = quiet_from_pretrained(KeptForPreTraining, str(model_dir), **extra)
    if fusion and teacher.entity_table is None and teacher.kept.entity_embeddings is None:
        if not (model_dir / ENTITY_TABLE_FILE).is_file():
            require(paths.embeddings, "KG embeddings (kg/embeddings.safetensors)", "run `kept kg embed RUN_DIR`")
            teacher.load_entity_table(paths.embeddings, trainable=False)
    teacher.eval().requires_grad_(False)
    return teacher


def _bert_config_fields() -> set[str]:
    from transformers import BertConfig

    return set(BertConfig().to_dict())


def preset_config(name: str, teacher_config: Any, overrides: dict[str, Any]) -> Any:
    """The ``BertConfig`` of a student preset for this teacher (its text path), with ``overrides``."""
    from fusion.export import bert_config_of

    base = bert_config_of(teacher_config)  # the teacher's text path as a BertConfig (T + K layers)
    layers, width, heads = base.num_hidden_layers, base.hidden_size, base.num_attention_heads
    if name == "tiny":
        sizes = dict(TINY_STUDENT)
    elif name == "half":
        sizes = dict(num_hidden_layers=max(1, layers // 2))
    elif name == "small":
        sizes = dict(
            num_hidden_layers=max(1, layers // 2),
            hidden_size=max(1, width // 2),
            num_attention_heads=max(1, heads // 2),
            intermediate_size=max(1, base.intermediate_size // 2),
        )
    else:
        raise KeptError(
            f"unknown student preset {name!r}",
            where="distill.student",
            fix=f"use a preset ({', '.join(STUDENT_PRESETS)}) or a BERT model directory",
        )
    unknown = sorted(set(overrides) - _bert_config_fields())
    if unknown:
        raise KeptError(
            f"distill.student_overrides has unknown BertConfig field '{unknown[0]}'",
            where="distill.student_overrides",
            fix="give BertConfig fields (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, ...)",
        )
    values = {**base.to_dict(), **sizes, **overrides}
    values.pop("model_type", None)
    values.pop("transformers_version", None)
    config = type(base)(**values)
    if config.hidden_size % config.num_attention_heads:
        raise KeptError(
            f"student hidden_size {config.hidden_size} is not a multiple of its "
            f"{config.num_attention_heads} attention heads",
            where="distill.student_overrides",
            fix="choose num_attention_heads that divides hidden_size",
        )
    return config


def build_student(
    spec: str,
    teacher: Any,
    tokenizer: Any,
    *,
    overrides: dict[str, Any],
    rule: LayerMap,
    init_from_teacher: bool,
    attentions: bool,
    seed: int,
    max_length: int,
) -> Student:
    """A ``BertForMaskedLM`` student from a preset name or a BERT directory (see the module docstring)."""
    import torch
    from transformers import BertForMaskedLM

    directory = Path(spec).expanduser()
    if not directory.is_dir() and spec not in STUDENT_PRESETS:
        raise KeptError(
            f"unknown student {spec!r}: not a preset and not a directory",
            where="distill.student",
            fix=f"use a preset ({', '.join(STUDENT_PRESETS)}) or a BERT model directory",
        )
    torch.manual_seed(seed)  # what starts from random is drawn from the seed
    if directory.is_dir():
        student = _load_bert_dir(
            directory, tokenizer, overrides, {"attn_implementation": "eager"} if attentions else {}
        )
    else:
        config = preset_config(spec, teacher.config, overrides)
        if attentions:  # attention weights come from the eager attention only
            config._attn_implementation = "eager"
        model = BertForMaskedLM(config)
        student = Student(model, f"preset:{spec}", new=[n for n, _ in model.named_parameters()])
        teacher_layers = int(teacher.config.num_hidden_layers) + int(teacher.config.num_knowledge_layers)
        if (
            init_from_teacher
            and config.hidden_size == teacher.config.hidden_size
            and config.intermediate_size == teacher.config.intermediate_size
            and config.num_attention_heads == teacher.config.num_attention_heads
        ):
            mapped = layer_map(rule, config.num_hidden_layers, teacher_layers)
            _copy_teacher_text_layers(model, teacher, mapped)
            student.new, student.from_teacher = [], mapped
    if student.model.config.max_position_embeddings < max_length:
        raise KeptError(
            f"the student takes {student.model.config.max_position_embeddings} positions, the run's "
            f"sequences {max_length}",
            where="distill.student",
            fix="choose a student with more position embeddings (or a run with a shorter encode.max_length)",
        )
    logger.info(student.summary())
    return student


def _load_bert_dir(directory: Path, tokenizer: Any, overrides: dict[str, Any], extra: dict[str, Any]) -> Student:
    from transformers import BertForMaskedLM

    from kept.config import check_checkpoint_dir
    from kept.evaluate.common import quiet_from_pretrained
    from kept.model_build import check_init_vocabulary

    where = "distill.student"
    try:
        kind = check_checkpoint_dir(directory).get("model_type")
    except KeptError as error:
        raise KeptError(error.what, where=where, fix=error.fix) from None
    if kind != "bert":
        raise KeptError(
            f"'{directory}' holds a '{kind}' model; a student is a BERT checkpoint",
            where=where,
            fix="give a BERT model directory (or a preset); to distil a KEPT model, use its run as teacher",
        )
    if overrides:
        raise KeptError(
            "distill.student_overrides only sizes a preset student",
            where="distill.student_overrides",
            fix="remove it, or use a preset student",
        )
    try:
        check_init_vocabulary(directory, tokenizer)
    except KeptError as error:
        raise KeptError(
            error.what,
            where=where,
            fix="the student must use the teacher run's tokenizer: encode the teacher run with the "
            "student's tokenizer (tokenizer.base_model), or use a preset student",
        ) from None
    model, info = quiet_from_pretrained(BertForMaskedLM, str(directory), output_loading_info=True, **extra)
    if model.config.vocab_size != len(tokenizer):
        raise KeptError(
            f"the student has a vocabulary of {model.config.vocab_size} tokens, the run's tokenizer {len(tokenizer)}",
            where=where,
            fix="use a student with the run's vocabulary",
        )
    from kept.distill.trainer import shared_names

    tied = set(shared_names(model.state_dict()))  # the decoder tied to the word embeddings is not new
    return Student(model, str(directory), new=sorted(set(info.get("missing_keys", [])) - tied))


def _copy_teacher_text_layers(student: Any, teacher: Any, mapped: list[int]) -> None:
    """Student layer m ← teacher text layer mapped[m - 1]; embeddings and MLM head ← the teacher's."""
    from fusion.export import to_bert_for_masked_lm

    source = to_bert_for_masked_lm(teacher).model.state_dict()  # the teacher's text path as BERT names
    state = {}
    for name, tensor in student.state_dict().items():
        key = name
        if name.startswith("bert.encoder.layer."):
            index, rest = name[len("bert.encoder.layer.") :].split(".", 1)
            key = f"bert.encoder.layer.{mapped[int(index)] - 1}.{rest}"
        if key in source and source[key].shape == tensor.shape:
            state[name] = source[key]
    missing = sorted(set(student.state_dict()) - set(state))
    if missing:
        raise KeptError(
            f"the teacher has no tensor for the student's {missing[0]}",
            where="distill.init_from_teacher",
            fix="set distill.init_from_teacher: false",
        )
    student.load_state_dict(state, strict=True)
    student.tie_weights()


__all__ = ["STUDENT_PRESETS", "Student", "build_student", "load_teacher", "preset_config"]
