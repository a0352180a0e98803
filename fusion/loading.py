"""Initialise a KEPT model from a local BERT checkpoint directory, with a report of what loaded.

Reading the checkpoint is :mod:`fusion.bert_checkpoint`; which BERT tensor fills which KEPT parameter
(the T/K layer layout) is :mod:`fusion.bert_mapping`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fusion.bert_checkpoint import (
    bert_config_values,
    iter_bert_tensors,
)
from fusion.bert_mapping import bert_layer_of, kept_prefix, map_bert_key, split_layers
from fusion.configuration_kept import KeptConfig
from fusion.errors import FusionError

DEFAULT_MIN_LOADED_FRACTION = 0.9


@dataclass
class BertLoadReport:
    """What ``from_bert`` loaded: parameter names of the new model, grouped.

    Not kg.report.LoadReport (rows a KG loader read and skipped): a different record under another name.
    """

    source: str
    bert_layers: int
    t_layers: int
    k_layers: int
    loaded: list[str] = field(default_factory=list)  # model parameters filled from the checkpoint
    new: list[str] = field(default_factory=list)  # model parameters freshly initialised
    unused: list[str] = field(default_factory=list)  # checkpoint tensors not used
    tied: list[str] = field(default_factory=list)  # parameters tied to a loaded one
    # encoder parameters a complete BERT checkpoint of this depth fills (embeddings, layers, pooler)
    expected: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Expected encoder parameters that the checkpoint did not fill."""
        loaded = set(self.loaded)
        return [name for name in self.expected if name not in loaded]

    @property
    def loaded_fraction(self) -> float:
        """Share of the expected encoder parameters filled from the checkpoint (1.0 when none expected)."""
        if not self.expected:
            return 1.0
        return 1.0 - len(self.missing) / len(self.expected)

    def summary(self) -> str:
        return (
            f"{self.source}: {len(self.loaded)} tensors loaded, {len(self.new)} new, {len(self.unused)} unused, "
            f"encoder {len(self.expected) - len(self.missing)}/{len(self.expected)} "
            f"(BERT layers {self.bert_layers} -> T {self.t_layers} + K {self.k_layers})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "bert_layers": self.bert_layers,
            "t_layers": self.t_layers,
            "k_layers": self.k_layers,
            "loaded": self.loaded,
            "new": self.new,
            "unused": self.unused,
            "tied": self.tied,
            "missing": self.missing,
            "loaded_fraction": self.loaded_fraction,
        }


LoadReport = BertLoadReport  # the name fusion exported first (fusion.LoadReport)


def _check_loaded_fraction(report: BertLoadReport, bert_dir: Path, min_loaded_fraction: float) -> None:
    if report.loaded_fraction >= min_loaded_fraction:
        return
    done = len(report.expected) - len(report.missing)
    example_missing = report.missing[0] if report.missing else "-"
    # the unused name most likely to show a naming mismatch: the word embeddings, else a layer tensor
    unused = sorted(report.unused, key=lambda name: ("word_embeddings" not in name, "layer" not in name))
    example_unused = f", unused checkpoint names such as {unused[0]!r}" if unused else ""
    raise FusionError(
        f"only {done} of {len(report.expected)} encoder tensors ({report.loaded_fraction:.0%}, minimum "
        f"{min_loaded_fraction:.0%}) loaded from the checkpoint (missing e.g. {example_missing!r}{example_unused})",
        where=bert_dir,
        fix="Point to a BERT checkpoint (tensor names embeddings.*, encoder.layer.N.*, optionally under bert.), "
        "or pass min_loaded_fraction=0 to accept a mostly new model.",
    )


