"""An optimizer that knows which parameters are new, for continued pretraining.

``from_bert`` fills the encoder from the checkpoint but starts the fusion parts (``W_e``, entity
self-attention), the dEA head and, for sentence-embedding checkpoints such as MiniLM, the MLM head's
transform from random. :class:`ParameterOrigins` records which parameters are which;
:class:`OptimizerPlan` says how they are treated; :func:`param_group_trainer` makes a Trainer whose optimizer
puts the two kinds in separate parameter groups (:func:`parameter_groups`): new ones may get their own
learning rate (``train.new_params_learning_rate``), and for the first ``train.new_params_warmup_steps`` steps
only they move; then the loaded ones follow the same Hugging Face schedule with their own warm-up, shifted
to start at the unfreezing step (:func:`group_multipliers`).

The training defaults sized by the model (:func:`resolve_train_defaults`, which also derives
``train.new_params_*``) are :mod:`kept.train_defaults`; their names stay importable from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kept.config import RunConfig
from kept.errors import KeptError
from kept.train_defaults import (  # noqa: F401 - re-exported: kept.optim's names before the split
    LARGE_MODEL_PARAMETERS,
    LARGE_SCRATCH_WARMUP_RATIO,
    MLM_HEAD_PREFIX,
    NEW_PARAMS_LR_FACTOR,
    NEW_PARAMS_WARMUP_SHARE,
    PRETRAINED_LEARNING_RATES,
    SCRATCH_LEARNING_RATES,
    WARMUP_RATIO,
    DerivedValue,
    ModelFacts,
    ModelSource,
    _canonical,
    checkpoint_tensor_names,
    derived_train_values,
    describe_derived,
    estimate_parameters,
    model_facts,
    resolve_train_defaults,
)

#: Key of an optimizer parameter group that says whose parameters it holds ("loaded" or "new").
GROUP_KEY = "kept_params"


# ------------------------------------------------------------------ which parameters are new


def _pattern(name: str) -> str:
    return re.sub(r"\.\d+\.", ".*.", name)


@dataclass
class ParameterOrigins:
    """Which parameters of the model came from the init checkpoint (or the KG table) and which are new."""

    source: ModelSource
    init_from: str | None
    new: list[str]
    loaded: list[str]
    sizes: dict[str, int]  # parameter name -> number of elements
    unused: list[str] = field(default_factory=list)  # checkpoint tensors the model has no place for
    tied: list[str] = field(default_factory=list)  # parameters that share a loaded one's storage

    @classmethod
    def from_model(
        cls,
        model: Any,
        new_names: set[str],
        source: ModelSource,
        init_from: Path | None,
        unused: Sequence[str] = (),
        tied: Sequence[str] = (),
    ) -> ParameterOrigins:
        params = dict(model.named_parameters())
        return cls(
            source=source,
            init_from=str(init_from) if init_from is not None else None,
            new=sorted(n for n in params if n in new_names),
            loaded=sorted(n for n in params if n not in new_names),
            sizes={n: int(p.numel()) for n, p in params.items()},
            unused=sorted(unused),
            tied=sorted(tied),
        )

    @property
    def random_mlm_head(self) -> bool:
        """True when the MLM head starts from random (a sentence-embedding checkpoint such as MiniLM)."""
        return any(name.startswith("cls.predictions.") for name in self.new)

    def count(self, names: Sequence[str]) -> dict[str, int]:
        return {"tensors": len(names), "parameters": int(sum(self.sizes[n] for n in names))}

    def patterns(self, names: Sequence[str]) -> list[str]:
        """Names with layer indices folded (``kept.knowledge_encoder.layer.*.entity_output.dense.weight``)."""
        return sorted({_pattern(n) for n in names})

    def summary(self) -> str:
        new, loaded = self.count(self.new), self.count(self.loaded)
        line = (
            f"parameters: {new['tensors']} new tensors ({new['parameters'] / 1e6:.2f}M), "
            f"{loaded['tensors']} loaded ({loaded['parameters'] / 1e6:.2f}M)"
        )
        if self.new and self.loaded:
            modules = sorted({re.sub(r"\.(weight|bias)$", "", p) for p in self.patterns(self.new)})
            shown = ", ".join(modules[:12]) + (f", ... ({len(modules)} modules)" if len(modules) > 12 else "")
            line += f"; new: {shown}"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "init_from": self.init_from,
            "new": {**self.count(self.new), "names": self.new},
            "loaded": {**self.count(self.loaded), "names": self.loaded},
            "unused_checkpoint_tensors": self.unused,
            "tied": self.tied,
        }


def kept_checkpoint_new_names(model: Any, model_dir: Path) -> set[str]:
    """Parameters of a model loaded with ``from_pretrained`` that the checkpoint did not hold."""
    names = checkpoint_tensor_names(model_dir)
    if names is None:  # pickled weights: not inspected, everything counts as loaded
        return set()
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    return {n for n, _ in model.named_parameters() if n not in names and n not in tied}


# ------------------------------------------------------------------ optimizer plan


@dataclass(frozen=True)
class OptimizerPlan:
    """How the optimizer treats new parameters: their names, peak learning rates and the warm-up."""

    new_names: frozenset[str]
    learning_rate: float
    new_params_learning_rate: float
    new_params_warmup_steps: int

    @classmethod
    def from_config(cls, config: RunConfig, origins: ParameterOrigins) -> OptimizerPlan:
        """Needs a resolved configuration. Without new (or without loaded) parameters there is nothing to
        tell apart: no warm-up and one learning rate then."""
        train = config.train
        if train.learning_rate is None or train.new_params_warmup_steps is None:
            raise KeptError(
                "the train section is not resolved",
                where="train",
                fix="call kept.optim.resolve_train_defaults(config) first",
            )
        both = bool(origins.new and origins.loaded)
        warmup = int(train.new_params_warmup_steps) if both else 0
        new_lr = (train.new_params_learning_rate or train.learning_rate) if both else train.learning_rate
        return cls(frozenset(origins.new), float(train.learning_rate), float(new_lr), warmup)

    def ignored(self, config: RunConfig) -> list[str]:
        """The ``train.new_params_*`` settings this plan does not apply (nothing new, or nothing loaded)."""
        train = config.train
        return [
            f"{key} {value}"
            for key, value, used in (
                ("train.new_params_warmup_steps", train.new_params_warmup_steps, self.new_params_warmup_steps),
                ("train.new_params_learning_rate", train.new_params_learning_rate, self.new_params_learning_rate),
            )
            if value and value != used
        ]

    @property
    def active(self) -> bool:
        """Whether new and loaded parameters are treated differently at all."""
        return self.new_params_warmup_steps > 0 or self.new_params_learning_rate != self.learning_rate

    def describe(self) -> str:
        if not self.active:
            return f"optimizer: one learning rate {self.learning_rate:g} for all parameters"
        line = f"optimizer: loaded parameters lr {self.learning_rate:g}, new parameters lr {self.new_params_learning_rate:g}"
        if self.new_params_warmup_steps:
            line += f"; only new parameters train for the first {self.new_params_warmup_steps} steps"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "new_params_learning_rate": self.new_params_learning_rate,
            "new_params_warmup_steps": self.new_params_warmup_steps,
            "active": self.active,
        }


def parameter_groups(
    model: Any, plan: OptimizerPlan, decay_names: set[str], weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups: loaded then new, each with and without weight decay (the Trainer's rule:
    no decay on biases and LayerNorm weights); only trainable parameters; empty groups left out."""
    groups = []
    for origin, lr in (("loaded", plan.learning_rate), ("new", plan.new_params_learning_rate)):
        for decay in (True, False):
            params = [
                p
                for n, p in model.named_parameters()
                if p.requires_grad
                and (_canonical(n) in plan.new_names) == (origin == "new")
                and (n in decay_names) == decay
            ]
            if params:
                groups.append(
                    {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr, GROUP_KEY: origin}
                )
    return groups


