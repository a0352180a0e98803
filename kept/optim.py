"""Training defaults that fit the model, and an optimizer that knows which parameters are new.

Two things a continued-pretraining run needs that a from-scratch run does not:

* **Defaults sized by the model** (:func:`resolve_train_defaults`, the one place where ``train.*: null``
  becomes a value). The tiny preset's learning rate (5e-4) wrecks a pretrained encoder; a BERT-base
  continued at 5e-4 with batch 16 forgets what it knew. The learning rate is chosen from the model's
  (estimated) size and whether it starts from a checkpoint, the warm-up ratio from the same, and the
  new-parameter warm-up from what the checkpoint lacks. ``kept pretrain`` logs every derived value with
  its reason and writes them into ``config.yaml``; explicit values are never changed.

* **New parameters apart from loaded ones** (:class:`ParameterOrigins`, :class:`OptimizerPlan`,
  :func:`param_group_trainer`). ``from_bert`` fills the encoder from the checkpoint but starts the fusion
  parts (``W_e``, entity self-attention), the dEA head and, for sentence-embedding checkpoints such as
  MiniLM, the MLM head's transform from random. The optimizer puts the two kinds in separate parameter
  groups: new ones may get their own learning rate (``train.new_params_learning_rate``), and for the first
  ``train.new_params_warmup_steps`` steps only they move; then the loaded ones follow the same Hugging
  Face schedule with their own warm-up, shifted to start at the unfreezing step.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from kept.config import RunConfig, check_checkpoint_dir, resolve_init_from
from kept.errors import KeptError

ModelSource = Literal["scratch", "bert", "kept"]
#: Key of an optimizer parameter group that says whose parameters it holds ("loaded" or "new").
GROUP_KEY = "kept_params"
#: (upper bound of the estimated parameter count, learning rate), first match wins.
PRETRAINED_LEARNING_RATES: tuple[tuple[float, float], ...] = ((60e6, 1e-4), (200e6, 5e-5), (math.inf, 2e-5))
SCRATCH_LEARNING_RATES: tuple[tuple[float, float], ...] = ((60e6, 5e-4), (200e6, 1e-4), (math.inf, 5e-5))
#: Warm-up ratios: the RoBERTa/DAPT 6%; larger models from scratch (post-LN) need a longer one.
WARMUP_RATIO = 0.06
LARGE_SCRATCH_WARMUP_RATIO = 0.1
LARGE_MODEL_PARAMETERS = 60e6
#: Share of max_steps spent training only the new parameters when starting from a BERT checkpoint.
NEW_PARAMS_WARMUP_SHARE = 0.1
#: new_params_learning_rate = this x learning_rate when starting from a BERT checkpoint (1: the same rate).
NEW_PARAMS_LR_FACTOR = 10.0
MLM_HEAD_PREFIX = "cls.predictions."
# wrappers whose names appear in front of parameter names (DDP, FSDP, activation checkpointing, compile)
_WRAPPER_SEGMENTS = re.compile(r"(^|\.)(module|_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.")


# ------------------------------------------------------------------ what the model starts from

@dataclass(frozen=True)
class ModelFacts:
    """What the training defaults are chosen from (read from configuration files only, nothing built)."""

    source: ModelSource
    parameters: int  # estimated from the sizes (BERT-style encoder; entity parts left out)
    init_from: Path | None = None
    has_mlm_head: bool | None = None  # the BERT checkpoint ships cls.predictions.* (None: not known)

    def describe(self) -> str:
        origin = "from scratch" if self.source == "scratch" else f"a pretrained {self.source} checkpoint"
        size = f"{self.parameters / 1e6:.1f}M" if self.parameters >= 100_000 else f"{self.parameters / 1e3:.0f}k"
        return f"{origin}, ~{size} parameters"


def estimate_parameters(hidden: int, layers: int, intermediate: int, vocab: int, positions: int) -> int:
    """Parameters of a BERT encoder of these sizes: per layer attention (4 H x H), feed-forward
    (2 H x I) and their biases and LayerNorms; word, position and token-type embeddings."""
    per_layer = 4 * hidden * hidden + 2 * hidden * intermediate + 9 * hidden + intermediate
    return int(layers * per_layer + (vocab + positions + 2) * hidden)


def checkpoint_tensor_names(model_dir: Path) -> set[str] | None:
    """Tensor names of a checkpoint's safetensors weights (headers only); None for pickled weights."""
    import json

    from fusion.entity_table import read_safetensors_header

    single = model_dir / "model.safetensors"
    if single.is_file():
        header, _ = read_safetensors_header(single)
        return {name for name in header if name != "__metadata__"}
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            return set(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise KeptError("shard index has no weight_map", where=index,
                            fix="re-save the checkpoint with save_pretrained") from None
    return None


def model_facts(config: RunConfig) -> ModelFacts:
    """The model a run trains: its source (scratch, a BERT or a kept checkpoint) and estimated size."""
    init_from = resolve_init_from(config.model.init_from, config.runs_dir)
    if init_from is None:
        from fusion import PRESETS

        sizes = {**PRESETS[config.model.preset], **config.model.overrides}
        layers = int(sizes["num_hidden_layers"]) + int(sizes["num_knowledge_layers"])
        vocab = int(sizes.get("vocab_size", config.tokenizer.vocab_size))
        return ModelFacts("scratch", estimate_parameters(int(sizes["hidden_size"]), layers,
                                                         int(sizes["intermediate_size"]), vocab,
                                                         int(sizes.get("max_position_embeddings", 512))))
    raw = check_checkpoint_dir(init_from)
    source: ModelSource = "kept" if raw.get("model_type") == "kept" else "bert"
    layers = int(raw.get("num_hidden_layers", 12)) + (int(raw.get("num_knowledge_layers", 0)) if source == "kept" else 0)
    hidden = int(raw.get("hidden_size", 768))
    parameters = estimate_parameters(hidden, layers, int(raw.get("intermediate_size", 4 * hidden)),
                                     int(raw.get("vocab_size", 30522)), int(raw.get("max_position_embeddings", 512)))
    has_head = None
    if source == "bert":
        names = checkpoint_tensor_names(init_from)
        if names is not None:
            has_head = any(_canonical(name).startswith(MLM_HEAD_PREFIX) for name in names)
    return ModelFacts(source, parameters, init_from, has_head)


# ------------------------------------------------------------------ derived defaults

@dataclass(frozen=True)
class DerivedValue:
    """A ``train.*`` value that was null in the configuration, with why it was chosen."""

    key: str
    value: Any
    reason: str


def _by_size(table: Sequence[tuple[float, float]], parameters: int) -> float:
    return next(value for bound, value in table if parameters < bound)


def derived_train_values(config: RunConfig, facts: ModelFacts) -> list[DerivedValue]:
    """The values of the null ``train.*`` fields for this model (see :func:`resolve_train_defaults`)."""
    train = config.train
    derived: list[DerivedValue] = []
    pretrained = facts.source != "scratch"
    if train.learning_rate is None:
        table = PRETRAINED_LEARNING_RATES if pretrained else SCRATCH_LEARNING_RATES
        derived.append(DerivedValue("learning_rate", _by_size(table, facts.parameters),
                                    f"{facts.describe()}"))
    if train.warmup_ratio is None and train.warmup_tokens is None:  # warmup_tokens: kept.scale converts it
        large_scratch = not pretrained and facts.parameters >= LARGE_MODEL_PARAMETERS
        derived.append(DerivedValue("warmup_ratio", LARGE_SCRATCH_WARMUP_RATIO if large_scratch else WARMUP_RATIO,
                                    "a model of 60M+ parameters from scratch" if large_scratch else facts.describe()))
    if train.new_params_warmup_steps is None:
        lacks = [] if facts.source != "bert" else (
            (["the MLM head"] if facts.has_mlm_head is not True else [])
            + (["the fusion and dEA parts"] if config.model.fusion else []))
        steps = int(round(NEW_PARAMS_WARMUP_SHARE * train.max_steps)) if lacks else 0
        reason = (f"{NEW_PARAMS_WARMUP_SHARE:.0%} of max_steps: the BERT checkpoint has no "
                  f"{' and no '.join(lacks)}") if lacks else \
            ("the checkpoint provides every trained part" if pretrained else "from scratch: every parameter is new")
        derived.append(DerivedValue("new_params_warmup_steps", steps, reason))
    if train.new_params_learning_rate is None and facts.source == "bert":
        learning_rate = train.learning_rate if train.learning_rate is not None else \
            next(d.value for d in derived if d.key == "learning_rate")
        derived.append(DerivedValue("new_params_learning_rate", float(f"{NEW_PARAMS_LR_FACTOR * learning_rate:.6g}"),
                                    f"{NEW_PARAMS_LR_FACTOR:g} x learning_rate for the parts from_bert starts from random"))
    return derived


def resolve_train_defaults(config: RunConfig) -> tuple[RunConfig, list[DerivedValue]]:
    """The configuration with every null ``train.*`` default replaced by its value for this model.

    * ``learning_rate``: from scratch 5e-4 below 60M (estimated) parameters (the tiny preset), 1e-4 below
      200M (base), else 5e-5; from a checkpoint (BERT or a previous kept stage) 1e-4 below 60M
      (MiniLM-L6: ~22M), 5e-5 below 200M (BERT-base), else 2e-5 — the usual continued-pretraining
      rates at small batches; the checkpoint's features survive them.
    * ``warmup_ratio``: 0.06 (RoBERTa, DAPT), 0.1 for a model of 60M+ parameters trained from scratch.
    * ``new_params_learning_rate``: from a BERT checkpoint 10 x learning_rate (``from_bert`` always starts
      parts from random: the entity parts, the dEA head, and the MLM head's transform of sentence-embedding
      checkpoints); otherwise null, which means learning_rate.
    * ``new_params_warmup_steps``: 10% of max_steps when starting from a BERT checkpoint that lacks the MLM
      head or when fusion is on (those parts start from random: their first gradients are noise that
      flows into the pretrained encoder and distorts its features; training the new parts first is
      ULMFiT's gradual unfreezing and LP-FT's linear probing, Kumar et al. 2022); else 0 (nothing new,
      or everything new).

    Measured (MiniLM-L6, no MLM head, continued on FewRel NYT sentences, fusion off, token masking,
    100 steps of 16 x 64 tokens, learning_rate 1e-4, seed 0; masked-token accuracy on 200 validation
    sequences): everything at 1e-4 0.080; 10-step warm-up at 1e-4 0.074; new parameters at 1e-3 0.118;
    both (these defaults) 0.121 (seed 1: everything at 1e-4 0.080, these defaults 0.109). The rate of
    the new head is what makes MLM learn; the warm-up alone
    costs a little MLM accuracy and is kept for what it protects (the encoder's features during the
    steps in which the heads are random).

    Idempotent: a resolved configuration resolves to itself.
    """
    derived = derived_train_values(config, model_facts(config)) if _has_null(config) else []
    if not derived:
        return config, []
    train = config.train.model_copy(update={d.key: d.value for d in derived})
    return config.model_copy(update={"train": train}), derived


def _has_null(config: RunConfig) -> bool:
    train = config.train
    return (train.learning_rate is None or train.warmup_ratio is None or train.new_params_warmup_steps is None
            or train.new_params_learning_rate is None)


def describe_derived(derived: Sequence[DerivedValue]) -> str:
    """One log line: ``train defaults: learning_rate 0.0001 (reason); ...``."""
    return "train defaults: " + "; ".join(f"{d.key} {d.value:g} ({d.reason})" for d in derived)


# ------------------------------------------------------------------ which parameters are new

def _canonical(name: str) -> str:
    """A parameter or tensor name without wrapper segments (``module.``, FSDP/checkpoint wrappers)."""
    return _WRAPPER_SEGMENTS.sub(r"\1", name)


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
    def from_model(cls, model: Any, new_names: set[str], source: ModelSource, init_from: Path | None,
                   unused: Sequence[str] = (), tied: Sequence[str] = ()) -> "ParameterOrigins":
        params = dict(model.named_parameters())
        return cls(source=source, init_from=str(init_from) if init_from is not None else None,
                   new=sorted(n for n in params if n in new_names),
                   loaded=sorted(n for n in params if n not in new_names),
                   sizes={n: int(p.numel()) for n, p in params.items()}, unused=sorted(unused), tied=sorted(tied))

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
        line = (f"parameters: {new['tensors']} new tensors ({new['parameters'] / 1e6:.2f}M), "
                f"{loaded['tensors']} loaded ({loaded['parameters'] / 1e6:.2f}M)")
        if self.new and self.loaded:
            modules = sorted({re.sub(r"\.(weight|bias)$", "", p) for p in self.patterns(self.new)})
            shown = ", ".join(modules[:12]) + (f", ... ({len(modules)} modules)" if len(modules) > 12 else "")
            line += f"; new: {shown}"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "init_from": self.init_from,
                "new": {**self.count(self.new), "names": self.new},
                "loaded": {**self.count(self.loaded), "names": self.loaded},
                "unused_checkpoint_tensors": self.unused, "tied": self.tied}


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
    def from_config(cls, config: RunConfig, origins: ParameterOrigins) -> "OptimizerPlan":
        """Needs a resolved configuration. Without new (or without loaded) parameters there is nothing to
        tell apart: no warm-up and one learning rate then."""
        train = config.train
        if train.learning_rate is None or train.new_params_warmup_steps is None:
            raise KeptError("the train section is not resolved", where="train",
                            fix="call kept.optim.resolve_train_defaults(config) first")
        both = bool(origins.new and origins.loaded)
        warmup = int(train.new_params_warmup_steps) if both else 0
        new_lr = (train.new_params_learning_rate or train.learning_rate) if both else train.learning_rate
        return cls(frozenset(origins.new), float(train.learning_rate), float(new_lr), warmup)

    def ignored(self, config: RunConfig) -> list[str]:
        """The ``train.new_params_*`` settings this plan does not apply (nothing new, or nothing loaded)."""
        train = config.train
        return [f"{key} {value}" for key, value, used in (
            ("train.new_params_warmup_steps", train.new_params_warmup_steps, self.new_params_warmup_steps),
            ("train.new_params_learning_rate", train.new_params_learning_rate, self.new_params_learning_rate))
            if value and value != used]

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
        return {"learning_rate": self.learning_rate, "new_params_learning_rate": self.new_params_learning_rate,
                "new_params_warmup_steps": self.new_params_warmup_steps, "active": self.active}


