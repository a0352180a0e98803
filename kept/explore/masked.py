"""Masking: what each strategy masks in a real batch of the run's encoded data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kept import analysis
from kept.analysis.run import load_config
from kept.errors import KeptError
from kept.explore._common import UNIT_KINDS


@dataclass
class MaskedBatch:
    """A collated batch and the features it was built from (for display)."""

    strategy: str
    tokenizer: Any
    features: list[dict[str, Any]]
    batch: dict[str, Any]


def _masking_settings(data_dir: Path) -> dict[str, Any]:
    try:
        masking = dict(load_config(data_dir).get("masking") or {})
    except KeptError:
        return {}
    keep = (
        "mlm_probability",
        "mask_replace_prob",
        "random_replace_prob",
        "span_geometric_p",
        "span_max_words",
        "entity_share",
        "phrase_share",
        "ernie_stages",
        "ernie_mixture",
        "dea_replace_prob",
        "dea_remove_prob",
    )
    return {k: v for k, v in masking.items() if k in keep and v is not None}


def masked_batch(
    data_dir: str | Path,
    strategy: str,
    *,
    rows: int = 2,
    split: str = "validation",
    seed: int = 0,
    start: int = 0,
    **masking: Any,
) -> MaskedBatch:
    """Collate ``rows`` encoded examples of the run with ``masking.KnowledgeMaskingCollator`` and
    ``strategy`` (the run's other masking settings, overridable by keyword)."""
    from masking import KnowledgeMaskingCollator

    data_dir = Path(data_dir)
    encoded = analysis.load_encoded(data_dir, split)
    if len(encoded) == 0:
        raise KeptError(
            f"the encoded {split} split is empty",
            where=data_dir / "encoded" / split,
            fix="pick another split (split='train')",
        )
    stop = min(len(encoded), start + rows)
    features = encoded.select(range(start, stop)).to_list()
    tokenizer = analysis.load_tokenizer(data_dir)
    settings = {**_masking_settings(data_dir), **masking}
    dea = bool(settings.pop("dea", True)) and all("entity_ids" in f for f in features)
    collator = KnowledgeMaskingCollator(tokenizer, strategy=strategy, seed=seed, dea=dea, **settings)
    batch = collator([{k: v for k, v in f.items() if k != "doc_id"} for f in features])
    return MaskedBatch(strategy, tokenizer, features, batch)


def _row_actions(masked: MaskedBatch, row: int) -> tuple[list[str], list[int], list[str], list[int]]:
    feature = masked.features[row]
    original = list(feature["input_ids"])
    length = sum(1 for a in feature.get("attention_mask", [1] * len(original)) if a)
    inputs = masked.batch["input_ids"][row].tolist()[:length]
    labels = masked.batch["labels"][row].tolist()[:length]
    tokens = masked.tokenizer.convert_ids_to_tokens(original[:length])
    mask_id = masked.tokenizer.mask_token_id
    actions = []
    for before, after, label in zip(original, inputs, labels):
        if label == -100:
            actions.append("")
        elif after == mask_id:
            actions.append("[MASK]")
        elif after != before:
            actions.append("RANDOM")
        else:
            actions.append("KEPT")
    units = list(feature.get("unit_ids", [-1] * length))[:length]
    return tokens, units, actions, inputs


def masked_tokens_frame(masked: MaskedBatch, row: int = 0) -> Any:
    """One row per token of example ``row``: token, unit, unit kind, entity id (input/true), the
    masking action ([MASK], RANDOM, KEPT or blank) and the token the model sees."""
    import pandas as pd

    feature = masked.features[row]
    tokens, units, actions, inputs = _row_actions(masked, row)
    kinds = list(feature.get("unit_kind", [0] * len(tokens)))
    entity_true = list(feature.get("entity_ids", [-1] * len(tokens)))
    entity_input = masked.batch["entity_ids"][row].tolist() if "entity_ids" in masked.batch else [-1] * len(tokens)
    seen = masked.tokenizer.convert_ids_to_tokens(inputs)
    rows = [
        {
            "position": i,
            "token": tokens[i],
            "unit": units[i],
            "unit_kind": UNIT_KINDS.get(kinds[i], kinds[i]),
            "entity_id": entity_true[i],
            "entity_input": entity_input[i],
            "action": actions[i],
            "model_sees": seen[i],
        }
        for i in range(len(tokens))
    ]
    return pd.DataFrame(rows)


def masked_displacy(masked: MaskedBatch, row: int = 0) -> dict[str, Any]:
    """A displaCy manual record of example ``row``: the word pieces joined by spaces, masked units
    highlighted as ``KIND·ACTION`` (whole units masked together show as one highlight)."""
    feature = masked.features[row]
    tokens, units, actions, _ = _row_actions(masked, row)
    kinds = list(feature.get("unit_kind", [0] * len(tokens)))
    text, offsets = "", []
    for token in tokens:
        start = len(text) + (1 if text else 0)
        text = f"{text} {token}" if text else token
        offsets.append((start, len(text)))
    ents: list[dict[str, Any]] = []
    previous = None
    for i, action in enumerate(actions):
        if not action:
            previous = None
            continue
        key = (units[i] if units[i] >= 0 else -(i + 2), action)
        label = f"{UNIT_KINDS.get(kinds[i], 'word')}·{action}"
        if previous == key and ents:
            ents[-1]["end"] = offsets[i][1]
        else:
            ents.append({"start": offsets[i][0], "end": offsets[i][1], "label": label})
        previous = key
    masked_count = sum(1 for a in actions if a)
    return {
        "text": text,
        "ents": ents,
        "title": f"strategy {masked.strategy}: {masked_count} of {len(tokens)} tokens predicted",
    }


def masking_summary(
    data_dir: str | Path, strategies: Sequence[str], *, rows: int = 32, seed: int = 0, split: str = "validation"
) -> Any:
    """Per strategy, over ``rows`` encoded examples: share of tokens predicted, and of the predicted
    tokens the share in entity / phrase / word units and the [MASK] / random / kept split."""
    import pandas as pd
    import torch

    records = []
    for strategy in strategies:
        masked = masked_batch(data_dir, strategy, rows=rows, seed=seed, split=split)
        batch = masked.batch
        predicted = batch["labels"] != -100
        content = batch["attention_mask"].bool()
        kinds = torch.zeros_like(batch["input_ids"])
        for r, feature in enumerate(masked.features):
            values = list(feature.get("unit_kind", []))[: kinds.shape[1]]
            if values:
                kinds[r, : len(values)] = torch.tensor(values)
        original = torch.full_like(batch["input_ids"], -1)
        for r, feature in enumerate(masked.features):
            values = list(feature["input_ids"])[: original.shape[1]]
            original[r, : len(values)] = torch.tensor(values)
        n = int(predicted.sum())
        is_mask = batch["input_ids"] == masked.tokenizer.mask_token_id
        records.append(
            {
                "strategy": strategy,
                "sequences": len(masked.features),
                "predicted_fraction": n / max(int(content.sum()), 1),
                "in_entities": int((predicted & (kinds == 2)).sum()) / n if n else math.nan,
                "in_phrases": int((predicted & (kinds == 1)).sum()) / n if n else math.nan,
                "in_words": int((predicted & (kinds == 0)).sum()) / n if n else math.nan,
                "as_mask": int((predicted & is_mask).sum()) / n if n else math.nan,
                "as_random": int((predicted & ~is_mask & (batch["input_ids"] != original)).sum()) / n
                if n
                else math.nan,
                "dea_alignments": int((batch["entity_labels"] != -100).sum()) if "entity_labels" in batch else 0,
            }
        )
    return pd.DataFrame(records).set_index("strategy")
