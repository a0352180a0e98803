"""Held-out masked-LM loss and accuracy.

The encoded validation split is masked by the ``KnowledgeMaskingCollator`` with a fixed seed,
once with the run's own strategy and once with plain token masking, so that runs trained with
different strategies can be compared on the same (token) task. dEA corruption is off: a fusion
model sees the true entity alignments of the text.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from kept.evaluate.common import forward_logits, pad, uses_fusion

FEATURE_KEYS = ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids")


def _features(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: list(row[k]) for k in FEATURE_KEYS if k in row} for row in rows]


def make_collator(tokenizer: Any, strategy: str, mlm_probability: float, seed: int) -> Any:
    """The masking collator of the run's strategy, seeded, without dEA corruption, at the end of
    any staged schedule (``ernie`` evaluates its final stage)."""
    from masking import KnowledgeMaskingCollator

    collator = KnowledgeMaskingCollator(tokenizer, strategy=strategy, mlm_probability=mlm_probability,
                                        dea=False, seed=seed)
    if hasattr(collator, "set_progress"):
        collator.set_progress(1.0)
    return collator


@torch.no_grad()
def evaluate_mlm(model: torch.nn.Module, tokenizer: Any, rows: Sequence[Mapping[str, Any]], *,
                 strategy: str = "token", mlm_probability: float = 0.15, seed: int = 0, batch_size: int = 32,
                 collator: Any = None,
                 use_entities: bool | None = None) -> dict[str, Any]:
    """MLM loss (mean cross-entropy over predicted tokens), accuracy (argmax == label) and perplexity.

    ``rows``: encoded examples (input_ids, attention_mask, unit_ids, unit_kind, entity_ids).
    ``collator``: any callable that turns a list of features into ``input_ids``/``attention_mask``/``labels``
    (default: the KnowledgeMaskingCollator with ``strategy``).
    """
    collator = collator if collator is not None else make_collator(tokenizer, strategy, mlm_probability, seed)
    fusion = uses_fusion(model) if use_entities is None else use_entities
    features = _features(rows)
    total_loss, correct, predicted = 0.0, 0, 0
    for start in range(0, len(features), batch_size):
        chunk = features[start:start + batch_size]
        batch = collator([dict(f) for f in chunk])
        input_ids, labels = batch["input_ids"], batch["labels"]
        attention_mask = batch.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        entity_ids = None
        if fusion and all("entity_ids" in f for f in chunk):
            entity_ids = pad([f["entity_ids"] for f in chunk], -1, input_ids.shape[1])
        logits = forward_logits(model, input_ids, attention_mask, entity_ids)
        labels = labels.to(logits.device)
        where = labels != -100
        if not bool(where.any()):
            continue
        chosen = logits[where]
        gold = labels[where]
        total_loss += float(torch.nn.functional.cross_entropy(chosen, gold, reduction="sum"))
        correct += int((chosen.argmax(dim=-1) == gold).sum())
        predicted += int(gold.numel())
    loss = total_loss / predicted if predicted else math.nan
    return {
        "strategy": strategy,
        "loss": loss,
        "accuracy": correct / predicted if predicted else math.nan,
        "perplexity": math.exp(min(loss, 50.0)) if predicted else math.nan,
        "num_predicted": predicted,
        "num_sequences": len(features),
        "mlm_probability": mlm_probability,
        "seed": seed,
    }
