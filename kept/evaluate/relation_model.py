"""The relation classifier to fine-tune: ``KeptForRelationClassification`` from a KEPT checkpoint
(``init: "kept"``) or a plain BERT directory (``init: "bert"``, through ``from_bert`` as the plain encoder:
every BERT layer a T-layer, no knowledge layers), with how many tensors were loaded and how many are new."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from kept.checkpoints import read_model_config
from kept.errors import KeptError
from kept.evaluate.common import quiet_from_pretrained

logger = logging.getLogger(__name__)


def _checkpoint_keys(model_dir: Path) -> set[str]:
    """Tensor names stored in a checkpoint directory (without reading the tensors where possible)."""
    single = model_dir / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as handle:
            return set(handle.keys())
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    from fusion.bert_checkpoint import read_bert_state_dict

    return set(read_bert_state_dict(model_dir))


def load_relation_model(model_dir: str | Path, num_labels: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``KeptForRelationClassification`` for ``num_labels`` relations and what it loaded.

    A KEPT directory (config.json ``model_type: "kept"``) loads with its T and K layers; a BERT directory
    (``"bert"``) goes through ``from_bert`` with every BERT layer as a T-layer and no knowledge layers,
    i.e. exactly the plain encoder (a BERT directory has no entity table to feed knowledge layers).
    Returns (model, {init, loaded_tensors, new_tensors, new_tensor_names, t_layers, k_layers, load_summary}).
    """
    from fusion import KeptForRelationClassification

    model_dir = Path(model_dir)
    raw = read_model_config(model_dir, fix="point to a KEPT model directory or a BERT checkpoint directory")
    init = raw.get("model_type")
    if init == "kept":
        model = quiet_from_pretrained(KeptForRelationClassification, str(model_dir), num_labels=num_labels)
        stored = _checkpoint_keys(model_dir)
        prefix = f"{model.base_model_prefix}."
        names = [name for name, _ in model.named_parameters()]
        loaded = [n for n in names if n in stored or (n.startswith(prefix) and n[len(prefix) :] in stored)]
        new = sorted(set(names) - set(loaded))
        summary = f"{model_dir}: {len(loaded)} tensors loaded, {len(new)} new"
    elif init == "bert":
        if "num_hidden_layers" not in raw:
            raise KeptError(
                "BERT config.json lacks num_hidden_layers",
                where=model_dir / "config.json",
                fix="use a complete BERT checkpoint directory",
            )
        model, report = KeptForRelationClassification.from_bert(
            str(model_dir),
            num_labels=num_labels,
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_knowledge_layers=0,
        )
        loaded, new, summary = list(report.loaded), list(report.new), report.summary()
    else:
        raise KeptError(
            f"holds a '{init}' model; relation fine-tuning starts from a 'kept' or a 'bert' checkpoint",
            where=model_dir / "config.json",
            fix="evaluate a KEPT run's model directory or a BERT-architecture checkpoint",
        )
    logger.info("relation model (%s): %s", init, summary)
    return model, {
        "init": init,
        "loaded_tensors": len(loaded),
        "new_tensors": len(new),
        "new_tensor_names": new,
        "t_layers": int(model.config.num_hidden_layers),
        "k_layers": int(model.config.num_knowledge_layers),
        "load_summary": summary,
    }
