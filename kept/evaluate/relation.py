"""Relation classification: a short fine-tune of a model on FewRel-format sentences.

``KeptForRelationClassification`` (:mod:`kept.evaluate.relation_model`) classifies from the states at the
two entity start markers of each sentence (:mod:`kept.evaluate.relation_data`: markers, splits, encoding).
The model is fine-tuned with ``transformers.Trainer`` (AdamW, linear warm-up then linear decay, gradient
clipping), evaluated on the dev split after every epoch, and the epoch with the best dev macro-F1 is
scored on the test part: accuracy and macro-F1 (chance = 1 / number of relations), with per-item
predictions (``items``) for paired significance tests. Learning rate and epochs left ``None`` are
derived from the model size (:func:`finetune_defaults`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kept.evaluate.common import macro_f1, model_device
from kept.evaluate.finetune import FinetuneSettings, finetune, predict_logits
from kept.evaluate.relation_data import (
    RelationCollator,
    add_markers,
    encode_features,
    entity_pairs,
    split_dev,
    split_examples,
)
from kept.evaluate.relation_model import load_relation_model
from kept.fewrel import FewRelExample, load_fewrel


@dataclass(frozen=True)
class SizeDefaults:
    """Fine-tuning defaults of one model size class: models at most ``max_hidden`` wide (or, when the
    width is unknown, with at most ``max_parameters`` parameters)."""

    name: str
    max_hidden: int
    max_parameters: int
    learning_rate: float
    epochs: int


# The one place where the model size picks the fine-tuning defaults (first class that fits wins).
# MiniLM-L6 on FewRel val_nyt (8 relations x 40, seed 0, 5 epochs, test macro-F1): lr 5e-5 0.768,
# 1e-4 0.937 (dev still rising at epoch 5), 2e-4 0.937. The tiny preset (trained from scratch) needs a
# larger rate; the base class follows the usual BERT-base recipe (not measured here).
SIZE_DEFAULTS: tuple[SizeDefaults, ...] = (
    SizeDefaults("tiny", max_hidden=255, max_parameters=5_000_000, learning_rate=5e-4, epochs=3),  # tiny preset
    SizeDefaults("small", max_hidden=512, max_parameters=60_000_000, learning_rate=1e-4, epochs=5),  # MiniLM
    SizeDefaults("base", max_hidden=1 << 30, max_parameters=1 << 50, learning_rate=5e-5, epochs=4),  # BERT-base+
)


def finetune_defaults(model: torch.nn.Module) -> SizeDefaults:
    """Size class of ``model``: by ``config.hidden_size`` when it has one, else by parameter count."""
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if hidden is not None:
        return next(d for d in SIZE_DEFAULTS if int(hidden) <= d.max_hidden)
    parameters = sum(p.numel() for p in model.parameters())
    return next(d for d in SIZE_DEFAULTS if parameters <= d.max_parameters)


def _score_predictions(num_labels: int) -> Callable[[Any], dict[str, float]]:
    """The Trainer's ``compute_metrics``: macro-F1 and accuracy of the argmax predictions."""

    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = torch.as_tensor(logits).argmax(dim=-1)  # [N]
        gold = torch.as_tensor(prediction.label_ids).reshape(-1)  # [N]
        return {
            "macro_f1": macro_f1(predicted.tolist(), gold.tolist(), num_labels=num_labels),
            "accuracy": float((predicted == gold).float().mean()) if gold.numel() else math.nan,
        }

    return compute


