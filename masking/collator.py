"""KnowledgeMaskingCollator: padded MLM (+ dEA) batches from encoded features, for the HF Trainer.

Features are dicts of python lists (or arrays) as written by ``masking.encode_with_units``:
``input_ids`` (required), ``attention_mask``, ``unit_ids``, ``unit_kind``, ``entity_ids``,
``word_ids``, optionally ``token_type_ids`` and ``sentence_order_label``; any other key (``doc_id``,
``doc_index`` ...) is dropped. Returns ``input_ids``, ``attention_mask``, ``labels`` and with dEA
``entity_ids`` (corrupted alignment, the model input) and ``entity_labels`` (true entity, -100 elsewhere),
plus ``token_type_ids`` / ``sentence_order_label`` when the features have them.

With the Trainer, set ``TrainingArguments(remove_unused_columns=False)``: otherwise the Trainer drops
``unit_ids``/``unit_kind``/``word_ids`` before they reach the collator (they are not model inputs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import torch
from transformers.trainer_callback import TrainerCallback

from masking.dea import corrupt_alignments, hide_masked_alignments
from masking.errors import MaskingError
from masking.masking_config import MaskingConfig
from masking.strategies import choose_units, first_tier_share, selection_units, unit_actions

__all__ = ["KnowledgeMaskingCollator", "ErnieStageCallback"]

_PAD_VALUES = {
    "attention_mask": 0,
    "unit_ids": -1,
    "unit_kind": 0,
    "entity_ids": -1,
    "word_ids": -1,
    "token_type_ids": 0,
}
_NEEDS_UNITS = {
    "whole_word": ("unit_ids",),
    "span": ("unit_ids",),
    "phrase": ("unit_ids", "unit_kind"),
    "entity": ("unit_ids", "unit_kind"),
    "token": (),
}


class KnowledgeMaskingCollator:
    """Masks whole units (words, phrases, entities) to a budget and corrupts entity alignments (dEA).

    ``KnowledgeMaskingCollator(tokenizer, strategy="entity", mlm_probability=0.15, dea=True,
    dea_replace_prob=0.05, dea_remove_prob=0.15, seed=0, pad_to_multiple_of=None, **other MaskingConfig
    fields)`` or ``KnowledgeMaskingCollator(tokenizer, config=MaskingConfig(...))``.
    Same seed -> same sequence of batches. Not worker-aware for ``set_progress``: with DataLoader
    workers (``dataloader_num_workers > 0``) each worker holds its own copy, so ERNIE stage changes made
    in the main process do not reach them (use workers=0 with staged ERNIE, or a mixture); each worker
    reseeds its generator with ``seed + worker id`` so workers do not repeat each other's masks.
    """

    def __init__(
        self,
        tokenizer: Any,
        strategy: str = "entity",
        mlm_probability: float = 0.15,
        dea: bool = True,
        dea_replace_prob: float = 0.05,
        dea_remove_prob: float = 0.15,
        seed: int = 0,
        pad_to_multiple_of: int | None = None,
        config: MaskingConfig | None = None,
        **kwargs: Any,
    ) -> None:
        if config is None:
            unknown = set(kwargs) - set(MaskingConfig.model_fields)
            if unknown:
                raise MaskingError(
                    f"unknown masking option(s) {', '.join(sorted(unknown))}",
                    where="masking",
                    fix=f"use MaskingConfig fields: {', '.join(MaskingConfig.model_fields)}",
                )
            config = MaskingConfig(
                strategy=strategy,
                mlm_probability=mlm_probability,
                dea=dea,
                dea_replace_prob=dea_replace_prob,
                dea_remove_prob=dea_remove_prob,
                seed=seed,
                pad_to_multiple_of=pad_to_multiple_of,
                **kwargs,
            )
        self.config = config
        self.tokenizer = tokenizer
        if tokenizer.mask_token_id is None:
            raise MaskingError(
                f"{type(tokenizer).__name__} has no mask token",
                where="tokenizer",
                fix="add one: tokenizer.add_special_tokens({'mask_token': '[MASK]'})",
            )
        self.mask_token_id = int(tokenizer.mask_token_id)
        self.pad_token_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0
        self.vocab_size = int(len(tokenizer))
        # never masked when the features carry no unit_ids ([UNK] is ordinary text)
        unk = tokenizer.unk_token_id
        self.special_ids = torch.tensor(
            sorted(set(int(i) for i in tokenizer.all_special_ids) - {unk}), dtype=torch.long
        )
        self.padding_left = getattr(tokenizer, "padding_side", "right") == "left"
        self.progress = 0.0
        self.generator = torch.Generator().manual_seed(int(self.config.seed))
        self._pid = os.getpid()
        self._worker_checked = False

    @classmethod
    def from_config(cls, tokenizer: Any, config: MaskingConfig) -> KnowledgeMaskingCollator:
        return cls(tokenizer, config=config)

    # ------------------------------------------------------------------ ERNIE staging
    def set_progress(self, fraction: float) -> None:
        """Training progress in [0, 1] (global_step / max_steps) for the staged ``ernie`` strategy."""
        self.progress = min(max(float(fraction), 0.0), 1.0)

    def current_stage(self) -> str:
        """The basic strategy that the staged ``ernie`` strategy uses at the current progress."""
        stages = list(self.config.ernie_stages)
        total = sum(w for _, w in stages)
        edge = 0.0
        for name, weight in stages:
            edge += weight / total
            if self.progress < edge - 1e-12:
                return name
        return stages[-1][0]

    # ------------------------------------------------------------------ collation
    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        self._reseed_in_worker()
        cfg = self.config
        if not features:
            raise MaskingError("empty batch", where="features", fix="give at least one feature dict")
        strategies = self._row_strategies(len(features))
        needed = {"input_ids"} | {k for s in set(strategies) for k in _NEEDS_UNITS[s]}
        if cfg.dea:
            needed.add("entity_ids")
        for i, feature in enumerate(features):
            if not isinstance(feature, Mapping):
                raise MaskingError(
                    f"feature is {type(feature).__name__}, not a dict",
                    where=f"features[{i}]",
                    fix="pass dicts with input_ids, unit_ids, unit_kind, entity_ids",
                )
            missing = needed - feature.keys()
            if missing:
                raise MaskingError(
                    f"feature has no {', '.join(sorted(missing))}",
                    where=f"features[{i}]",
                    fix="encode the corpus with masking.encode_with_units (and keep its columns: "
                    "TrainingArguments(remove_unused_columns=False))"
                    + ("; or use dea=False" if "entity_ids" in missing else ""),
                )
        # convert only the columns this batch uses (list -> array conversion dominates the cost)
        wanted = {"attention_mask", "token_type_ids", "unit_ids"} | needed
        if any(name in ("whole_word", "span") for name in strategies):
            wanted.add("word_ids")
        batch = self._pad(features, wanted)
        input_ids = batch["input_ids"]
        valid = batch["attention_mask"].bool()
        if "unit_ids" in batch:
            # the encoder marked special tokens with unit -1; [UNK] inside a word stays part of its unit
            content = valid & (batch["unit_ids"] >= 0)
        else:
            content = valid & ~torch.isin(input_ids, self.special_ids)

        labels_mask = torch.zeros_like(content)
        to_mask = torch.zeros_like(content)
        to_random = torch.zeros_like(content)
        if len(set(strategies)) == 1:
            self._mask_rows(strategies[0], batch, content, None, labels_mask, to_mask, to_random)
        else:
            names = np.asarray(strategies)
            for name in dict.fromkeys(strategies):  # a handful of strategies, in order of appearance
                rows = torch.from_numpy(np.flatnonzero(names == name))
                self._mask_rows(name, batch, content, rows, labels_mask, to_mask, to_random)

        labels = torch.where(labels_mask, input_ids, torch.full_like(input_ids, -100))
        random_tokens = torch.randint(self.vocab_size, input_ids.shape, generator=self.generator)
        new_inputs = torch.where(to_mask, torch.full_like(input_ids, self.mask_token_id), input_ids)
        new_inputs = torch.where(to_random, random_tokens, new_inputs)

        out: dict[str, torch.Tensor] = {
            "input_ids": new_inputs,
            "attention_mask": batch["attention_mask"],
            "labels": labels,
        }
        if "token_type_ids" in batch:
            out["token_type_ids"] = batch["token_type_ids"]
        if cfg.dea:
            out["entity_ids"], out["entity_labels"] = corrupt_alignments(
                batch["entity_ids"], cfg.dea_replace_prob, cfg.dea_remove_prob, self.generator, cfg.dea_replace
            )
            if cfg.dea_hide_masked:  # the masked mentions' own entities are not an input
                out["entity_ids"] = hide_masked_alignments(out["entity_ids"], batch.get("unit_ids"), labels)
        if "sentence_order_label" in features[0]:
            try:
                out["sentence_order_label"] = torch.tensor([int(f["sentence_order_label"]) for f in features])
            except (KeyError, TypeError, ValueError) as exc:
                raise MaskingError(
                    f"sentence_order_label missing or not an int ({exc!r})",
                    where="features[*].sentence_order_label",
                    fix="give every feature an int sentence_order_label, or none of them",
                ) from None
        return out

    def _mask_rows(
        self,
        strategy: str,
        batch: dict[str, torch.Tensor],
        content: torch.Tensor,
        rows: torch.Tensor | None,
        labels_mask: torch.Tensor,
        to_mask: torch.Tensor,
        to_random: torch.Tensor,
    ) -> None:
        cfg = self.config

        def pick(name: str) -> torch.Tensor | None:
            t = batch.get(name)
            return t if t is None or rows is None else t.index_select(0, rows)

        sub_content = content if rows is None else content.index_select(0, rows)
        ids, tiers = selection_units(
            strategy,
            sub_content,
            pick("unit_ids"),
            pick("unit_kind"),
            pick("word_ids"),
            self.generator,
            cfg.span_geometric_p,
            cfg.span_max_words,
        )
        budget = sub_content.sum(dim=1).float() * cfg.mlm_probability
        share = first_tier_share(strategy, cfg.entity_share, cfg.phrase_share)
        masked, _ = choose_units(ids, tiers, budget, self.generator, share)
        m, r = unit_actions(ids, tiers.shape[1], cfg.mask_replace_prob, cfg.random_replace_prob, self.generator)
        m &= masked
        r &= masked
        if rows is None:
            labels_mask |= masked
            to_mask |= m
            to_random |= r
        else:
            labels_mask[rows] = masked
            to_mask[rows] = m
            to_random[rows] = r

    def _row_strategies(self, n: int) -> list[str]:
        cfg = self.config
        if cfg.strategy != "ernie":
            return [cfg.strategy] * n
        if cfg.ernie_mixture is None:
            return [self.current_stage()] * n
        names = [s for s in cfg.ernie_mixture if cfg.ernie_mixture[s] > 0]
        weights = torch.tensor([float(cfg.ernie_mixture[s]) for s in names])
        draws = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=self.generator)
        return [names[i] for i in draws.tolist()]

    def _pad(self, features: Sequence[Mapping[str, Any]], wanted: set[str]) -> dict[str, torch.Tensor]:
        first = features[0]
        keys = ["input_ids"] + [k for k in _PAD_VALUES if k in first and k in wanted]
        lengths = np.fromiter((len(f["input_ids"]) for f in features), dtype=np.int64, count=len(features))
        if (lengths == 0).any():
            bad = int(np.flatnonzero(lengths == 0)[0])
            raise MaskingError(
                "feature has no tokens",
                where=f"features[{bad}].input_ids",
                fix="drop empty examples (encode_with_units skips them)",
            )
        length = int(lengths.max())
        multiple = self.config.pad_to_multiple_of
        if multiple:
            length = -(-length // multiple) * multiple
        positions = np.arange(length)
        if self.padding_left:
            where = positions[None, :] >= (length - lengths)[:, None]
        else:
            where = positions[None, :] < lengths[:, None]
        total = int(lengths.sum())
        out: dict[str, torch.Tensor] = {}
        for key in keys:
            for i, f in enumerate(features):
                value = f.get(key)
                if value is None or len(value) != lengths[i]:
                    raise MaskingError(
                        f"{key} has {'no value' if value is None else len(value)} entries but input_ids has "
                        f"{lengths[i]}",
                        where=f"features[{i}].{key}",
                        fix="give every feature the same columns, one entry per token (re-encode with "
                        "masking.encode_with_units)",
                    )
            column = [f[key] for f in features]
            if isinstance(column[0], list):
                flat = np.fromiter(chain.from_iterable(column), dtype=np.int64, count=total)
            else:
                flat = np.concatenate([np.asarray(c, dtype=np.int64).reshape(-1) for c in column])
            pad = self.pad_token_id if key == "input_ids" else _PAD_VALUES[key]
            dense = np.full((len(features), length), pad, dtype=np.int64)
            dense[where] = flat
            out[key] = torch.from_numpy(dense)
        if "attention_mask" not in out:
            out["attention_mask"] = torch.from_numpy(where.astype(np.int64))
        return out

    def _reseed_in_worker(self) -> None:
        if self._worker_checked and self._pid == os.getpid():
            return
        self._worker_checked = True
        if self._pid != os.getpid():
            self._pid = os.getpid()
            info = torch.utils.data.get_worker_info()
            worker = info.id if info is not None else os.getpid()
            self.generator = torch.Generator().manual_seed(int(self.config.seed) + 1 + int(worker))


class ErnieStageCallback(TrainerCallback):
    """Feeds training progress (``state.global_step / state.max_steps``) to ``collator.set_progress``.

    ``Trainer(..., data_collator=collator, callbacks=[ErnieStageCallback(collator)])``. The progress
    only reaches the collator of the main process (see KnowledgeMaskingCollator about workers).
    """

    def __init__(self, collator: KnowledgeMaskingCollator) -> None:
        self.collator = collator

    def _update(self, state: Any) -> None:
        if getattr(state, "max_steps", 0):
            self.collator.set_progress(state.global_step / state.max_steps)

    def on_train_begin(self, args, state, control, **kwargs):
        self._update(state)

    def on_step_begin(self, args, state, control, **kwargs):
        self._update(state)
