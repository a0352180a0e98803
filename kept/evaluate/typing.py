"""Entity typing: a short multi-label fine-tune of the run's model, scored as in ERNIE-THU.

Each item is a sentence, a mention span (character offsets) and its type labels. The mention is put
between the entity markers ``[E1] … [/E1]``; :class:`KeptForEntityTyping` classifies from the state at
the start marker and the mean of the mention's pieces (sigmoid per type, BCE), fine-tuned through
``transformers.Trainer`` (:mod:`kept.evaluate.finetune`: seeds, warm-up, dev split, best epoch).
Scores on the test items: loose micro-F1 (the headline), loose macro-F1 and strict accuracy
(ERNIE-THU's ``eval_typing``/``eval_figer`` figures); a type is predicted when its probability is
above ``threshold``, and the top type always (every mention has a type).

Data, in this order:

* ``eval.typing.data``: a file in the OpenEntity/FIGER format of ERNIE-THU (a JSON array, as in its
  ``train.json``/``dev.json``/``test.json``) or JSON lines, one item per line::

      {"sent": "He moved to Paris in 1923 .", "start": 12, "end": 17, "labels": ["location", "city"],
       "ents": [["Q90", 12, 17, 0.81]], "id": "optional"}

  ``ents`` (optional, ERNIE-THU): linked mentions ``[KB id, start, end, score]``; those above
  ``link_threshold`` whose KB id is a KG entity name enter fusion models as entity ids. ``entity``
  (optional) names the mention's own KG entity. A directory holding ``train.json`` and ``test.json``
  (``dev.json`` optional) is read as those splits; a single file is split (seeded).
* otherwise, items derived from the run itself: every gold entity link of the annotated corpus whose
  entity has types in the run's KG. Types come from an ``instance of`` relation (``P31``,
  ``instance_of``, ``rdf:type``, ``is_a``, ``infobox type``) when the KG has one, else from the roles the
  entity plays in the KG's facts (Wikipedia infobox fields): the object of ``birth_place`` is typed
  ``birth place``, the subject ``has birth place``; ``links_to`` carries no type. Test mentions come
  only from the documents that the encode step held out for validation (never from pretraining
  text); training and dev mentions from the training documents (dev: a seeded share of them).

The items and their file format live in :mod:`kept.evaluate.typing_items`, deriving and splitting
in :mod:`kept.evaluate.typing_data`, the model and its features in :mod:`kept.evaluate.typing_model`;
this module scores and runs the task, and re-exports their public names so
``from kept.evaluate.typing import ...`` keeps working.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from kept.evaluate.common import quiet_from_pretrained, uses_fusion
from kept.evaluate.finetune import FinetuneSettings, finetune, predict_logits
from kept.evaluate.relation import finetune_defaults
from kept.evaluate.relation_data import add_markers
from kept.evaluate.typing_data import (
    TYPE_RELATIONS,
    UNTYPED_RELATIONS,
    derive_typing_items,
    file_typing_data,
    held_out_documents,
    kg_entity_types,
    restrict_types,
    run_typing_data,
    split_by_document,
    type_frequency,
    type_vocabulary,
    typing_data,
)
from kept.evaluate.typing_items import DEFAULT_LINK_THRESHOLD, TypingData, TypingItem, read_typing_file
from kept.evaluate.typing_model import (
    END_MARKER,
    START_MARKER,
    KeptForEntityTyping,
    TypingCollator,
    encode_typing_items,
)

__all__ = [
    "DEFAULT_LINK_THRESHOLD",
    "END_MARKER",
    "START_MARKER",
    "TYPE_RELATIONS",
    "UNTYPED_RELATIONS",
    "KeptForEntityTyping",
    "TypingCollator",
    "TypingData",
    "TypingItem",
    "derive_typing_items",
    "encode_typing_items",
    "evaluate_typing",
    "file_typing_data",
    "finetune_typing",
    "held_out_documents",
    "kg_entity_types",
    "predict_types",
    "read_typing_file",
    "restrict_types",
    "run_typing_data",
    "split_by_document",
    "type_frequency",
    "type_vocabulary",
    "typing_data",
    "typing_scores",
]


# ------------------------------------------------------------------ metrics


def predict_types(logits: torch.Tensor, threshold: float = 0.5, at_least_one: bool = True) -> torch.Tensor:
    """Predicted type sets [N, T] (bool) from logits [N, T]: probability > ``threshold``, plus the
    top type of each row when ``at_least_one`` (ERNIE-THU's FIGER rule)."""
    predicted = torch.sigmoid(logits.float()) > threshold  # [N, T]
    if at_least_one and logits.numel():
        top = F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).bool()  # [N, T]
        predicted = predicted | top
    return predicted


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def typing_scores(gold: torch.Tensor, predicted: torch.Tensor) -> dict[str, float]:
    """ERNIE-THU's typing figures of gold and predicted type sets (bool [N, T]):

    * strict accuracy: share of items whose predicted set equals the gold set;
    * loose micro: precision/recall over all (item, type) pairs pooled, and their F1;
    * loose macro: precision/recall averaged over items (an item without predictions / gold types
      adds 0), and the F1 of those averages.
    """
    if gold.shape[0] == 0:
        names = (
            "strict_accuracy",
            "micro_precision",
            "micro_recall",
            "micro_f1",
            "macro_precision",
            "macro_recall",
            "macro_f1",
        )
        return {name: math.nan for name in names}
    gold, predicted = gold.bool(), predicted.bool()
    correct = (gold & predicted).sum(dim=1).double()  # [N]
    n_pred, n_gold = predicted.sum(dim=1).double(), gold.sum(dim=1).double()  # [N]
    micro_p = float(correct.sum() / n_pred.sum()) if n_pred.sum() > 0 else 0.0
    micro_r = float(correct.sum() / n_gold.sum()) if n_gold.sum() > 0 else 0.0
    macro_p = float(torch.where(n_pred > 0, correct / n_pred.clamp(min=1), torch.zeros_like(correct)).mean())
    macro_r = float(torch.where(n_gold > 0, correct / n_gold.clamp(min=1), torch.zeros_like(correct)).mean())
    return {
        "strict_accuracy": float((gold == predicted).all(dim=1).double().mean()),
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "micro_f1": _f1(micro_p, micro_r),
        "macro_precision": macro_p,
        "macro_recall": macro_r,
        "macro_f1": _f1(macro_p, macro_r),
    }