def load_from_bert(
    model_class: type,
    bert_dir: str | Path,
    *,
    min_loaded_fraction: float = DEFAULT_MIN_LOADED_FRACTION,
    **config_overrides: Any,
):
    """Build ``model_class`` (any KEPT model class, the bare ``KeptModel`` included) from a BERT directory.

    BERT layer i fills T layer i (i < T), then K layer i - T's token side (T <= i < T + K); see
    :mod:`fusion.bert_mapping` for how T and K are chosen when not given. Embeddings and the pooler
    (whenever the model has one) come from BERT, so does the MLM head if the checkpoint has one; entity
    parts and other heads are new. Raises FusionError when less than ``min_loaded_fraction`` of the encoder tensors a BERT
    checkpoint of this depth should fill were loaded (0 disables the check). Returns (model, BertLoadReport)."""
    bert_dir = Path(bert_dir)
    if not bert_dir.is_dir():
        raise FusionError(
            "BERT checkpoint directory not found",
            where=bert_dir,
            fix="Pass a local directory with config.json and model.safetensors.",
        )
    if not 0.0 <= float(min_loaded_fraction) <= 1.0:
        raise FusionError(
            f"min_loaded_fraction must be within 0..1, got {min_loaded_fraction}",
            where="from_bert(min_loaded_fraction=...)",
            fix="Pass e.g. 0.9, or 0 to disable.",
        )
    values, bert_layers = bert_config_values(bert_dir)
    values["num_hidden_layers"], values["num_knowledge_layers"] = split_layers(
        bert_layers, config_overrides.get("num_hidden_layers"), config_overrides.get("num_knowledge_layers")
    )
    for name in ("hidden_size", "intermediate_size", "vocab_size"):
        if name in config_overrides and name in values and config_overrides[name] != values[name]:
            raise FusionError(
                f"{name}={config_overrides[name]} differs from the checkpoint's {values[name]}",
                where=f"from_bert({name}=...)",
                fix=f"Drop the {name} override.",
            )
    values.update({k: v for k, v in config_overrides.items() if k not in ("num_hidden_layers", "num_knowledge_layers")})
    config = KeptConfig(**values)
    model = model_class(config)
    t_layers, k_layers = config.num_hidden_layers, config.num_knowledge_layers
    prefix = kept_prefix(model)

    own = model.state_dict()
    names: list[str] = []  # every checkpoint tensor name, in file order
    targets: dict[str, str] = {}  # checkpoint name -> model name, for the tensors worth reading

    def wanted(key: str) -> bool:
        names.append(key)
        target = map_bert_key(key, t_layers, k_layers, prefix=prefix)
        if target is None or target not in own:
            return False
        targets[key] = target
        return True

    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in iter_bert_tensors(bert_dir, wanted):
        target = targets[key]
        if own[target].shape != tensor.shape:
            raise FusionError(
                f"tensor {key} has shape {list(tensor.shape)}, the model expects {list(own[target].shape)} at {target}",
                where=bert_dir,
                fix="Use a checkpoint whose sizes match the config overrides.",
            )
        mapped[target] = tensor
    unused = sorted(name for name in names if name not in targets)
    model.load_state_dict(mapped, strict=False)
    model.tie_weights()

    buffers = {name for name, _ in model.named_buffers()}
    params = [name for name, _ in model.named_parameters(remove_duplicate=False)]
    tied = sorted(getattr(model, "_tied_weights_keys", None) or {})
    loaded = sorted(name for name in mapped if name not in buffers)
    new = sorted(name for name in params if name not in mapped and name not in tied)
    expected = [
        name
        for name in params
        if name not in tied and (layer := bert_layer_of(name, t_layers, prefix)) is not None and layer < bert_layers
    ]
    report = BertLoadReport(
        source=str(bert_dir),
        bert_layers=bert_layers,
        t_layers=t_layers,
        k_layers=k_layers,
        loaded=loaded,
        new=new,
        unused=unused,
        tied=[t for t in tied if t in params],
        expected=expected,
    )
    _check_loaded_fraction(report, bert_dir, float(min_loaded_fraction))
    return model, report


__all__ = [
    "BertLoadReport",
    "LoadReport",
    "load_from_bert",
]
