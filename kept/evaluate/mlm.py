"""Held-out masked-LM loss and accuracy.

The encoded validation split is masked by the ``KnowledgeMaskingCollator`` with a fixed seed,
once with the run's own strategy and once with plain token masking, so that runs trained with
different strategies can be compared on the same (token) task. dEA corruption is off: a fusion
model sees the true entity alignments of the context, but not those of the masked mentions (any
mention with a predicted token loses its alignment, as in the entity cloze), since the embedding of
a masked entity would give its tokens away.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from kept.evaluate.common import masked_logits, uses_fusion
from masking.dea import hide_masked_alignments

#: Encoded columns the collator may use (doc_id and other non-tensor columns are left out).
FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "unit_ids", "unit_kind", "entity_ids", "word_ids")


def _features(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: list(row[k]) for k in FEATURE_KEYS if k in row} for row in rows]


def make_collator(
    tokenizer: Any,
    strategy: str,
    mlm_probability: float,
    seed: int,
    entities: bool = False,
    masking: Mapping[str, Any] | None = None,
) -> Any:
    """The masking collator of the run (its ``masking`` settings), with ``strategy``, a fixed seed, and
    no dEA corruption: with ``entities`` the batch carries the true alignments as ``entity_ids``.
    A staged ``ernie`` schedule is evaluated at its end (progress 1.0)."""
    from masking import KnowledgeMaskingCollator, MaskingConfig

    if isinstance(masking, MaskingConfig):
        masking = masking.model_dump()
    settings = {k: v for k, v in dict(masking or {}).items() if k in MaskingConfig.model_fields}
    settings.update(
        strategy=strategy,
        mlm_probability=mlm_probability,
        seed=seed,
        dea=entities,
        dea_replace_prob=0.0,
        dea_remove_prob=0.0,
        pad_to_multiple_of=None,
    )
    collator = KnowledgeMaskingCollator(tokenizer, config=MaskingConfig(**settings))
    collator.set_progress(1.0)
    return collator


def _padded(values: Sequence[int], length: int, left: bool) -> torch.Tensor:
    row = torch.full((length,), -1, dtype=torch.long)
    kept_values = torch.as_tensor(list(values)[:length], dtype=torch.long)
    if left:
        row[length - len(kept_values) :] = kept_values
    else:
        row[: len(kept_values)] = kept_values
    return row


@torch.no_grad()
def evaluate_mlm(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    strategy: str = "token",
    mlm_probability: float = 0.15,
    seed: int = 0,
    batch_size: int = 32,
    collator: Any = None,
    masking: Mapping[str, Any] | None = None,
    use_entities: bool | None = None,
) -> dict[str, Any]:
    """MLM loss (mean cross-entropy over predicted tokens), accuracy (argmax == label), perplexity, and
    accuracy by the kind of unit of the predicted token (word / phrase / entity, from ``unit_kind``).

    ``rows``: encoded examples (input_ids, attention_mask, unit_ids, unit_kind, entity_ids).
    ``collator``: any callable that turns a list of features into ``input_ids``/``attention_mask``/``labels``
    (and ``entity_ids`` for a fusion model); default: the KnowledgeMaskingCollator with ``strategy`` and
    the run's other ``masking`` settings. ``use_entities``: feed entity alignments (default: when the
    model takes them and has knowledge layers); the alignments of the masked mentions are removed
    (found through the rows' ``unit_ids``), whichever collator built the batch.
    """
    fusion = uses_fusion(model) if use_entities is None else use_entities
    if collator is None:
        collator = make_collator(tokenizer, strategy, mlm_probability, seed, entities=fusion, masking=masking)
    features = _features(rows)
    total_loss, correct, predicted = 0.0, 0, 0
    kind_right = torch.zeros(3, dtype=torch.long)  # word, phrase, entity
    kind_total = torch.zeros(3, dtype=torch.long)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        batch = collator([dict(f) for f in chunk])
        input_ids, labels = batch["input_ids"], batch["labels"]
        attention_mask = batch.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        where = labels != -100
        if not bool(where.any()):
            continue
        length = input_ids.shape[1]
        entity_ids = batch.get("entity_ids") if fusion else None
        if entity_ids is not None:  # a masked mention's own entity would give it away
            units = (
                torch.stack([_padded(f["unit_ids"], length, left) for f in chunk])
                if all("unit_ids" in f for f in chunk)
                else None
            )  # [B, L]
            entity_ids = hide_masked_alignments(entity_ids, units, labels)
        chosen = masked_logits(model, input_ids, attention_mask, where, entity_ids)  # [N, V]
        gold = labels[where].to(chosen.device)
        total_loss += float(torch.nn.functional.cross_entropy(chosen, gold, reduction="sum"))
        right = (chosen.argmax(dim=-1) == gold).cpu()
        correct += int(right.sum())
        predicted += int(gold.numel())
        if all("unit_kind" in f for f in chunk):  # accuracy by the kind of unit the token belongs to
            kinds = torch.stack([_padded(f["unit_kind"], length, left) for f in chunk])[where.cpu()]
            valid = (kinds >= 0) & (kinds <= 2)
            kind_total += torch.bincount(kinds[valid], minlength=3)[:3]
            kind_right += torch.bincount(kinds[valid & right], minlength=3)[:3]
    loss = total_loss / predicted if predicted else math.nan
    return {
        "strategy": strategy,
        "loss": loss,
        "accuracy": correct / predicted if predicted else math.nan,
        "perplexity": math.exp(min(loss, 50.0)) if predicted else math.nan,
        "num_predicted": predicted,
        "num_sequences": len(features),
        "accuracy_by_kind": {
            name: (int(kind_right[i]) / int(kind_total[i])) if int(kind_total[i]) else math.nan
            for i, name in enumerate(("word", "phrase", "entity"))
        },
        "predicted_by_kind": {name: int(kind_total[i]) for i, name in enumerate(("word", "phrase", "entity"))},
        "mlm_probability": mlm_probability,
        "seed": seed,
    }


def evaluate_mlm_both(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    strategy: str,
    mlm_probability: float,
    masking: Mapping[str, Any] | None,
    seed: int,
    batch_size: int,
    use_entities: bool | None,
    token_probability: float = 0.15,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_mlm` twice: ``"strategy"`` with the run's own masking, ``"token"`` with plain token
    masking at ``token_probability`` and default settings, the same task for every run."""
    common: dict[str, Any] = dict(seed=seed, batch_size=batch_size, use_entities=use_entities)
    own = evaluate_mlm(
        model, tokenizer, rows, strategy=strategy, mlm_probability=mlm_probability, masking=masking, **common
    )
    token = evaluate_mlm(model, tokenizer, rows, strategy="token", mlm_probability=token_probability, **common)
    return {"strategy": own, "token": token}