def schedule_multiplier(
    name: str, warmup_steps: int, training_steps: int, kwargs: dict[str, Any] | None = None
) -> Callable[[int], float]:
    """The learning-rate multiplier (a function of the optimizer step) of a Hugging Face schedule."""
    import torch
    from transformers import get_scheduler

    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_scheduler(
        name,
        probe,
        num_warmup_steps=warmup_steps,
        num_training_steps=max(training_steps, 1),
        scheduler_specific_kwargs=kwargs or {},
    )
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise KeptError(
            f"lr_scheduler '{name}' is not a step function; it cannot hold the loaded parameters "
            "still or give new parameters their own schedule",
            where="train.lr_scheduler",
            fix="use linear, cosine, constant_with_warmup, ... or set train.new_params_warmup_steps: 0 "
            "and leave train.new_params_learning_rate null",
        )
    return scheduler.lr_lambdas[0]


def delayed(multiplier: Callable[[int], float], start: int) -> Callable[[int], float]:
    """0 for the first ``start`` steps, then ``multiplier`` on its own clock (step - start).

    A plain function on purpose: LambdaLR stores no state for functions, so a checkpoint's
    scheduler.pt holds only the step count and the base rates (loads with weights_only)."""

    def shifted(step: int) -> float:
        return 0.0 if step < start else multiplier(step - start)

    return shifted


