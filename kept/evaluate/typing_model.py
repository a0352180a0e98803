"""Entity-typing model and features: :class:`KeptForEntityTyping` (marker state + mention mean ->
one logit per type), the ``[E1] … [/E1]`` features of typing items and their collator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import SequenceClassifierOutput

from fusion import KeptModel, KeptPreTrainedModel
from kept.errors import KeptError
from kept.evaluate.common import pad
from kept.evaluate.relation_data import MARKERS
from kept.evaluate.typing_items import TypingItem

START_MARKER, END_MARKER = MARKERS[0], MARKERS[1]


class KeptForEntityTyping(KeptPreTrainedModel):
    """[state at the start marker ; mean state of the mention's pieces] -> dropout -> linear (one logit
    per type); multi-label BCE. ``config.num_labels`` = number of types."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.kept = KeptModel(config, add_pooling_layer=False)
        drop = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(drop)
        self.classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    def init_type_prior(self, frequency: torch.Tensor) -> None:
        """Start each type's logit at the log-odds of its training frequency [T] (the prior
        initialisation of imbalanced multi-label heads): the first steps then learn from the context
        instead of pushing every rare type towards 0."""
        p = frequency.float().clamp(1e-3, 1 - 1e-3)  # [T]
        with torch.no_grad():
            self.classifier.bias.copy_(torch.log(p / (1 - p)).to(self.classifier.bias))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        entity_ids: torch.Tensor | None = None,
        mention_start: torch.Tensor | None = None,
        mention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        if mention_start is None or mention_mask is None:
            raise KeptError(
                "entity typing needs mention_start [B] and mention_mask [B, L]",
                where="forward",
                fix="collate the items with TypingCollator",
            )
        out = self.kept(input_ids=input_ids, attention_mask=attention_mask, entity_ids=entity_ids)
        sequence = out.last_hidden_state  # [B, L, H]
        rows = torch.arange(sequence.shape[0], device=sequence.device)
        marker = sequence[rows, mention_start.to(sequence.device).long()]  # [B, H]
        weights = mention_mask.to(sequence.device, sequence.dtype).unsqueeze(-1)  # [B, L, 1]
        mean = (weights * sequence).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # [B, H]
        logits = self.classifier(self.dropout(torch.cat([marker, mean], dim=-1)))  # [B, T]
        loss = None
        if labels is not None:
            loss = F.binary_cross_entropy_with_logits(
                logits.float(), labels.to(logits.device).float()
            ) + self.entity_path_anchor(out.entity_last_hidden_state)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def encode_typing_items(
    tokenizer: Any, items: Sequence[TypingItem], types: Sequence[str], max_length: int, *, entity_input: bool = False
) -> list[dict[str, Any]]:
    """Features of the items: ``[CLS] left [E1] mention [/E1] right [SEP]`` word pieces (a
    ``max_length`` window around the mention), the start-marker index, the mention-piece mask, the
    multi-hot labels over ``types`` and, with ``entity_input``, KG ids on the first piece of every
    linked mention (-1 elsewhere). The tokenizer must be fast (offsets) and know the markers."""
    if not getattr(tokenizer, "is_fast", False):
        raise KeptError(
            "entity typing needs a fast tokenizer (character offsets of word pieces)",
            where="tokenizer",
            fix="save the run's tokenizer with a tokenizer.json",
        )
    start_id, end_id = tokenizer.convert_tokens_to_ids([START_MARKER, END_MARKER])
    cls_ids = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
    sep_ids = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []
    budget = max_length - len(cls_ids) - len(sep_ids)
    column = {t: i for i, t in enumerate(types)}
    encoded = tokenizer([item.sent for item in items], add_special_tokens=False, return_offsets_mapping=True)
    features = []
    for item, ids, offsets in zip(items, encoded["input_ids"], encoded["offset_mapping"]):
        inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < item.end and b > item.start]
        if not inside:
            continue  # the mention produced no word piece (e.g. only characters the tokenizer drops)
        first, last = inside[0], inside[-1]
        body = ids[:first] + [start_id] + ids[first : last + 1] + [end_id] + ids[last + 1 :]
        mention = [0] * (first + 1) + [1] * (last + 1 - first) + [0] * (len(ids) - last)
        entities = [-1] * len(body)
        if entity_input:
            for s, e, kg_id in item.entities:
                hit = next((i for i, (a, b) in enumerate(offsets) if b > a and a < e and b > s), None)
                if hit is not None:
                    entities[hit + (hit >= first) + (hit > last)] = kg_id
        start = first
        if len(body) > budget:  # keep a window of ``budget`` pieces with the mention in the middle
            span = last + 3 - first
            lo = max(0, min(first - max(0, (budget - span) // 2), len(body) - budget))
            lo = min(lo, first)
            body, mention, entities = body[lo : lo + budget], mention[lo : lo + budget], entities[lo : lo + budget]
            start = first - lo
        offset = len(cls_ids)
        feature = {
            "id": item.id,
            "input_ids": cls_ids + body + sep_ids,
            "mention_start": start + offset,
            "mention_mask": [0] * offset + mention + [0] * len(sep_ids),
            "labels": [0.0] * len(types),
        }
        for label in item.labels:
            if label in column:
                feature["labels"][column[label]] = 1.0
        if entity_input:
            feature["entity_ids"] = [-1] * offset + entities + [-1] * len(sep_ids)
        features.append(feature)
    return features


@dataclass(frozen=True)
class TypingCollator:
    """Pads typing features into a batch: input_ids/attention_mask/mention_mask [B, L], entity_ids
    [B, L] (when the features have them), mention_start [B], labels [B, T] (float multi-hot)."""

    pad_id: int

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [f["input_ids"] for f in features]
        batch = {
            "input_ids": pad(ids, self.pad_id),
            "attention_mask": pad([[1] * len(row) for row in ids], 0),
            "mention_mask": pad([f["mention_mask"] for f in features], 0),
            "mention_start": torch.tensor([f["mention_start"] for f in features], dtype=torch.long),
            "labels": torch.tensor([f["labels"] for f in features], dtype=torch.float),
        }
        if "entity_ids" in features[0]:
            batch["entity_ids"] = pad([f["entity_ids"] for f in features], -1)
        return batch