def parameter_groups(model: Any, plan: OptimizerPlan, decay_names: set[str], weight_decay: float
                     ) -> list[dict[str, Any]]:
    """AdamW parameter groups: loaded then new, each with and without weight decay (the Trainer's rule:
    no decay on biases and LayerNorm weights); only trainable parameters; empty groups left out."""
    groups = []
    for origin, lr in (("loaded", plan.learning_rate), ("new", plan.new_params_learning_rate)):
        for decay in (True, False):
            params = [p for n, p in model.named_parameters() if p.requires_grad
                      and (_canonical(n) in plan.new_names) == (origin == "new") and (n in decay_names) == decay]
            if params:
                groups.append({"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr,
                               GROUP_KEY: origin})
    return groups


def schedule_multiplier(name: str, warmup_steps: int, training_steps: int,
                        kwargs: dict[str, Any] | None = None) -> Callable[[int], float]:
    """The learning-rate multiplier (a function of the optimizer step) of a Hugging Face schedule."""
    import torch
    from transformers import get_scheduler

    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_scheduler(name, probe, num_warmup_steps=warmup_steps, num_training_steps=max(training_steps, 1),
                              scheduler_specific_kwargs=kwargs or {})
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise KeptError(f"lr_scheduler '{name}' is not a step function; it cannot hold the loaded parameters "
                        "still or give new parameters their own schedule", where="train.lr_scheduler",
                        fix="use linear, cosine, constant_with_warmup, ... or set train.new_params_warmup_steps: 0 "
                            "and leave train.new_params_learning_rate null")
    return scheduler.lr_lambdas[0]


