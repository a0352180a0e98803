"""Initialise a KEPT model from a local BERT checkpoint directory, with a report of what loaded.

Layer layout: a BERT checkpoint with N layers fills the T-encoder (``num_hidden_layers`` = T) and the
token side of the K-encoder (``num_knowledge_layers`` = K) in order: BERT layer i -> T layer i for
i < T, -> K layer i - T for T <= i < T + K; BERT layers from T + K on are unused, and K layers past
BERT's depth start new. Layer counts not given are chosen so that T + K = N (neither given: T = ceil(N/2),
K = floor(N/2)), so ``num_knowledge_layers=0`` gives exactly the BERT encoder (T = N).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fusion.configuration_kept import KeptConfig
from fusion.errors import FusionError

# BERT config fields copied into KeptConfig
BERT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)
# wrappers around a BERT state dict: DataParallel/DDP saves, BertFor* models, other containers
CHECKPOINT_PREFIXES = ("module.", "bert.", "model.")
# legacy tensor names that transformers renames on load (conversion_mapping "legacy"; 4.x
# _fix_state_dict_key_on_load): pytorch_pretrained_bert's LayerNorm gamma/beta. The other legacy renames
# (weight-norm weight_g/weight_v, multimodal model.model) name modules that BERT does not have.
LEGACY_SUFFIXES = (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias"))
# submodules of a K-encoder layer that carry BertLayer's names (the rest is the entity side)
BERT_LAYER_PARTS = ("attention.", "intermediate.", "output.")
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


# ------------------------------------------------------------------------------------------------ reading


def _first_plain_sentence(message: str, limit: int = 160) -> str:
    """torch's unpickling errors carry ANSI colour codes and paragraphs: the first sentence, plain."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", message)
    first = next((line.strip() for line in plain.splitlines() if line.strip()), "")
    sentence = first.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


