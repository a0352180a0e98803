"""Relation classification: a short fine-tune of a model on FewRel-format sentences.

Sentences (read with :mod:`kept.fewrel`) come with a head and a tail entity span; the entity markers
``[E1] … [/E1]`` and ``[E2] … [/E2]`` are added to the tokenizer (embeddings resized) and put around them;
``KeptForRelationClassification`` classifies from the states at the two start markers.
A fixed, seeded subset of relations and sentences is split per relation into train and test
(stratified); a seeded dev split is carved from each relation's training part. The model is
fine-tuned with ``transformers.Trainer`` (AdamW, linear warm-up then linear decay, gradient
clipping), evaluated on the dev split after every epoch, and the epoch with the best dev macro-F1 is
scored on the test part: accuracy and macro-F1 (chance = 1 / number of relations), with per-item
predictions (``items``) for paired significance tests.

The model comes from a KEPT checkpoint (``init: "kept"``) or from a plain BERT directory
(``init: "bert"``, through ``KeptForRelationClassification.from_bert`` as the plain encoder: every
BERT layer a T-layer, no knowledge layers), and the result says how many tensors were loaded and how
many are new. Learning rate and epochs left ``None`` are derived from the model size
(:func:`finetune_defaults`).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kept.checkpoints import read_model_config
from kept.errors import KeptError
from kept.evaluate.common import macro_f1, model_device, pad, quiet_from_pretrained
from kept.evaluate.finetune import FinetuneSettings, finetune, predict_logits
from kept.fewrel import ENTITY_MARKERS, FewRelExample, RelationExample, load_fewrel, relation_examples

MARKERS = ENTITY_MARKERS
logger = logging.getLogger(__name__)


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


def split_examples(
    examples: Sequence[FewRelExample], *, max_relations: int, max_per_relation: int, test_fraction: float, seed: int
) -> tuple[list[FewRelExample], list[FewRelExample], list[str]]:
    """Seeded choice of relations (those with 2+ sentences) and a stratified train/test split."""
    by_relation: dict[str, list[FewRelExample]] = {}
    for example in examples:
        if example.relation is not None:
            by_relation.setdefault(example.relation, []).append(example)
    rng = random.Random(seed)
    eligible = sorted(r for r, items in by_relation.items() if len(items) >= 2)
    relations = sorted(rng.sample(eligible, min(max_relations, len(eligible))))
    train, test = [], []
    for relation in relations:
        items = list(by_relation[relation])
        rng.shuffle(items)
        items = items[:max_per_relation]
        n_test = min(len(items) - 1, max(1, int(round(len(items) * test_fraction))))
        test.extend(items[:n_test])
        train.extend(items[n_test:])
    rng.shuffle(train)
    return train, test, relations


def encode_examples(
    tokenizer: Any,
    examples: Sequence[RelationExample],
    max_length: int,
    entity_pairs: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[list[int]], list[int], list[int], list[list[int]]]:
    """Word-piece ids of marked sentences (kept.fewrel.relation_examples), the index of each start
    marker, and per-token KG entity ids (``entity_pairs[i]`` = (head id, tail id), placed on the first
    piece of each mention as in ERNIE-THU; -1 elsewhere). The tokenizer must know the markers
    (:func:`add_markers`). Long sentences keep a ``max_length`` window that holds both start markers
    when they fit."""
    marker_ids = dict(zip(MARKERS, tokenizer.convert_tokens_to_ids(list(MARKERS))))
    cls_ids = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
    sep_ids = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []
    all_ids, head_starts, tail_starts, all_entities = [], [], [], []
    for number, example in enumerate(examples):
        head_id, tail_id = entity_pairs[number] if entity_pairs is not None else (-1, -1)
        ids: list[int] = list(cls_ids)
        entities: list[int] = [-1] * len(ids)
        head_start = tail_start = 0
        for index, word in enumerate(example.words):
            if index == example.head_word:
                head_start = len(ids)
            if index == example.tail_word:
                tail_start = len(ids)
            pieces = [marker_ids[word]] if word in marker_ids else tokenizer.encode(word, add_special_tokens=False)
            first = [-1] * len(pieces)
            if pieces and index == example.head_word + 1:
                first[0] = head_id
            elif pieces and index == example.tail_word + 1:
                first[0] = tail_id
            ids.extend(pieces)
            entities.extend(first)
        ids.extend(sep_ids)
        entities.extend([-1] * len(sep_ids))
        if len(ids) > max_length:
            lo = max(0, min(min(head_start, tail_start) - 4, len(ids) - max_length))
            lo = max(lo, max(head_start, tail_start) + 1 - max_length)
            ids, entities = ids[lo : lo + max_length], entities[lo : lo + max_length]
            head_start = min(max(head_start - lo, 0), len(ids) - 1)
            tail_start = min(max(tail_start - lo, 0), len(ids) - 1)
        all_ids.append(ids)
        head_starts.append(head_start)
        tail_starts.append(tail_start)
        all_entities.append(entities)
    return all_ids, head_starts, tail_starts, all_entities


def split_dev(
    train: Sequence[FewRelExample], dev_fraction: float, seed: int
) -> tuple[list[FewRelExample], list[FewRelExample]]:
    """Seeded, stratified dev split carved from the training part: ``round(n * dev_fraction)`` of each
    relation's n sentences (at least 1, and at least 1 left for training, for relations with 2+);
    nothing when ``dev_fraction`` is 0. Both parts keep the order of ``train``."""
    if dev_fraction <= 0:
        return list(train), []
    rng = random.Random(f"relation-dev:{seed}")
    by_relation: dict[str, list[int]] = {}
    for index, example in enumerate(train):
        by_relation.setdefault(example.relation or "", []).append(index)
    chosen: set[int] = set()
    for relation in sorted(by_relation):
        indices = by_relation[relation]
        if len(indices) >= 2:
            chosen.update(rng.sample(indices, min(len(indices) - 1, max(1, round(len(indices) * dev_fraction)))))
    return ([e for i, e in enumerate(train) if i not in chosen], [e for i, e in enumerate(train) if i in chosen])


def entity_pairs(
    examples: Sequence[FewRelExample], entity_index: Mapping[str, int] | None
) -> list[tuple[int, int]] | None:
    """(head KG id, tail KG id) of each example (-1 when not in ``entity_index``); None without an index."""
    if entity_index is None:
        return None
    return [(int(entity_index.get(e.head.kb_id, -1)), int(entity_index.get(e.tail.kb_id, -1))) for e in examples]


def encode_features(
    tokenizer: Any,
    examples: Sequence[FewRelExample],
    relations: Sequence[str],
    max_length: int,
    entity_index: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """One feature dict per example (same order): input_ids, head_start, tail_start, entity_ids, label."""
    if not examples:
        return []
    marked, _ = relation_examples(examples, relations)
    if len(marked) != len(examples):
        raise KeptError(
            f"{len(examples) - len(marked)} examples have a relation outside the chosen ones",
            where="relation fine-tune",
            fix="pass examples of the given relations only",
        )
    ids, heads, tails, entities = encode_examples(tokenizer, marked, max_length, entity_pairs(examples, entity_index))
    return [
        {"input_ids": i, "head_start": h, "tail_start": t, "entity_ids": e, "label": m.label}
        for i, h, t, e, m in zip(ids, heads, tails, entities, marked)
    ]


@dataclass(frozen=True)
class RelationCollator:
    """Pads a list of feature dicts into the model's batch; ``entity_ids`` only when ``entity_input``."""

    pad_id: int
    entity_input: bool

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {
            "input_ids": pad([r["input_ids"] for r in rows], self.pad_id),  # [B, L]
            "attention_mask": pad([[1] * len(r["input_ids"]) for r in rows], 0),  # [B, L]
            "head_start": torch.tensor([r["head_start"] for r in rows], dtype=torch.long),  # [B]
            "tail_start": torch.tensor([r["tail_start"] for r in rows], dtype=torch.long),  # [B]
            "labels": torch.tensor([r["label"] for r in rows], dtype=torch.long),  # [B]
        }
        if self.entity_input:
            batch["entity_ids"] = pad([r["entity_ids"] for r in rows], -1)  # [B, L]
        return batch


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


def add_markers(tokenizer: Any, model: Any = None) -> int:
    """Add the entity markers as special tokens; resize the model's embeddings to match."""
    added = tokenizer.add_tokens(list(MARKERS), special_tokens=True)
    if model is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        from transformers.utils import logging as hf_logging

        before = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the note about mean-resizing the new rows
        try:
            model.resize_token_embeddings(len(tokenizer))
        finally:
            hf_logging.set_verbosity(before)
    return added


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
    from fusion.loading import read_bert_state_dict

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