# ------------------------------------------------------------------ the task


def finetune_typing(
    model: torch.nn.Module,
    tokenizer: Any,
    data: TypingData,
    *,
    epochs: int = 3,
    learning_rate: float = 5e-5,
    batch_size: int = 16,
    max_length: int = 96,
    threshold: float = 0.5,
    seed: int = 0,
    device: torch.device | str = "cpu",
    entity_input: bool = False,
) -> dict[str, Any]:
    """Fine-tune a :class:`KeptForEntityTyping` (tokenizer with the markers) on ``data.train``, keep the
    best dev epoch, and score ``data.test``: ERNIE-THU's figures plus per-item ``items``."""

    def features(items: Sequence[TypingItem]) -> list[dict[str, Any]]:
        return encode_typing_items(tokenizer, items, data.types, max_length, entity_input=entity_input)

    train, dev, test = features(data.train), features(data.dev), features(data.test)

    def compute_metrics(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        gold = torch.as_tensor(prediction.label_ids) > 0.5
        return typing_scores(gold, predict_types(torch.as_tensor(logits), threshold))

    settings = FinetuneSettings(
        epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed, device=str(device)
    )
    result = finetune(
        model,
        train,
        dev,
        collate=TypingCollator(tokenizer.pad_token_id or 0),
        compute_metrics=compute_metrics,
        metric="micro_f1",
        settings=settings,
    )
    logits = predict_logits(result.trainer, test)  # [N, T]
    gold = torch.tensor([f["labels"] for f in test]) > 0.5  # [N, T]
    predicted = predict_types(logits, threshold) if len(test) else torch.zeros_like(gold)
    label_counts = gold.sum(dim=1).double()
    return {
        **typing_scores(gold, predicted),
        "num_types": len(data.types),
        "num_train": len(train),
        "num_dev": len(dev),
        "num_test": len(test),
        "mean_labels_per_item": float(label_counts.mean()) if len(test) else math.nan,
        "best_epoch": result.best_epoch,
        "dev_micro_f1": result.best_metric,
        "final_train_loss": result.train_loss,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "threshold": threshold,
        "entity_input": entity_input,
        "types": list(data.types),
        **data.info,
        "items": {
            "ids": [f["id"] for f in test],
            "gold": [torch.nonzero(row).flatten().tolist() for row in gold],
            "pred": [torch.nonzero(row).flatten().tolist() for row in predicted],
        },
    }


def evaluate_typing(
    model_dir: str | Path,
    tokenizer_dir: str | Path,
    data: TypingData | str,
    *,
    config: Any,
    seed: int = 0,
    device: torch.device | str = "cpu",
    fusion: bool = False,
) -> dict[str, Any]:
    """Fine-tune a fresh :class:`KeptForEntityTyping` from ``model_dir`` on ``data`` and score it
    (``config``: :class:`~kept.evaluate.config.TypingEvalConfig`). ``data`` given as a string is the
    reason there is no data: ``{"skipped": reason}``."""
    if isinstance(data, str):
        return {"skipped": data}
    from transformers import AutoTokenizer, set_seed

    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=False)
    model = quiet_from_pretrained(
        KeptForEntityTyping, str(model_dir), num_labels=len(data.types), problem_type="multi_label_classification"
    )
    add_markers(tokenizer, model)
    model.init_type_prior(type_frequency(data.train, data.types))
    size = finetune_defaults(model)
    entity_input = bool(
        fusion and config.entity_input and uses_fusion(model) and any(item.entities for item in data.train)
    )
    return finetune_typing(
        model,
        tokenizer,
        data,
        epochs=config.epochs or size.epochs,
        learning_rate=config.learning_rate or size.learning_rate,
        batch_size=config.batch_size,
        max_length=config.max_length,
        threshold=config.threshold,
        seed=seed,
        device=device,
        entity_input=entity_input,
    )