def _weight_files(bert_dir: Path) -> tuple[str, list[Path]]:
    """("safetensors" | "torch", the weight files) of a checkpoint directory, single or sharded."""
    for kind, single, index in (
        ("safetensors", "model.safetensors", "model.safetensors.index.json"),
        ("torch", "pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (bert_dir / single).is_file():
            return kind, [bert_dir / single]
        if (bert_dir / index).is_file():
            try:
                weight_map = json.loads((bert_dir / index).read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise FusionError(
                    "shard index has no weight_map",
                    where=bert_dir / index,
                    fix="Re-save the checkpoint with save_pretrained.",
                ) from None
            return kind, [bert_dir / shard for shard in sorted(set(weight_map.values()))]
    raise FusionError(
        "no BERT weights found (model.safetensors or pytorch_model.bin)",
        where=bert_dir,
        fix="Point to a directory written by save_pretrained of a BERT model.",
    )


def _safetensors_tensors(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the tensors of ``path`` that ``wanted`` accepts; the others are never read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for name in handle.keys():
                if wanted(name):
                    yield name, handle.get_tensor(name)
    except FileNotFoundError:
        raise FusionError(
            "weight shard not found", where=path, fix="Copy the whole checkpoint directory (every shard of the index)."
        ) from None
    except SafetensorError as error:
        raise FusionError(
            f"not a readable safetensors file ({str(error).splitlines()[0][:120]})",
            where=path,
            fix="The checkpoint is damaged or incomplete; download or save it again.",
        ) from None


def _torch_tensors(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a pytorch_model.bin (memory-mapped, plain tensors only: no pickled code runs)."""
    import pickle

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except FileNotFoundError:
        raise FusionError(
            "weight shard not found", where=path, fix="Copy the whole checkpoint directory (every shard of the index)."
        ) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise FusionError(
            "refusing to load: the file is not a plain tensor checkpoint (it would run pickled "
            f"code, or is damaged: {_first_plain_sentence(str(error))})",
            where=path,
            fix="convert a trusted checkpoint to model.safetensors (save_pretrained with "
            "safe_serialization) and point to that directory",
        ) from None
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and wanted(name):
            yield name, tensor


def iter_bert_tensors(
    bert_dir: str | Path, wanted: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a BERT directory's weights (model.safetensors, its shard index, or
    pytorch_model.bin[.index.json]) whose name ``wanted`` accepts (all when None). safetensors files
    are read lazily (``safe_open``): tensors that are not wanted are never read."""
    bert_dir = Path(bert_dir)
    accept = wanted or (lambda name: True)
    kind, files = _weight_files(bert_dir)
    reader = _safetensors_tensors if kind == "safetensors" else _torch_tensors
    for path in files:
        yield from reader(path, accept)


def read_bert_state_dict(bert_dir: str | Path, wanted: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a BERT directory as a dict (see ``iter_bert_tensors``)."""
    return dict(iter_bert_tensors(bert_dir, wanted))


# ------------------------------------------------------------------------------------------------ names
def canonical_bert_key(key: str) -> str:
    """A checkpoint tensor name without wrapper prefixes and with legacy names renamed, e.g.
    ``module.bert.encoder.layer.0.output.LayerNorm.gamma`` -> ``encoder.layer.0.output.LayerNorm.weight``."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in CHECKPOINT_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    for old, new in LEGACY_SUFFIXES:
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def map_bert_key(key: str, t_layers: int, k_layers: int, prefix: str = "kept.") -> str | None:
    """Name in the KEPT model of a BERT checkpoint tensor, or None if the model has no place for it.
    ``prefix`` is where the model keeps its KeptModel ("kept." for the task models, "" for KeptModel)."""
    key = canonical_bert_key(key)
    if key.startswith("embeddings.") or key.startswith("pooler."):
        return prefix + key
    if key.startswith("encoder.layer."):
        index_text, _, tail = key[len("encoder.layer.") :].partition(".")
        if not index_text.isdigit():
            return None
        index = int(index_text)
        if index < t_layers:
            return f"{prefix}encoder.layer.{index}.{tail}"
        if index < t_layers + k_layers:
            return f"{prefix}knowledge_encoder.layer.{index - t_layers}.{tail}"
        return None
    if key.startswith("cls.predictions."):
        return key
    return None


def bert_layer_of(name: str, t_layers: int, prefix: str = "kept.") -> int | None:
    """For an encoder parameter of the KEPT model that a BERT checkpoint fills: its BERT layer index
    (-1 for embeddings and pooler); None for parameters BERT has no counterpart for (entity side, heads)."""
    if not name.startswith(prefix):
        return None
    name = name[len(prefix) :]
    if name.startswith("embeddings.") or name.startswith("pooler."):
        return -1
    for stack, offset in (("encoder.layer.", 0), ("knowledge_encoder.layer.", t_layers)):
        if name.startswith(stack):
            index_text, _, tail = name[len(stack) :].partition(".")
            if stack == "encoder.layer." or tail.startswith(BERT_LAYER_PARTS):
                return int(index_text) + offset
    return None


def kept_prefix(model: Any) -> str:
    """Where a KEPT model keeps its KeptModel in state-dict names: "" for a bare KeptModel, else "kept."."""
    return "" if model._kept() is model else f"{model.base_model_prefix}."


# ------------------------------------------------------------------------------------------------ config
def bert_config_values(bert_dir: Path) -> tuple[dict[str, Any], int]:
    config_path = bert_dir / "config.json"
    if not config_path.is_file():
        raise FusionError("config.json not found", where=bert_dir, fix="Point to a BERT checkpoint directory.")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise FusionError(
            f"config.json is not JSON: {err.msg}",
            where=config_path,
            line=err.lineno,
            fix="Repair or re-export the config.",
        ) from None
    missing = [name for name in ("hidden_size", "num_hidden_layers", "num_attention_heads") if name not in raw]
    if missing:
        raise FusionError(
            f"not a BERT config (missing {', '.join(missing)})",
            where=config_path,
            fix="Use a BERT-architecture checkpoint.",
        )
    return {name: raw[name] for name in BERT_FIELDS if name in raw}, int(raw["num_hidden_layers"])


def split_layers(bert_layers: int, t_layers: int | None, k_layers: int | None) -> tuple[int, int]:
    """(T, K) for a BERT checkpoint of ``bert_layers`` layers: given counts are kept, a missing one makes
    T + K = N (at least 0), neither given splits N as ceil(N/2) + floor(N/2)."""
    if t_layers is not None and k_layers is not None:
        return int(t_layers), int(k_layers)
    if k_layers is not None:
        return max(bert_layers - int(k_layers), 0), int(k_layers)
    if t_layers is not None:
        return int(t_layers), max(bert_layers - int(t_layers), 0)
    return bert_layers - bert_layers // 2, bert_layers // 2


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


# ------------------------------------------------------------------------------------------------ loading
def load_from_bert(
    model_class: type,
    bert_dir: str | Path,
    *,
    min_loaded_fraction: float = DEFAULT_MIN_LOADED_FRACTION,
    **config_overrides: Any,
):
    """Build ``model_class`` (any KEPT model class, the bare ``KeptModel`` included) from a BERT directory.

    BERT layer i fills T layer i (i < T), then K layer i - T's token side (T <= i < T + K); see the module
    docstring for how T and K are chosen when not given. Embeddings and the pooler (whenever the model
    has one) come from BERT, so does the MLM head if the checkpoint has one; entity parts and other heads
    are new. Raises FusionError when less than ``min_loaded_fraction`` of the encoder tensors a BERT
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
    "bert_layer_of",
    "canonical_bert_key",
    "iter_bert_tensors",
    "load_from_bert",
    "map_bert_key",
    "read_bert_state_dict",
    "split_layers",
]
