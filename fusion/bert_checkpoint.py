"""Reading a local BERT checkpoint directory: its config.json values and its weight tensors.

Weights come from model.safetensors (read lazily, tensor by tensor), pytorch_model.bin (memory-mapped,
plain tensors only) or the shard index of either; a broken or unsafe file raises FusionError.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

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


def bert_config_values(bert_dir: Path) -> tuple[dict[str, Any], int]:
    """(the ``BERT_FIELDS`` of ``bert_dir``/config.json, its number of layers)."""
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