def group_multipliers(
    origins: Sequence[str | None],
    plan: OptimizerPlan,
    name: str,
    warmup_steps: int,
    training_steps: int,
    kwargs: dict[str, Any] | None = None,
) -> list[Callable[[int], float]]:
    """Per parameter group (by its GROUP_KEY): new groups follow the schedule from step 0; loaded groups are
    0 for ``plan.new_params_warmup_steps`` steps, then run the same schedule (same warm-up steps) over
    the steps that remain."""
    full = schedule_multiplier(name, warmup_steps, training_steps, kwargs)
    start = plan.new_params_warmup_steps
    later = delayed(schedule_multiplier(name, warmup_steps, training_steps - start, kwargs), start) if start else full
    return [later if origin == "loaded" else full for origin in origins]


def param_group_trainer(base: type, plan: OptimizerPlan) -> type:
    """A subclass of the Trainer class ``base`` whose optimizer and scheduler follow ``plan``.

    Holding the loaded parameters still goes through the schedule (multiplier 0 for their groups), not
    through ``requires_grad``: the set of trainable parameters never changes, so DDP (which registers its
    gradient hooks once, with find_unused_parameters off), the optimizer state and the checkpoints are the
    same before and after unfreezing, and a run resumed at any step restores the step count, the rates and
    the optimizer moments exactly. With a rate of 0, AdamW leaves the weights bitwise unchanged (update and
    decoupled weight decay are both scaled by the rate) while its moments already average the loaded
    parameters' gradients, so their first real steps are not taken with an empty second moment. The price
    is their backward pass during the warm-up. An inactive plan leaves the Trainer's own behaviour alone.
    """
    import torch

    class ParamGroupTrainer(base):
        kept_plan = plan

        def create_optimizer(self, model=None):
            if self.optimizer is None and self.kept_plan.active:
                opt_model = self.model if model is None else model
                decay = set(self.get_decay_parameter_names(opt_model))
                groups = parameter_groups(opt_model, self.kept_plan, decay, self.args.weight_decay)
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                if {"params", "model", "optimizer_dict"} & set(optimizer_kwargs):
                    raise KeptError(
                        f"optimizer '{self.args.optim}' builds its own parameter groups",
                        where="train",
                        fix="use AdamW, or set new_params_warmup_steps: 0 and new_params_learning_rate: null",
                    )
                self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            return super().create_optimizer(model)

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None and self.kept_plan.active:
                optimizer = self.optimizer if optimizer is None else optimizer
                origins = [group.get(GROUP_KEY) for group in optimizer.param_groups]
                multipliers = group_multipliers(
                    origins,
                    self.kept_plan,
                    self.args.lr_scheduler_type,
                    self.args.get_warmup_steps(num_training_steps),
                    num_training_steps,
                    self.args.lr_scheduler_kwargs,
                )
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multipliers)
                self._created_lr_scheduler = True
            return super().create_scheduler(num_training_steps, optimizer)

        def log(self, logs, *args, **kwargs):
            # "learning_rate" is the first group's (loaded parameters) rate of the step just taken, read
            # before the scheduler stepped; add the new parameters' rate of that same step
            scheduler = self.lr_scheduler
            if (
                "learning_rate" in logs
                and self.kept_plan.active
                and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
            ):
                origins = [group.get(GROUP_KEY) for group in self.optimizer.param_groups]
                if "new" in origins:
                    i = origins.index("new")
                    step = max(scheduler.last_epoch - 1, 0)
                    logs = {**logs, "learning_rate_new": float(scheduler.base_lrs[i] * scheduler.lr_lambdas[i](step))}
            return super().log(logs, *args, **kwargs)

    return ParamGroupTrainer
