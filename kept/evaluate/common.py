"""Shared pieces of the metric modules: device choice, padding, a model call that works for
fusion and plain MLM models, and the ranking arithmetic (MRR, hits@k) used by probe and tests."""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from kept.errors import KeptError
from kg.metrics import rank_metrics  # noqa: F401 - the one definition, re-exported for the probes


def quiet_from_pretrained(model_class: Any, path: str, **kwargs: Any) -> Any:
    """``model_class.from_pretrained`` without the load report: loading a pretraining checkpoint into a
    masked-LM or task class leaves heads out (expected), which transformers reports as a warning."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return model_class.from_pretrained(path, trust_remote_code=False, **kwargs)
    finally:
        hf_logging.set_verbosity(before)
        if bars:
            hf_logging.enable_progress_bar()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → cuda when available, else cpu; a named device must parse and (for cuda) exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KeptError(f"'{name}' is not a device", where="eval.device", fix="use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise KeptError(
            f"device '{name}' is not available on this machine ({torch.cuda.device_count()} CUDA devices)",
            where="eval.device",
            fix="use --device auto or cpu, or run where the GPU is",
        )
    return device


def model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def accepts_entity_ids(model: torch.nn.Module) -> bool:
    """True when ``model.forward`` takes ``entity_ids`` (the fusion models do)."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "entity_ids" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def uses_fusion(model: torch.nn.Module) -> bool:
    """Whether to feed KG entity alignments: the model takes entity_ids and has knowledge layers."""
    if not accepts_entity_ids(model):
        return False
    config = getattr(model, "config", None)
    if config is None:
        return True
    for flag in ("use_fusion", "fusion"):
        if hasattr(config, flag):
            return bool(getattr(config, flag))
    if int(getattr(config, "entity_vocab_size", 1) or 0) <= 0:
        return False  # no entity table to look the ids up in
    layers = getattr(config, "num_knowledge_layers", None)
    return True if layers is None else int(layers) > 0


def pad(rows: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """Right-pad integer lists into a [B, L] LongTensor."""
    length = max((len(r) for r in rows), default=0) if length is None else length
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        row = list(row)[:length]
        if row:
            out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def output_logits(output: Any) -> torch.Tensor:
    """The logits of a model output (a ModelOutput, a dict or a tuple)."""
    return output.logits if hasattr(output, "logits") else output["logits"] if isinstance(output, dict) else output[0]


@torch.no_grad()
def forward_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    entity_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """MLM logits [B, L, V] of any masked-LM model; entity_ids only go to models that take them."""
    device = model_device(model)
    kwargs: dict[str, Any] = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    if entity_ids is not None and accepts_entity_ids(model):
        kwargs["entity_ids"] = entity_ids.to(device)
    return output_logits(model(**kwargs)).float()


def _split_head(model: torch.nn.Module) -> tuple[Any, Any] | None:
    """(encoder, token head) of a BERT-style masked LM (``model.<base_model_prefix>`` + ``model.cls``)."""
    prefix = getattr(model, "base_model_prefix", None)
    encoder = getattr(model, prefix, None) if prefix else None
    head = getattr(model, "cls", None)
    head = getattr(head, "predictions", head)
    if encoder is None or head is None or not callable(head):
        return None
    return encoder, head


@torch.no_grad()
def masked_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    select: torch.Tensor,
    entity_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """MLM logits [N, V] at the N positions where ``select`` [B, L] is true (row-major order).

    For BERT-style models the vocabulary projection runs on the selected positions only (the
    [B, L, V] logits of a 30k vocabulary dominate evaluation time otherwise); other models fall back
    to :func:`forward_logits`.
    """
    parts = _split_head(model)
    device = model_device(model)
    if parts is None:
        logits = forward_logits(model, input_ids, attention_mask, entity_ids)
        return logits[select.to(logits.device)]
    encoder, head = parts
    kwargs: dict[str, Any] = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    if entity_ids is not None and accepts_entity_ids(encoder):
        kwargs["entity_ids"] = entity_ids.to(device)
    output = encoder(**kwargs)
    hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    return head(hidden[select.to(hidden.device)]).float()


def ranks_from_scores(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Realistic ranks (PyKEEN's default): 1 + #higher + #tied-others / 2.

    scores: [N, C] (use -inf for padding), gold: [N] index of the true candidate. Returns [N] float.
    """
    gold_score = scores.gather(1, gold.view(-1, 1))
    higher = (scores > gold_score).sum(dim=1).float()
    tied = (scores == gold_score).sum(dim=1).float() - 1.0
    return 1.0 + higher + tied / 2.0


def macro_f1(predictions: Sequence[int], labels: Sequence[int], num_labels: int | None = None) -> float:
    """Macro-averaged F1 over the classes present in the labels or predictions (``num_labels``: over
    0..num_labels-1, a class absent from both left out): scikit-learn's ``f1_score(average="macro")``."""
    import numpy as np
    from sklearn.metrics import f1_score

    golds = np.asarray(list(labels), dtype=np.int64)
    if golds.size == 0:
        return math.nan
    classes = None if num_labels is None else np.arange(num_labels)
    with warnings.catch_warnings():  # an all-absent class list warns before giving NaN
        warnings.simplefilter("ignore")
        return float(
            f1_score(
                golds,
                np.asarray(list(predictions), dtype=np.int64),
                labels=classes,
                average="macro",
                zero_division=np.nan,
            )
        )
