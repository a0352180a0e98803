"""Where each tensor of a BERT checkpoint goes in a KEPT model: tensor names and the layer layout.

Layer layout: a BERT checkpoint with N layers fills the T-encoder (``num_hidden_layers`` = T) and the
token side of the K-encoder (``num_knowledge_layers`` = K) in order: BERT layer i -> T layer i for
i < T, -> K layer i - T for T <= i < T + K; BERT layers from T + K on are unused, and K layers past
BERT's depth start new. Layer counts not given are chosen so that T + K = N (neither given: T = ceil(N/2),
K = floor(N/2)), so ``num_knowledge_layers=0`` gives exactly the BERT encoder (T = N).
"""

from __future__ import annotations

from typing import Any

# wrappers around a BERT state dict: DataParallel/DDP saves, BertFor* models, other containers
CHECKPOINT_PREFIXES = ("module.", "bert.", "model.")
# legacy tensor names that transformers renames on load (conversion_mapping "legacy"; 4.x
# _fix_state_dict_key_on_load): pytorch_pretrained_bert's LayerNorm gamma/beta. The other legacy renames
# (weight-norm weight_g/weight_v, multimodal model.model) name modules that BERT does not have.
LEGACY_SUFFIXES = (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias"))
# submodules of a K-encoder layer that carry BertLayer's names (the rest is the entity side)
BERT_LAYER_PARTS = ("attention.", "intermediate.", "output.")


def canonical_bert_key(key: str) -> str:
    """A checkpoint tensor name without wrapper prefixes and with legacy names renamed, e.g.
    ``module.bert.encoder.layer.0.output.LayerNorm.gamma`` -> ``encoder.layer.0.output.LayerNorm.weight``."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in CHECKPOINT_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    for old, new in LEGACY_SUFFIXES:
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def map_bert_key(key: str, t_layers: int, k_layers: int, prefix: str = "kept.") -> str | None:
    """Name in the KEPT model of a BERT checkpoint tensor, or None if the model has no place for it.
    ``prefix`` is where the model keeps its KeptModel ("kept." for the task models, "" for KeptModel)."""
    key = canonical_bert_key(key)
    if key.startswith("embeddings.") or key.startswith("pooler."):
        return prefix + key
    if key.startswith("encoder.layer."):
        index_text, _, tail = key[len("encoder.layer.") :].partition(".")
        if not index_text.isdigit():
            return None
        index = int(index_text)
        if index < t_layers:
            return f"{prefix}encoder.layer.{index}.{tail}"
        if index < t_layers + k_layers:
            return f"{prefix}knowledge_encoder.layer.{index - t_layers}.{tail}"
        return None
    if key.startswith("cls.predictions."):
        return key
    return None


def bert_layer_of(name: str, t_layers: int, prefix: str = "kept.") -> int | None:
    """For an encoder parameter of the KEPT model that a BERT checkpoint fills: its BERT layer index
    (-1 for embeddings and pooler); None for parameters BERT has no counterpart for (entity side, heads)."""
    if not name.startswith(prefix):
        return None
    name = name[len(prefix) :]
    if name.startswith("embeddings.") or name.startswith("pooler."):
        return -1
    for stack, offset in (("encoder.layer.", 0), ("knowledge_encoder.layer.", t_layers)):
        if name.startswith(stack):
            index_text, _, tail = name[len(stack) :].partition(".")
            if stack == "encoder.layer." or tail.startswith(BERT_LAYER_PARTS):
                return int(index_text) + offset
    return None


def kept_prefix(model: Any) -> str:
    """Where a KEPT model keeps its KeptModel in state-dict names: "" for a bare KeptModel, else "kept."."""
    return "" if model._kept() is model else f"{model.base_model_prefix}."


def split_layers(bert_layers: int, t_layers: int | None, k_layers: int | None) -> tuple[int, int]:
    """(T, K) for a BERT checkpoint of ``bert_layers`` layers: given counts are kept, a missing one makes
    T + K = N (at least 0), neither given splits N as ceil(N/2) + floor(N/2)."""
    if t_layers is not None and k_layers is not None:
        return int(t_layers), int(k_layers)
    if k_layers is not None:
        return max(bert_layers - int(k_layers), 0), int(k_layers)
    if t_layers is not None:
        return int(t_layers), max(bert_layers - int(t_layers), 0)
    return bert_layers - bert_layers // 2, bert_layers // 2