def finetune_and_score(
    model: torch.nn.Module,
    tokenizer: Any,
    train: Sequence[FewRelExample],
    test: Sequence[FewRelExample],
    relations: Sequence[str],
    *,
    epochs: int | None = None,
    learning_rate: float | None = None,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    dev_fraction: float = 0.15,
    batch_size: int = 16,
    max_length: int = 96,
    seed: int = 0,
    entity_index: Mapping[str, int] | None = None,
    device: torch.device | str | None = None,
    finetune_seed: int | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` (forward(input_ids, attention_mask, head_start, tail_start[, entity_ids], labels)
    -> loss, logits) on ``train`` minus a dev split (:func:`split_dev`) through the shared
    ``transformers.Trainer`` fine-tune (:func:`kept.evaluate.finetune.finetune`: AdamW, linear warm-up
    and decay, clipping, seeds), keep the epoch with the best dev macro-F1, and return accuracy /
    macro-F1 on ``test`` plus per-item ``items`` (``ids``: :attr:`FewRelExample.item_id`, ``gold`` /
    ``pred``: label indices into ``relations``). ``epochs`` / ``learning_rate`` None:
    :func:`finetune_defaults`. ``seed`` draws the dev split, ``finetune_seed`` (None: ``seed``) the
    Trainer's. The tokenizer must know the markers (:func:`add_markers`)."""
    size = finetune_defaults(model)
    derived = [name for name, value in (("epochs", epochs), ("learning_rate", learning_rate)) if value is None]
    epochs = int(epochs if epochs is not None else size.epochs)
    learning_rate = float(learning_rate if learning_rate is not None else size.learning_rate)
    fit, dev = split_dev(train, dev_fraction, seed)
    entity_input = entity_index is not None
    fit_rows, dev_rows, test_rows = (
        encode_features(tokenizer, part, relations, max_length, entity_index) for part in (fit, dev, test)
    )
    target = torch.device(device) if device is not None else model_device(model)
    settings = FinetuneSettings(
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        warmup_ratio=warmup_ratio,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        seed=seed if finetune_seed is None else finetune_seed,
        device=str(target),
    )
    result = finetune(
        model,
        fit_rows,
        dev_rows,
        collate=RelationCollator(tokenizer.pad_token_id or 0, entity_input),
        compute_metrics=_score_predictions(len(relations)),
        metric="macro_f1",
        settings=settings,
    )
    predictions = predict_logits(result.trainer, test_rows).argmax(dim=-1).tolist()  # [N_test]
    golds = [row["label"] for row in test_rows]
    correct = sum(int(p == g) for p, g in zip(predictions, golds))
    pairs = entity_pairs(list(train) + list(test), entity_index) or []
    linked = sum(int(h >= 0) + int(t >= 0) for h, t in pairs)
    return {
        "accuracy": correct / len(golds) if golds else math.nan,
        "macro_f1": macro_f1(predictions, golds, num_labels=len(relations)),
        "num_labels": len(relations),
        "num_train": len(fit),
        "num_dev": len(dev),
        "num_test": len(test),
        "chance": 1.0 / len(relations) if relations else math.nan,
        "best_epoch": result.best_epoch,
        "dev_macro_f1": result.best_metric,
        "dev_history": [float(entry.get("macro_f1", math.nan)) for entry in result.history],
        "final_train_loss": result.train_loss,
        "finetune_seed": settings.seed,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "warmup_ratio": warmup_ratio,
        "weight_decay": weight_decay,
        "size_class": size.name,
        "derived": derived,
        "relations": list(relations),
        "entity_input": entity_input,
        "linked_fraction": linked / (2 * (len(train) + len(test))) if train or test else 0.0,
        "items": {"ids": [example.item_id for example in test], "gold": golds, "pred": predictions},
    }


def evaluate_relation(
    model_dir: str | Path,
    tokenizer_dir: str | Path,
    data: str | Path | None,
    *,
    max_relations: int = 5,
    max_per_relation: int = 40,
    test_fraction: float = 0.3,
    dev_fraction: float = 0.15,
    epochs: int | None = None,
    learning_rate: float | None = None,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    batch_size: int = 16,
    max_length: int = 96,
    seed: int = 0,
    device: torch.device | str = "cpu",
    entity_index: Mapping[str, int] | None = None,
    finetune_seed: int | None = None,
) -> dict[str, Any]:
    """Fine-tune a fresh ``KeptForRelationClassification`` from ``model_dir`` (a KEPT model or a plain
    BERT directory, :func:`load_relation_model`) and score it (:func:`finetune_and_score`).

    ``entity_index``: KB id (FewRel's ``h``/``t`` ids) -> KG id; given (fusion runs), heads and tails
    found in it enter the model as entity ids, as in ERNIE-THU's FewRel fine-tuning. A BERT directory
    has no entity table: the index is then not used and ``note`` says so.

    ``seed`` picks the relations and the train/dev/test split (the same test items for every model);
    ``finetune_seed`` (None: ``seed``) the classifier's initialisation, the data order and dropout.

    Returns ``{"skipped": reason}`` when no FewRel data is configured or the file is absent.
    """
    finetune_seed = seed if finetune_seed is None else finetune_seed
    if data is None:
        return {"skipped": "no FewRel data configured (set eval.relation.data or data.fewrel)"}
    data = Path(data)
    if data.is_dir():
        candidates = sorted(data.glob("val_*.json")) or sorted(data.glob("*.json"))
        candidates = [c for c in candidates if c.name != "pid2name.json"]
        if not candidates:
            return {"skipped": f"no FewRel JSON file in {data}"}
        data = candidates[0]
    if not data.exists():
        return {"skipped": f"FewRel data not available: {data} does not exist"}
    examples = load_fewrel(data).examples
    train, test, relations = split_examples(
        examples, max_relations=max_relations, max_per_relation=max_per_relation, test_fraction=test_fraction, seed=seed
    )
    if len(relations) < 2:
        return {"skipped": f"{data} has fewer than 2 relations with 2+ sentences"}
    from transformers import AutoTokenizer, set_seed

    set_seed(finetune_seed)  # the new classifier's initialisation
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=False)
    model, loaded = load_relation_model(model_dir, len(relations))
    note = None
    if entity_index is not None and loaded["init"] != "kept":
        entity_index = None
        note = "entity_index not used: a BERT checkpoint has no entity table"
    add_markers(tokenizer, model)
    model.to(device)
    result = finetune_and_score(
        model,
        tokenizer,
        train,
        test,
        relations,
        epochs=epochs,
        learning_rate=learning_rate,
        warmup_ratio=warmup_ratio,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        dev_fraction=dev_fraction,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        finetune_seed=finetune_seed,
        entity_index=entity_index,
        device=device,
    )
    result.update(loaded)
    result["data"] = str(data)
    if note:
        result["note"] = note
    return result
