"""A KEPT masked LM as a plain transformers ``BertForMaskedLM``: the inverse of fusion.bert_mapping's BERT -> KEPT map.

T layers and the token side of K layers carry BertLayer's parameter names, so BERT layer i <- T layer i
(i < T), <- K layer i - T (T <= i < T + K). The names are not listed again here: every tensor a
``BertForMaskedLM`` has is looked up through ``fusion.bert_mapping.map_bert_key``. What BERT has no place for
(the K layers' entity side, the entity table, the dEA and SOP heads, the pooler) is reported as dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fusion.bert_checkpoint import BERT_FIELDS
from fusion.bert_mapping import kept_prefix, map_bert_key
from fusion.errors import FusionError

# parts of a KEPT model that a BertForMaskedLM has no place for: (label, tensor-name pattern; {kept} is
# where the model keeps its KeptModel, * a layer index); the first match names a tensor's part
DROPPED_PARTS: tuple[tuple[str, str], ...] = (
    ("entity attention of the knowledge layers", "{kept}knowledge_encoder.layer.*.entity_attention."),
    ("entity projections of the knowledge layers", "{kept}knowledge_encoder.layer.*.entity_"),
    ("trainable entity embeddings", "{kept}entity_embeddings."),
    ("dEA head", "entity_head."),
    ("SOP head", "sop_classifier."),
    ("pooler", "{kept}pooler."),
)


@dataclass
class BertExport:
    """The converted model and what of the KEPT model it left out."""

    model: Any  # transformers.BertForMaskedLM
    copied: list[str] = field(default_factory=list)  # KEPT tensor names copied into it
    dropped: dict[str, list[str]] = field(default_factory=dict)  # part label -> KEPT tensor names left out
    entity_table: tuple[int, int] | None = None  # (entities, dim) of a frozen entity table left out

    def dropped_summary(self) -> list[str]:
        """One line per dropped part, e.g. ``dEA head (3 tensors)``."""
        lines = [f"{label} ({len(names)} tensors)" for label, names in self.dropped.items()]
        if self.entity_table is not None:
            lines.append(f"entity table ({self.entity_table[0]} entities x {self.entity_table[1]})")
        return lines


def bert_config_of(config: Any) -> Any:
    """The ``BertConfig`` of a KEPT config's text path: BERT_FIELDS copied, T + K layers, same head tying."""
    from transformers import BertConfig

    values = {name: getattr(config, name) for name in BERT_FIELDS}
    return BertConfig(
        **values,
        num_hidden_layers=int(config.num_hidden_layers) + int(config.num_knowledge_layers),
        tie_word_embeddings=bool(config.tie_word_embeddings),
        architectures=["BertForMaskedLM"],
    )


def _part_of(name: str, prefix: str) -> str | None:
    for label, pattern in DROPPED_PARTS:
        head, star, tail = pattern.format(kept=prefix).partition("*")
        if not star and name.startswith(head):
            return label
        if star and name.startswith(head):
            index, _, rest = name[len(head) :].partition(".")
            if index.isdigit() and rest.startswith(tail[1:]):
                return label
    return None


def to_bert_for_masked_lm(model: Any) -> BertExport:
    """A ``BertForMaskedLM`` computing the KEPT model's MLM logits for inputs without entities.

    ``model`` is a KEPT model with an MLM head (``KeptForPreTraining``, ``KeptForMaskedLM``). A decoder
    tied to the word embeddings stays tied (``tie_word_embeddings`` is copied); an untied one is copied.
    Raises FusionError when the model lacks a tensor BERT needs (e.g. a model without MLM head)."""
    from transformers import BertForMaskedLM

    config = model.config
    t_layers, k_layers = int(config.num_hidden_layers), int(config.num_knowledge_layers)
    prefix = kept_prefix(model)
    own = model.state_dict()
    bert = BertForMaskedLM(bert_config_of(config))
    state: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for name, tensor in bert.state_dict().items():
        source = map_bert_key(name, t_layers, k_layers, prefix=prefix)
        if source is None or source not in own:
            missing.append(name)
            continue
        if own[source].shape != tensor.shape:
            raise FusionError(
                f"{source} has shape {list(own[source].shape)}, BERT expects {list(tensor.shape)} at {name}",
                where=type(model).__name__,
                fix="Export a model saved by this kept.",
            )
        state[name] = own[source]
    if missing:
        raise FusionError(
            f"the model has no tensor for BERT's {missing[0]} ({len(missing)} missing)",
            where=type(model).__name__,
            fix="Export a KEPT masked LM (KeptForPreTraining or KeptForMaskedLM) with its MLM head.",
        )
    bert.load_state_dict(state, strict=True)
    bert.tie_weights()
    bert.eval()

    used = {map_bert_key(name, t_layers, k_layers, prefix=prefix) for name in state}
    dropped: dict[str, list[str]] = {}
    for name in own:
        if name not in used:
            dropped.setdefault(_part_of(name, prefix) or "other", []).append(name)
    table = model.entity_table
    return BertExport(
        model=bert,
        copied=sorted(n for n in used if n is not None),
        dropped=dropped,
        entity_table=(table.num_entities, table.dim) if table is not None else None,
    )


__all__ = ["BertExport", "DROPPED_PARTS", "bert_config_of", "to_bert_for_masked_lm"]
