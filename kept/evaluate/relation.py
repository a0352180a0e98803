"""Relation classification: a short fine-tune of the run's model on FewRel-format sentences.

Sentences (read with :mod:`kept.fewrel`) come with a head and a tail entity span; the entity markers
``[E1] … [/E1]`` and ``[E2] … [/E2]`` are added to the tokenizer (embeddings resized) and put around them;
``KeptForRelationClassification`` classifies from the states at the two start markers.
A fixed, seeded subset of relations and sentences is split per relation into train and test
(stratified); the model is fine-tuned for a few epochs and scored on the test part: accuracy
and macro-F1 (chance = 1 / number of relations).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from kept.evaluate.common import macro_f1, output_logits, pad, quiet_from_pretrained
from kept.fewrel import ENTITY_MARKERS, FewRelExample, RelationExample, load_fewrel, relation_examples

MARKERS = ENTITY_MARKERS


def split_examples(examples: Sequence[FewRelExample], *, max_relations: int, max_per_relation: int,
                   test_fraction: float, seed: int) -> tuple[list[FewRelExample], list[FewRelExample], list[str]]:
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


def encode_examples(tokenizer: Any, examples: Sequence[RelationExample], max_length: int,
                    entity_pairs: Sequence[tuple[int, int]] | None = None
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
            ids, entities = ids[lo:lo + max_length], entities[lo:lo + max_length]
            head_start = min(max(head_start - lo, 0), len(ids) - 1)
            tail_start = min(max(tail_start - lo, 0), len(ids) - 1)
        all_ids.append(ids)
        head_starts.append(head_start)
        tail_starts.append(tail_start)
        all_entities.append(entities)
    return all_ids, head_starts, tail_starts, all_entities


def finetune_and_score(model: torch.nn.Module, tokenizer: Any, train: Sequence[FewRelExample],
                       test: Sequence[FewRelExample], relations: Sequence[str], *, epochs: int = 3,
                       learning_rate: float = 5e-4, batch_size: int = 16, max_length: int = 96,
                       seed: int = 0, entity_index: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` (forward(input_ids, attention_mask, head_start, tail_start, labels) -> logits)
    on ``train`` and return accuracy / macro-F1 on ``test``. The tokenizer must know the markers."""
    train_marked, _ = relation_examples(train, relations)
    test_marked, _ = relation_examples(test, relations)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    pad_id = tokenizer.pad_token_id or 0

    def pairs(examples: Sequence[FewRelExample]) -> list[tuple[int, int]] | None:
        if entity_index is None:
            return None
        return [(int(entity_index.get(e.head.kb_id, -1)), int(entity_index.get(e.tail.kb_id, -1))) for e in examples]

    def encoded(marked: Sequence[RelationExample], examples: Sequence[FewRelExample]) -> tuple:
        ids, heads, tails, entities = encode_examples(tokenizer, marked, max_length, pairs(examples))
        return ids, heads, tails, entities, [e.label for e in marked]

    def batches(data: tuple, shuffle: bool):
        ids, heads, tails, entities, labels = data
        order = torch.randperm(len(ids), generator=generator).tolist() if shuffle else list(range(len(ids)))
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            batch = {
                "input_ids": pad([ids[i] for i in chosen], pad_id).to(device),
                "attention_mask": pad([[1] * len(ids[i]) for i in chosen], 0).to(device),
                "head_start": torch.tensor([heads[i] for i in chosen], device=device),
                "tail_start": torch.tensor([tails[i] for i in chosen], device=device),
                "labels": torch.tensor([labels[i] for i in chosen], device=device),
            }
            if entity_index is not None:
                batch["entity_ids"] = pad([entities[i] for i in chosen], -1).to(device)
            yield batch

    train_data, test_data = encoded(train_marked, train), encoded(test_marked, test)
    # the KG entity table stays fixed (no entity ids are fed here; its sparse gradients do not suit AdamW)
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) and module.sparse:
            module.weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    losses = []
    for _ in range(epochs):
        for batch in batches(train_data, shuffle=True):
            labels = batch.pop("labels")
            logits = output_logits(model(**batch))
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    model.eval()
    predictions, golds = [], []
    with torch.no_grad():
        for batch in batches(test_data, shuffle=False):
            labels = batch.pop("labels")
            predictions += output_logits(model(**batch)).argmax(dim=-1).tolist()
            golds += labels.tolist()
    correct = sum(int(p == g) for p, g in zip(predictions, golds))
    linked = sum(int(h >= 0) + int(t >= 0) for h, t in (pairs(list(train) + list(test)) or []))
    return {
        "accuracy": correct / len(golds) if golds else math.nan,
        "macro_f1": macro_f1(predictions, golds, num_labels=len(relations)),
        "num_labels": len(relations), "num_train": len(train), "num_test": len(test),
        "chance": 1.0 / len(relations) if relations else math.nan,
        "final_train_loss": losses[-1] if losses else math.nan,
        "epochs": epochs, "relations": list(relations),
        "entity_input": entity_index is not None,
        "linked_fraction": linked / (2 * (len(train) + len(test))) if train or test else 0.0,
    }


def add_markers(tokenizer: Any, model: torch.nn.Module | None = None) -> int:
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


def evaluate_relation(model_dir: str | Path, tokenizer_dir: str | Path, data: str | Path | None, *,
                      max_relations: int = 5, max_per_relation: int = 40, test_fraction: float = 0.3,
                      epochs: int = 3, learning_rate: float = 5e-4, batch_size: int = 16, max_length: int = 96,
                      seed: int = 0, device: torch.device | str = "cpu",
                      entity_index: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Fine-tune a fresh ``KeptForRelationClassification`` from ``model_dir`` and score it.

    ``entity_index``: KB id (FewRel's ``h``/``t`` ids) -> KG id; given (fusion runs), heads and tails
    found in it enter the model as entity ids, as in ERNIE-THU's FewRel fine-tuning.

    Returns ``{"skipped": reason}`` when no FewRel data is configured or the file is absent.
    """
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
    train, test, relations = split_examples(examples, max_relations=max_relations,
                                            max_per_relation=max_per_relation, test_fraction=test_fraction, seed=seed)
    if len(relations) < 2:
        return {"skipped": f"{data} has fewer than 2 relations with 2+ sentences"}
    from transformers import AutoTokenizer

    from fusion import KeptForRelationClassification

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = quiet_from_pretrained(KeptForRelationClassification, str(model_dir), num_labels=len(relations))
    add_markers(tokenizer, model)
    model.to(device)
    result = finetune_and_score(model, tokenizer, train, test, relations, epochs=epochs, learning_rate=learning_rate,
                                batch_size=batch_size, max_length=max_length, seed=seed, entity_index=entity_index)
    result["data"] = str(data)
    return result