def delayed(multiplier: Callable[[int], float], start: int) -> Callable[[int], float]:
    """0 for the first ``start`` steps, then ``multiplier`` on its own clock (step - start).

    A plain function on purpose: LambdaLR stores no state for functions, so a checkpoint's
    scheduler.pt holds only the step count and the base rates (loads with weights_only)."""
    def shifted(step: int) -> float:
        return 0.0 if step < start else multiplier(step - start)

    return shifted


def group_multipliers(origins: Sequence[str | None], plan: OptimizerPlan, name: str, warmup_steps: int,
                      training_steps: int, kwargs: dict[str, Any] | None = None) -> list[Callable[[int], float]]:
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
                    raise KeptError(f"optimizer '{self.args.optim}' builds its own parameter groups", where="train",
                                    fix="use AdamW, or set new_params_warmup_steps: 0 and new_params_learning_rate: null")
                self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            return super().create_optimizer(model)

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None and self.kept_plan.active:
                optimizer = self.optimizer if optimizer is None else optimizer
                origins = [group.get(GROUP_KEY) for group in optimizer.param_groups]
                multipliers = group_multipliers(origins, self.kept_plan, self.args.lr_scheduler_type,
                                                self.args.get_warmup_steps(num_training_steps), num_training_steps,
                                                self.args.lr_scheduler_kwargs)
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multipliers)
                self._created_lr_scheduler = True
            return super().create_scheduler(num_training_steps, optimizer)

        def log(self, logs, *args, **kwargs):
            # "learning_rate" is the first group's (loaded parameters) rate of the step just taken, read
            # before the scheduler stepped; add the new parameters' rate of that same step
            scheduler = self.lr_scheduler
            if "learning_rate" in logs and self.kept_plan.active and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                origins = [group.get(GROUP_KEY) for group in self.optimizer.param_groups]
                if "new" in origins:
                    i = origins.index("new")
                    step = max(scheduler.last_epoch - 1, 0)
                    logs = {**logs, "learning_rate_new": float(scheduler.base_lrs[i] * scheduler.lr_lambdas[i](step))}
            return super().log(logs, *args, **kwargs)

    return ParamGroupTrainer
