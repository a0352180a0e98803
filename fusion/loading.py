"""Initialise a KEPT model from a local BERT checkpoint directory, with a report of what loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fusion.configuration_kept import KeptConfig
from fusion.errors import FusionError

# BERT config fields copied into KeptConfig
BERT_FIELDS = ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size", "hidden_act",
               "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
               "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id")


@dataclass
class LoadReport:
    """What ``from_bert`` loaded: parameter names of the new model, grouped."""

    source: str
    bert_layers: int
    t_layers: int
    k_layers: int
    loaded: list[str] = field(default_factory=list)  # model parameters filled from the checkpoint
    new: list[str] = field(default_factory=list)  # model parameters freshly initialised
    unused: list[str] = field(default_factory=list)  # checkpoint tensors not used
    tied: list[str] = field(default_factory=list)  # parameters tied to a loaded one

    def summary(self) -> str:
        return (f"{self.source}: {len(self.loaded)} tensors loaded, {len(self.new)} new, {len(self.unused)} unused "
                f"(BERT layers {self.bert_layers} -> T {self.t_layers} + K {self.k_layers})")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "bert_layers": self.bert_layers, "t_layers": self.t_layers,
                "k_layers": self.k_layers, "loaded": self.loaded, "new": self.new, "unused": self.unused,
                "tied": self.tied}


def read_bert_state_dict(bert_dir: Path) -> dict[str, torch.Tensor]:
    """model.safetensors (or sharded index, or pytorch_model.bin) of a BERT directory."""
    from safetensors.torch import load_file

    single = bert_dir / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = bert_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(bert_dir / shard)))
        return state
    legacy = bert_dir / "pytorch_model.bin"
    if legacy.is_file():
        import pickle

        try:
            return torch.load(legacy, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            raise FusionError("refusing to load: the file is not a plain tensor checkpoint (it would run pickled "
                              f"code, or is damaged: {str(error).splitlines()[0][:120]})", where=legacy,
                              fix="convert a trusted checkpoint to model.safetensors (save_pretrained with "
                                  "safe_serialization) and point to that directory") from None
    raise FusionError("no BERT weights found (model.safetensors or pytorch_model.bin)", where=bert_dir,
                      fix="Point to a directory written by save_pretrained of a BERT model.")


def map_bert_key(key: str, t_layers: int, k_layers: int) -> str | None:
    """Name of a BERT checkpoint tensor in the KEPT model (prefixed with ``kept.``), or None if unused."""
    for prefix in ("bert.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    if key.startswith("embeddings.") or key.startswith("pooler."):
        return "kept." + key
    if key.startswith("encoder.layer."):
        rest = key[len("encoder.layer."):]
        index_text, _, tail = rest.partition(".")
        index = int(index_text)
        if index < t_layers:
            return f"kept.encoder.layer.{index}.{tail}"
        if index < t_layers + k_layers:
            return f"kept.knowledge_encoder.layer.{index - t_layers}.{tail}"
        return None
    if key.startswith("cls.predictions."):
        return key
    return None


def bert_config_values(bert_dir: Path) -> tuple[dict[str, Any], int]:
    config_path = bert_dir / "config.json"
    if not config_path.is_file():
        raise FusionError("config.json not found", where=bert_dir, fix="Point to a BERT checkpoint directory.")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise FusionError(f"config.json is not JSON: {err.msg}", where=config_path, line=err.lineno,
                          fix="Repair or re-export the config.") from None
    missing = [name for name in ("hidden_size", "num_hidden_layers", "num_attention_heads") if name not in raw]
    if missing:
        raise FusionError(f"not a BERT config (missing {', '.join(missing)})", where=config_path,
                          fix="Use a BERT-architecture checkpoint.")
    return {name: raw[name] for name in BERT_FIELDS if name in raw}, int(raw["num_hidden_layers"])


def load_from_bert(model_class: type, bert_dir: str | Path, **config_overrides: Any):
    """Build ``model_class`` from a BERT directory: T-encoder and the K-encoder's token side from BERT's
    layers (first ``num_hidden_layers`` layers -> T, the next ``num_knowledge_layers`` -> K), entity parts
    and heads not in the checkpoint freshly initialised. Default split: ceil(n/2) T + floor(n/2) K.
    Returns (model, LoadReport)."""
    bert_dir = Path(bert_dir)
    if not bert_dir.is_dir():
        raise FusionError("BERT checkpoint directory not found", where=bert_dir,
                          fix="Pass a local directory with config.json and model.safetensors.")
    values, bert_layers = bert_config_values(bert_dir)
    values.setdefault("num_hidden_layers", bert_layers - bert_layers // 2)
    values.setdefault("num_knowledge_layers", bert_layers // 2)
    for name in ("num_hidden_layers", "num_knowledge_layers"):
        if name in config_overrides:
            values[name] = config_overrides[name]
    if "num_hidden_layers" in config_overrides and "num_knowledge_layers" not in config_overrides:
        values["num_knowledge_layers"] = max(bert_layers - int(config_overrides["num_hidden_layers"]), 0)
    for name in ("hidden_size", "intermediate_size", "vocab_size"):
        if name in config_overrides and name in values and config_overrides[name] != values[name]:
            raise FusionError(f"{name}={config_overrides[name]} differs from the checkpoint's {values[name]}",
                              where=f"from_bert({name}=...)", fix=f"Drop the {name} override.")
    values.update({k: v for k, v in config_overrides.items() if k not in ("num_hidden_layers",
                                                                          "num_knowledge_layers")})
    config = KeptConfig(**values)
    model = model_class(config)
    t_layers, k_layers = config.num_hidden_layers, config.num_knowledge_layers

    state = read_bert_state_dict(bert_dir)
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, tensor in state.items():
        target = map_bert_key(key, t_layers, k_layers)
        if target is None or target not in own:
            unused.append(key)
            continue
        if own[target].shape != tensor.shape:
            raise FusionError(f"tensor {key} has shape {list(tensor.shape)}, the model expects "
                              f"{list(own[target].shape)} at {target}", where=bert_dir,
                              fix="Use a checkpoint whose sizes match the config overrides.")
        mapped[target] = tensor
    model.load_state_dict(mapped, strict=False)
    model.tie_weights()

    buffers = {name for name, _ in model.named_buffers()}
    params = [name for name, _ in model.named_parameters(remove_duplicate=False)]
    tied = sorted(getattr(model, "_tied_weights_keys", None) or {})
    loaded = sorted(name for name in mapped if name not in buffers)
    new = sorted(name for name in params if name not in mapped and name not in tied)
    report = LoadReport(source=str(bert_dir), bert_layers=bert_layers, t_layers=t_layers, k_layers=k_layers,
                        loaded=loaded, new=new, unused=sorted(unused), tied=[t for t in tied if t in params])
    return model, report


__all__ = ["LoadReport", "load_from_bert", "map_bert_key", "read_bert_state_dict"]
