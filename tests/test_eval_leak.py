"""A fusion model never sees the entity alignment of a mention it has to predict (held-out MLM, training option)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from eval_fixtures import SENTENCES, StubMLM, encode_rows, tiny_tokenizer

from kept.evaluate.mlm import evaluate_mlm, make_collator
from masking import KnowledgeMaskingCollator, MaskingConfig, MaskingError
from masking.dea import hide_masked_alignments


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def rows(tokenizer: Any) -> list[dict[str, Any]]:
    return encode_rows(tokenizer, SENTENCES)


# ------------------------------------------------------------------ the pure function


def test_hide_masked_alignments_hides_whole_masked_mentions_only() -> None:
    # row 0: [CLS] m0 m0 m0 w w m1 m1 [SEP]; mention 0 (unit 0) is predicted on its 2nd piece only (a random or
    # kept token under 80/10/10), mention 1 (unit 3) is not predicted
    # row 1: [CLS] w m2 [SEP] pad; mention 2 (unit 1) is predicted on its only piece
    entity_ids = torch.tensor([[-1, 7, -1, -1, -1, -1, 9, -1, -1], [-1, -1, 4, -1, -1, -1, -1, -1, -1]])
    unit_ids = torch.tensor([[-1, 0, 0, 0, 1, 2, 3, 3, -1], [-1, 0, 1, -1, -1, -1, -1, -1, -1]])
    labels = torch.full_like(entity_ids, -100)
    labels[0, 2] = 55
    labels[0, 4] = 56  # a predicted word: no entity to hide
    labels[1, 2] = 57
    hidden = hide_masked_alignments(entity_ids, unit_ids, labels)
    assert hidden.tolist() == [[-1, -1, -1, -1, -1, -1, 9, -1, -1], [-1, -1, -1, -1, -1, -1, -1, -1, -1]]
    assert entity_ids[0, 1] == 7  # the input is not changed in place
    # without units only the aligned (first) piece itself counts
    assert hide_masked_alignments(entity_ids, None, labels)[0, 1] == 7
    labels[0, 1] = 50
    assert hide_masked_alignments(entity_ids, None, labels).tolist()[0] == [-1, -1, -1, -1, -1, -1, 9, -1, -1]
    with pytest.raises(MaskingError, match="shapes differ"):
        hide_masked_alignments(entity_ids, unit_ids[:, :4], labels)


# ------------------------------------------------------------------ held-out MLM


class RecordingCollator:
    """Wraps a collator and keeps the labels of every batch it made."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator
        self.labels: list[torch.Tensor] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collator(features)
        self.labels.append(batch["labels"].clone())
        return batch


def test_mlm_hides_the_alignment_of_every_masked_mention(tokenizer: Any, rows: list[dict[str, Any]]) -> None:
    """Entity masking at a high rate: every masked mention arrives at the model with entity_ids -1, every
    other mention with its true entity (this fails when the true alignment reaches masked positions)."""
    model = StubMLM(len(tokenizer), lambda ids: list(ids), takes_entities=True)
    collator = RecordingCollator(make_collator(tokenizer, "entity", 0.3, seed=1, entities=True))
    evaluate_mlm(model, tokenizer, rows, collator=collator, batch_size=4)
    assert len(model.seen_entity_ids) == len(collator.labels) == 3
    hidden = kept = 0
    for batch, ((_, seen), labels) in enumerate(zip(model.seen_entity_ids, collator.labels)):
        for i, row in enumerate(rows[4 * batch : 4 * batch + 4]):
            units = row["unit_ids"]
            for position, entity in enumerate(row["entity_ids"]):
                if entity < 0:
                    continue
                pieces = [p for p, u in enumerate(units) if u == units[position]]
                if bool((labels[i, pieces] != -100).any()):
                    assert int(seen[i, position]) == -1, (batch, i, position)
                    hidden += 1
                else:
                    assert int(seen[i, position]) == entity
                    kept += 1
    assert hidden > 0 and kept > 0  # both cases occur in this batch


def test_mlm_hides_masked_mentions_for_any_collator(tokenizer: Any, rows: list[dict[str, Any]]) -> None:
    """A caller's collator that passes the true alignments: positions it masks still lose them."""

    class TrueAlignments:
        def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            from kept.evaluate.common import pad

            ids = pad([f["input_ids"] for f in features], tokenizer.pad_token_id)
            entity_ids = pad([f["entity_ids"] for f in features], -1)
            labels = torch.where(entity_ids >= 0, ids, torch.full_like(ids, -100))  # predict each mention's 1st piece
            masked = torch.where(entity_ids >= 0, torch.full_like(ids, tokenizer.mask_token_id), ids)
            return {
                "input_ids": masked,
                "attention_mask": (ids != tokenizer.pad_token_id).long(),
                "labels": labels,
                "entity_ids": entity_ids,
            }

    model = StubMLM(len(tokenizer), lambda ids: list(ids), takes_entities=True)
    evaluate_mlm(model, tokenizer, rows, collator=TrueAlignments(), batch_size=5)
    assert model.seen_entity_ids and all(bool((seen == -1).all()) for _, seen in model.seen_entity_ids)


# ------------------------------------------------------------------ training collator option


def test_collator_keeps_masked_alignments_by_default_and_hides_them_on_request(
    tokenizer: Any, rows: list[dict[str, Any]]
) -> None:
    features = [
        {k: list(row[k]) for k in ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids")}
        for row in rows
    ]
    settings = dict(strategy="entity", mlm_probability=0.3, dea_replace_prob=0.0, dea_remove_prob=0.0, seed=2)
    default = KnowledgeMaskingCollator(tokenizer, config=MaskingConfig(**settings))([dict(f) for f in features])
    hiding = KnowledgeMaskingCollator(tokenizer, config=MaskingConfig(**settings, dea_hide_masked=True))(
        [dict(f) for f in features]
    )
    assert torch.equal(default["labels"], hiding["labels"])  # same masks: the option draws nothing
    assert torch.equal(default["entity_labels"], hiding["entity_labels"])  # dEA still predicts every entity
    true = default["entity_labels"].clamp(min=-1)
    assert torch.equal(default["entity_ids"], true)  # ERNIE-THU: masked mentions keep their alignment
    units = torch.full_like(true, -1)
    for i, f in enumerate(features):
        units[i, : len(f["unit_ids"])] = torch.tensor(f["unit_ids"])
    expected = hide_masked_alignments(true, units, default["labels"])
    assert torch.equal(hiding["entity_ids"], expected) and not torch.equal(expected, true)
