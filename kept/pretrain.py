"""`kept pretrain`: the Hugging Face Trainer with the knowledge-masking collator and the fusion model.

Reads ``tokenizer/``, ``encoded/train`` and ``encoded/validation`` (and ``kg/embeddings.safetensors``
when fusion is on), trains ``KeptForPreTraining`` and writes:

* ``checkpoints/checkpoint-N/`` (Trainer checkpoints; resumed automatically),
* ``checkpoints/kept_training.json`` (the training-relevant configuration the checkpoints were made
  with: resuming with a different one is refused, naming the keys that changed),
* ``logs/tensorboard/`` (TensorBoard), ``logs/train_history.json`` (the Trainer's log history, with
  the loss components ``mlm_loss``/``dea_loss``/``sop_loss`` and ``eval_mlm_loss``/... beside ``loss``),
  ``logs/pretrain_metrics.json`` (final train/eval loss, steps, runtime),
* ``model/`` (save_pretrained + tokenizer).

Fusion off = the same model without entity inputs and with dEA weight 0, on the same budget.

Exact resume: the data order comes from the Trainer's seeded sampler, model RNG states from the
checkpoint, and the masking collator is reseeded for every batch from (seed, the dataset indices
of the batch), so a resumed run draws the same masks as an uninterrupted one even though the
Trainer skips the already-seen batches without collating them.

Distributed: run the same command under ``torchrun`` / ``accelerate launch``; the Trainer handles
DDP, and only rank 0 writes run-directory artifacts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from kept import electra, joint_kg, replaced_entity
from kept.checkpoints import check_resume_state, checkpoint_write_guard
from kept.config import RunConfig, changed_keys, resolve_init_from, save_config, training_view
from kept.errors import Interrupted, KeptError
from kept.optim import (
    ModelSource,
    OptimizerPlan,
    ParameterOrigins,
    describe_derived,
    kept_checkpoint_new_names,
    param_group_trainer,
    resolve_train_defaults,
)
from kept.rundir import (
    RunPaths,
    atomic_write_json,
    is_main_process,
    path_fingerprint,
    read_json,
    require,
    run_paths,
)
from kept.scale import resolve_warmup

TRAINING_SNAPSHOT = "kept_training.json"
#: logs/ file: which parameters are new vs loaded (with counts), the optimizer plan, the derived defaults.
LOADING_REPORT = "loading_report.json"
INDEX_KEY = "__index__"


@dataclass
class PretrainResult:
    model_dir: Path
    steps: int
    train_loss: float | None
    eval_loss: float | None
    resumed_from: str | None
    runtime_s: float
    metrics: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ deterministic data plumbing

def with_index(dataset: Any, columns: Sequence[str]) -> Any:
    """``dataset``'s ``columns`` (those it has) and each row's index as :data:`INDEX_KEY` (read by
    :class:`BatchSeededCollator`)."""
    dataset = dataset.select_columns([c for c in columns if c in dataset.column_names])
    return dataset.add_column(INDEX_KEY, list(range(len(dataset))))


def batch_seed(seed: int, indices: Sequence[int], salt: int = 0) -> int:
    data = np.asarray([seed, salt, *indices], dtype=np.int64).tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


class BatchSeededCollator:
    """Reseeds the masking collator's generator from (seed, batch indices) before every batch.

    With ``total_batches`` (staged ERNIE, no DataLoader workers) it also sets the collator's training
    progress from its own count of collated batches, which :class:`kept.callbacks.BatchCounter` starts at
    ``global_step * gradient_accumulation_steps`` (also after a resume, where the Trainer skips the seen
    batches without collating them): batch ``i`` always gets progress ``i / total_batches``, so staged
    masking is exact across resumes too (a step callback would lag the DataLoader's prefetching).
    """

    def __init__(self, collator: Any, seed: int, salt: int = 0, total_batches: int | None = None) -> None:
        self.collator = collator
        self.seed = int(seed)
        self.salt = int(salt)
        self.total_batches = total_batches
        self.batches_seen = 0

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        indices = [int(f[INDEX_KEY]) for f in features]
        stripped = [{k: v for k, v in f.items() if k != INDEX_KEY} for f in features]
        reseed_in_worker = getattr(self.collator, "_reseed_in_worker", None)
        if reseed_in_worker is not None:  # let a DataLoader worker swap its generator first
            reseed_in_worker()
        self.collator.generator.manual_seed(batch_seed(self.seed, indices, self.salt))
        if self.total_batches:
            self.collator.set_progress(self.batches_seen / self.total_batches)
            self.batches_seen += 1
        return self.collator(stripped)


# ------------------------------------------------------------------ checkpoints and resume checks

def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Checkpoint dirs whose trainer_state.json (written last by the Trainer) is readable, oldest first."""
    if not checkpoint_dir.exists():
        return []
    found = []
    for path in checkpoint_dir.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if not path.is_dir() or not suffix.isdigit():
            continue
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        found.append((int(suffix), path))
    return [p for _, p in sorted(found)]


def remove_incomplete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Delete checkpoint dirs a killed process left half-written (no valid trainer_state.json)."""
    complete = set(complete_checkpoints(checkpoint_dir))
    removed = []
    if checkpoint_dir.exists():
        for path in checkpoint_dir.glob("checkpoint-*"):
            if path.is_dir() and path not in complete:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def training_snapshot(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    config, _ = resolve_train_defaults(config)  # derived values compare as the values they resolve to
    paths = run_paths(run_dir)
    inputs = path_fingerprint([paths.encoded_train, paths.tokenizer])
    if config.model.fusion:
        inputs.update(path_fingerprint([paths.embeddings]))
    return {"config": training_view(config),
            "inputs": {str(Path(k).relative_to(run_dir)) if Path(k).is_relative_to(run_dir) else k: v
                       for k, v in inputs.items()}}


def check_resume_compatible(config: RunConfig, run_dir: Path) -> None:
    """Refuse to resume checkpoints made with a configuration or data that changes training."""
    paths = run_paths(run_dir)
    snapshot_file = paths.checkpoints / TRAINING_SNAPSHOT
    if not complete_checkpoints(paths.checkpoints) or not snapshot_file.exists():
        return
    saved = read_json(snapshot_file, "training snapshot")
    current = training_snapshot(config, run_dir)
    keys = changed_keys(saved.get("config", {}), current["config"])
    if keys:
        details = ", ".join(f"{k}: {saved['config'].get(k, '<unset>')!r} -> {current['config'].get(k, '<unset>')!r}"
                            for k in keys[:8])
        raise KeptError(f"the checkpoints were made with a different configuration ({details}"
                        f"{', ...' if len(keys) > 8 else ''})", where=paths.checkpoints,
                        fix="restore those values, or start over with --restart (deletes the checkpoints)")
    changed_inputs = [k for k in set(saved.get("inputs", {})) | set(current["inputs"])
                      if saved.get("inputs", {}).get(k) != current["inputs"].get(k)]
    if changed_inputs:
        raise KeptError(f"the checkpoints were made from other data ({', '.join(sorted(changed_inputs))} changed "
                        "since)", where=paths.checkpoints,
                        fix="start over with --restart (deletes the checkpoints)")


# ------------------------------------------------------------------ model

def _embedding_dim(path: Path) -> tuple[int, int]:
    from fusion.entity_table import read_safetensors_header

    header, _ = read_safetensors_header(path)
    info = header.get("entity_embeddings")
    if info is None:
        raise KeptError("no 'entity_embeddings' tensor", where=path, fix="re-run `kept kg embed RUN_DIR`")
    rows, dim = info["shape"]
    return int(rows), int(dim)


def build_model(config: RunConfig, run_dir: Path, tokenizer: Any, log: Callable[[str], None]) -> Any:
    """KeptForPreTraining from a preset, a previous stage (init_from) or a BERT checkpoint."""
    return build_model_and_origins(config, run_dir, tokenizer, log)[0]


def build_model_and_origins(config: RunConfig, run_dir: Path, tokenizer: Any, log: Callable[[str], None]
                            ) -> tuple[Any, ParameterOrigins]:
    """:func:`build_model` and which of its parameters are new (randomly initialised) and which loaded
    (from init_from or, for a trainable entity table, from the KG embeddings). Parameters that start
    from random are drawn from ``train.seed``, also when the rest comes from a checkpoint."""
    import torch
    from fusion import KeptConfig, KeptForPreTraining

    paths = run_paths(run_dir)
    mcfg = config.model
    overrides = dict(mcfg.overrides)
    if mcfg.fusion:  # the joint KG head's fields (kept.joint_kg)
        overrides.update(joint_kg.model_overrides(config, run_dir))
    overrides.update(replaced_entity.model_overrides(config))  # the WKLM head's weight when its swaps are on
    entity_rows = entity_dim = None
    if mcfg.fusion:
        require(paths.embeddings, "KG embeddings (kg/embeddings.safetensors)",
                "run `kept kg embed RUN_DIR`, or set model.fusion: false")
        entity_rows, entity_dim = _embedding_dim(paths.embeddings)
        if "entity_dim" in overrides and int(overrides["entity_dim"]) != entity_dim:
            raise KeptError(f"model.overrides.entity_dim {overrides['entity_dim']} != KG embedding dim {entity_dim}",
                            where="model.overrides.entity_dim", fix=f"set it to {entity_dim} or remove it")
    if not mcfg.fusion:
        overrides["dea_weight"] = 0.0
    init_from = resolve_init_from(mcfg.init_from, config.runs_dir)
    source: ModelSource
    unused: list[str]
    tied: list[str]
    if init_from is None:
        kwargs = dict(overrides)
        kwargs.setdefault("vocab_size", len(tokenizer))
        kwargs.setdefault("pad_token_id", tokenizer.pad_token_id or 0)
        if entity_dim is not None:
            kwargs["entity_dim"] = entity_dim
            heads = kwargs.get("num_entity_attention_heads")
            if heads is None:
                from fusion import PRESETS

                heads = PRESETS[mcfg.preset].get("num_entity_attention_heads", 4)
            if entity_dim % int(heads):
                kwargs["num_entity_attention_heads"] = next(h for h in (4, 2, 1) if entity_dim % h == 0)
        kwargs["max_position_embeddings"] = max(int(kwargs.get("max_position_embeddings", 512)),
                                                config.encode.max_length)
        model_config = KeptConfig.from_preset(mcfg.preset, **kwargs)
        torch.manual_seed(config.train.seed)
        model = KeptForPreTraining(model_config)
        new_names, source, unused, tied = {n for n, _ in model.named_parameters()}, "scratch", [], []
        log(f"model: preset {mcfg.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")
    else:
        check_init_vocabulary(init_from, tokenizer)
        if mcfg.preset != "tiny":  # the default says nothing; a chosen preset that cannot apply is said
            log(f"model.preset {mcfg.preset} ignored: the init_from checkpoint gives the sizes "
                "(set KeptConfig options through model.overrides)")
        model_type = json.loads((init_from / "config.json").read_text(encoding="utf-8")).get("model_type")
        torch.manual_seed(config.train.seed)  # the parameters the checkpoint lacks start from this seed
        if model_type == "kept":
            model = KeptForPreTraining.from_pretrained(str(init_from), trust_remote_code=False, **overrides)
            new_names, source, unused, tied = kept_checkpoint_new_names(model, init_from), "kept", [], []
            log(f"model: continued from {init_from}")
        else:
            if entity_dim is not None:
                overrides["entity_dim"] = entity_dim
            model, report = KeptForPreTraining.from_bert(str(init_from), **overrides)
            new_names, source, unused, tied = set(report.new), "bert", report.unused, report.tied
            log(f"model: initialised from BERT: {report.summary()}")
        if model.config.vocab_size != len(tokenizer):
            raise vocabulary_size_error(model.config.vocab_size, len(tokenizer))
        if mcfg.fusion and int(model.config.entity_dim) != entity_dim:
            raise KeptError(f"init_from checkpoint has entity_dim {model.config.entity_dim} but the KG embeddings "
                            f"have {entity_dim}", where="model.init_from",
                            fix=f"embed the KG with dim {model.config.entity_dim} (kg.dim) or start from another "
                                "checkpoint")
        if not mcfg.fusion:
            model.config.dea_weight = 0.0
    if mcfg.fusion:
        model.load_entity_table(paths.embeddings, trainable=not mcfg.freeze_entity_table)
        log(f"entity table: {entity_rows} entities x {entity_dim} ({'frozen' if mcfg.freeze_entity_table else 'trained'})")
        joint_kg.init_relations(model, config, run_dir, log)
    origins = ParameterOrigins.from_model(model, new_names, source, init_from, unused=unused, tied=tied)
    log(origins.summary())
    return model, origins


#: What to do when init_from's vocabulary is not the run tokenizer's.
INIT_TOKENIZER_FIX = "use the tokenizer of that checkpoint (leave tokenizer.base_model unset and re-run `kept encode`)"


def vocabulary_size_error(checkpoint_size: int, run_size: int) -> KeptError:
    return KeptError(f"init_from checkpoint has a vocabulary of {checkpoint_size} tokens but the run's tokenizer "
                     f"has {run_size}", where="model.init_from", fix=INIT_TOKENIZER_FIX)


def check_init_vocabulary(init_from: Path, tokenizer: Any) -> None:
    """Refuse an init_from checkpoint whose saved tokenizer (tokenizer files or vocab.txt) maps some id to
    another token than the run's tokenizer: the embeddings would be read for the wrong tokens. Same size is
    not enough (two swapped tokens). A checkpoint without a tokenizer is checked by size only."""
    from kept.tokenizer import saved_vocabulary, vocabulary_by_id, vocabulary_differences

    theirs = saved_vocabulary(init_from)
    if theirs is None:
        return
    ours = vocabulary_by_id(tokenizer.get_vocab())
    if len(ours) != len(theirs):
        raise vocabulary_size_error(len(theirs), len(ours))
    differing = vocabulary_differences(ours, theirs)
    if differing:
        first = differing[0]
        raise KeptError(f"init_from checkpoint's vocabulary differs from the run's tokenizer at token id"
                        f"{'s' if len(differing) > 1 else ''} {', '.join(map(str, differing))} (id {first} is "
                        f"{theirs[first]!r} in the checkpoint, {ours[first]!r} in the run)", where="model.init_from",
                        fix=INIT_TOKENIZER_FIX)


# ------------------------------------------------------------------ the recipe

def resolve_bf16(value: bool | str) -> bool:
    import torch

    if value == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if value and not torch.cuda.is_available():
        raise KeptError("bf16 was requested but there is no CUDA device", where="train.bf16",
                        fix="use train.bf16: auto (bf16 only on a GPU)")
    return bool(value)


def last_logged(history: list[dict[str, Any]], key: str) -> float | None:
    for entry in reversed(history):
        if key in entry:
            return float(entry[key])
    return None


def pretrain_run(run_dir: str | Path, config: RunConfig, *, restart: bool = False, progress: bool = True,
                 log: Callable[[str], None] = lambda _: None, extra_callbacks: Sequence[Any] = ()) -> PretrainResult:
    """Train (or resume) the run's model; returns final losses and where the model is.

    The recipe: configuration → data → checkpoints to resume → model → collators → trainer → train → install.
    """
    from transformers import PrinterCallback, ProgressCallback

    from kept.callbacks import HistoryCallback, RichProgressCallback, SkipEndOfTrainingEval
    from kept.encode import check_sentence_pairs, load_encoded
    from kept.tokenizer import load_run_tokenizer
    from kept.trainer import KeptTrainer

    run_dir = Path(run_dir)
    paths = run_paths(run_dir)
    started = time.time()

    # configuration: the derived train defaults resolved (and said)
    config, derived = resolve_train_defaults(config)
    if derived:
        log(describe_derived(derived))

    # data
    tokenizer = load_run_tokenizer(paths.tokenizer)
    train_data = load_encoded(run_dir, "train")
    validation = load_encoded(run_dir, "validation") if paths.encoded_validation.exists() else None
    if validation is not None and len(validation) == 0:
        validation = None

    # checkpoints: the last complete one is resumed, if it was made with this configuration and data
    resume = prepare_checkpoints(config, run_dir, restart)

    # model
    model, origins = build_model_and_origins(config, run_dir, tokenizer, log)
    check_sentence_pairs(bool(model.config.use_sop), int(model.config.type_vocab_size), train_data,
                         paths.encoded_train)
    if is_main_process():  # only now: a run refused above (init_from, entity dim) leaves config.yaml as it was
        save_config(config, run_dir)  # the configuration as run, derived train defaults resolved
    if config.train.max_steps == 0:
        return save_starting_model(paths, model, tokenizer, config, started, log,
                                   random_mlm_head=origins.random_mlm_head)
    model, origins = electra.wrap_objective(model, origins, config, config.train.seed, log)  # model.objective
    plan = OptimizerPlan.from_config(config, origins)
    if plan.ignored(config):
        log(f"{', '.join(plan.ignored(config))} ignored: {'no parameter is new' if not origins.new else 'nothing is loaded'}")
    log(plan.describe())
    if is_main_process():
        atomic_write_json(paths.logs / LOADING_REPORT, {
            **origins.to_dict(), "optimizer": plan.to_dict(),
            "train_defaults": {d.key: {"value": d.value, "reason": d.reason} for d in derived}})

    # collators: masks reseeded from each batch's indices (exact resume); evaluation has its own
    train_collate, eval_collate, masking_callbacks = masking_collators(config, tokenizer, run_dir)

    # trainer
    tcfg = config.train
    bf16 = resolve_bf16(tcfg.bf16)
    warmup = resolve_warmup(config)  # warmup_tokens -> steps (kept.scale)
    log(warmup.describe())
    report_to, report_callbacks = reporting(tcfg.report_to, paths.logs / "tensorboard")
    args = training_arguments(config, paths, bf16=bf16, warmup_steps=warmup.steps, report_to=report_to,
                              evaluate=validation is not None)
    callbacks = [HistoryCallback(paths.train_history), SkipEndOfTrainingEval(), *report_callbacks,
                 *([RichProgressCallback()] if progress else []), *masking_callbacks, *extra_callbacks]
    trainer = param_group_trainer(KeptTrainer, plan)(
        model=model, args=args, data_collator=train_collate, eval_collator=eval_collate,
        train_dataset=with_index(train_data, COLUMNS),
        eval_dataset=with_index(validation, COLUMNS) if validation is not None else None, callbacks=callbacks)
    for quiet in (PrinterCallback, ProgressCallback):  # the rich bar instead
        trainer.remove_callback(quiet)

    # train
    if is_main_process():
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_json(paths.checkpoints / TRAINING_SNAPSHOT, training_snapshot(config, run_dir))
    if resume:
        log(f"resuming from {resume}")
    try:
        with checkpoint_write_guard(paths.checkpoints):  # disk full: one line, the partial checkpoint removed
            train_output = trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:  # Ctrl-C: the complete checkpoints stay; a re-run resumes from the last
        raise Interrupted(f"interrupted at step {trainer.state.global_step}") from None
    eval_loss, eval_examples = None, 0
    if validation is not None:
        eval_loss, eval_examples = final_evaluation(trainer, validation, COLUMNS, tcfg.final_eval_max_examples,
                                                    tcfg.seed)

    # install: model/ with the tokenizer and the metrics (only after the last step)
    history = trainer.state.log_history
    stopped_early = trainer.state.global_step < tcfg.max_steps
    metrics = {"global_step": trainer.state.global_step, "max_steps": tcfg.max_steps,
               "train_loss": last_logged(history, "loss"), "train_loss_mean": float(train_output.training_loss),
               "eval_loss": eval_loss, "eval_examples": eval_examples, "fusion": config.model.fusion,
               "strategy": config.masking.strategy,
               "bf16": bf16, "resumed_from": resume, "runtime_s": round(time.time() - started, 2),
               "world_size": int(os.environ.get("WORLD_SIZE", "1")),
               "num_parameters": int(sum(p.numel() for p in model.parameters())),
               "train_runtime_s": train_output.metrics.get("train_runtime"),
               "train_steps_per_second": train_output.metrics.get("train_steps_per_second"),
               **electra.pretrain_metrics(config)}
    partial = paths.root / "model.partial"
    if is_main_process() and partial.exists():
        shutil.rmtree(partial)  # left by a process killed while saving
    if not stopped_early:
        # every rank takes part (FSDP/DeepSpeed gather); the Trainer writes on rank 0 only
        electra.save_final(trainer, model, str(partial), is_main_process())  # ELECTRA: the discriminator
    if is_main_process():
        atomic_write_json(paths.train_history, {"global_step": trainer.state.global_step,
                                                "max_steps": tcfg.max_steps, "log_history": history})
        if not stopped_early:
            install_model(paths, partial, tokenizer, metrics)
    _barrier()
    return PretrainResult(paths.model, trainer.state.global_step, metrics["train_loss"], eval_loss, resume,
                          metrics["runtime_s"], metrics)


# ------------------------------------------------------------------ the recipe's steps

#: The encoded columns the collators read (the last two only with encode.sentence_pairs).
COLUMNS: tuple[str, ...] = ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids",
                            "token_type_ids", "sentence_order_label")


def prepare_checkpoints(config: RunConfig, run_dir: Path, restart: bool) -> str | None:
    """The checkpoint to resume, or None: ``restart`` deletes them all, a half-written one is removed, and
    checkpoints made with another training configuration or data are refused (see check_resume_compatible)."""
    paths = run_paths(run_dir)
    if restart and is_main_process() and paths.checkpoints.exists():
        shutil.rmtree(paths.checkpoints)
    if is_main_process():
        remove_incomplete_checkpoints(paths.checkpoints)
    check_resume_compatible(config, run_dir)
    checkpoints = complete_checkpoints(paths.checkpoints)
    if not checkpoints:
        return None
    check_resume_state(checkpoints[-1])
    return str(checkpoints[-1])


def masking_collators(config: RunConfig, tokenizer: Any, run_dir: Path) -> tuple[Any, Any, list[Any]]:
    """(training collator, evaluation collator, callbacks they need): the masking collator of
    ``config.masking`` (no dEA without fusion) with the joint KG triples, reseeded per batch. Staged ERNIE
    masking follows the batches collated (exact across resumes) without DataLoader workers, else the steps."""
    from kept.callbacks import BatchCounter
    from masking import ErnieStageCallback, KnowledgeMaskingCollator

    masking = config.masking.model_copy(update={"dea": config.masking.dea and config.model.fusion})
    collator = KnowledgeMaskingCollator(tokenizer, config=masking)
    eval_collator = KnowledgeMaskingCollator(tokenizer, config=masking)
    staged = masking.strategy == "ernie" and masking.ernie_mixture is None
    by_batch = staged and config.train.dataloader_num_workers == 0
    total_batches = config.train.max_steps * config.train.gradient_accumulation_steps if by_batch else None
    staged_collator = collator  # the one ErnieStageCallback moves on (the wrappers below pass batches through it)
    collator = replaced_entity.wrap_collator(collator, config, run_dir, tokenizer)  # WKLM swaps, when on
    eval_collator = replaced_entity.wrap_collator(eval_collator, config, run_dir, tokenizer)
    train_collate = BatchSeededCollator(joint_kg.wrap_collator(collator, config, run_dir), config.train.seed, salt=0,
                                        total_batches=total_batches)
    eval_collate = BatchSeededCollator(joint_kg.wrap_collator(eval_collator, config, run_dir), config.train.seed, salt=1)
    callbacks: list[Any] = []
    if by_batch:
        callbacks.append(BatchCounter(train_collate))
    elif masking.strategy == "ernie":
        callbacks.append(ErnieStageCallback(staged_collator))  # with workers: progress by step (approximate)
    return train_collate, eval_collate, callbacks


def reporting(report_to: Sequence[str] | None, tensorboard_dir: Path) -> tuple[list[str], list[Any]]:
    """The Trainer's ``report_to`` and the callbacks kept adds for ``train.report_to`` (None: TensorBoard when
    installed). TensorBoard writes to ``tensorboard_dir`` (logs/tensorboard) through its own callback."""
    import importlib.util

    from transformers.integrations import TensorBoardCallback, is_tensorboard_available

    if report_to is None:
        report_to = ["tensorboard"] if is_tensorboard_available() else []
    modules = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
    for name in report_to:
        if importlib.util.find_spec(modules[name]) is None:
            raise KeptError(f"train.report_to names {name}, which is not installed", where="train.report_to",
                            fix=f"pip install {name}, or remove it from train.report_to")
    callbacks: list[Any] = []
    if "tensorboard" in report_to:
        tensorboard = TensorBoardCallback()
        tensorboard.logging_dir = str(tensorboard_dir)
        callbacks.append(tensorboard)
    return [name for name in report_to if name != "tensorboard"] or ["none"], callbacks


def training_arguments(config: RunConfig, paths: RunPaths, *, bf16: bool, warmup_steps: int, report_to: list[str],
                       evaluate: bool) -> Any:
    """The Trainer's arguments from ``config.train``: checkpoints under checkpoints/, no tqdm, every encoded
    column passed to the collator, seeded data order."""
    import torch
    from transformers import TrainingArguments

    tcfg = config.train
    learning_rate = tcfg.learning_rate
    assert learning_rate is not None, "set by kept.optim.resolve_train_defaults before training"
    return TrainingArguments(
        output_dir=str(paths.checkpoints),
        max_steps=tcfg.max_steps,
        per_device_train_batch_size=tcfg.batch_size,
        per_device_eval_batch_size=tcfg.eval_batch_size or tcfg.batch_size,
        gradient_accumulation_steps=tcfg.gradient_accumulation_steps,
        learning_rate=learning_rate,
        lr_scheduler_type=tcfg.lr_scheduler,
        warmup_steps=warmup_steps,
        weight_decay=tcfg.weight_decay,
        max_grad_norm=tcfg.max_grad_norm,
        seed=tcfg.seed,
        data_seed=tcfg.seed,
        bf16=bf16,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=tcfg.eval_steps,
        save_strategy="steps",
        save_steps=tcfg.save_steps,
        save_total_limit=tcfg.save_total_limit,
        logging_strategy="steps",
        logging_steps=tcfg.logging_steps,
        report_to=report_to,
        disable_tqdm=True,
        remove_unused_columns=False,
        prediction_loss_only=True,
        label_names=["labels"],
        dataloader_num_workers=tcfg.dataloader_num_workers,
        use_cpu=tcfg.use_cpu,
        ddp_find_unused_parameters=False,
        save_only_model=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def install_model(paths: RunPaths, partial: Path, tokenizer: Any, metrics: dict[str, Any]) -> None:
    """Complete ``partial`` (a saved model) with the tokenizer and metrics and move it to ``model/``;
    a previous model is replaced only once the new one is whole."""
    tokenizer.save_pretrained(str(partial))
    atomic_write_json(partial / "kept_pretrain.json", metrics)
    old = paths.root / "model.old"
    if paths.model.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(paths.model, old)
    os.replace(partial, paths.model)
    shutil.rmtree(old, ignore_errors=True)
    atomic_write_json(paths.logs / "pretrain_metrics.json", metrics)


def save_starting_model(paths: RunPaths, model: Any, tokenizer: Any, config: RunConfig, started: float,
                        log: Callable[[str], None], random_mlm_head: bool = False) -> PretrainResult:
    """``train.max_steps: 0``: save the model as built (e.g. a BERT checkpoint through ``from_bert``) with
    no training, so the starting point is evaluated through the same steps as the trained variants.
    ``random_mlm_head`` (the checkpoint had none) is recorded: the evaluation then skips the figures read
    through the MLM head, which would score a random projection, and keeps the fine-tuned ones."""
    metrics: dict[str, Any] = {
        "global_step": 0, "max_steps": 0, "train_loss": None, "eval_loss": None, "fusion": config.model.fusion,
        "strategy": config.masking.strategy, "resumed_from": None,
        "runtime_s": round(time.time() - started, 2), "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "note": "train.max_steps 0: the starting model, not trained", "random_mlm_head": random_mlm_head}
    if is_main_process():
        partial = paths.root / "model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(str(partial))
        install_model(paths, partial, tokenizer, metrics)
    _barrier()
    log("pretrain: train.max_steps is 0, saved the starting model without training")
    return PretrainResult(paths.model, 0, None, None, None, metrics["runtime_s"], metrics)


def final_evaluation(trainer: Any, validation: Any, columns: Sequence[str], max_examples: int | None,
                     seed: int) -> tuple[float, int]:
    """The validation loss after training and the number of sequences it was measured on.

    The periodic evaluation of the last step (every ``train.eval_steps``) is reused when there was one
    (the whole split, no extra pass). Otherwise the whole split is evaluated when it has at most
    ``max_examples`` sequences (logged as ``eval_loss``), else a seeded sample of ``max_examples`` of
    them (logged as ``final_eval_loss``, so that the ``eval_loss`` curve stays on the whole split).
    """
    history = trainer.state.log_history
    last = next((entry for entry in reversed(history) if "eval_loss" in entry), None)
    if last is not None and last.get("step") == trainer.state.global_step:
        return float(last["eval_loss"]), len(validation)
    prefix = "eval"
    if max_examples is not None and len(validation) > max_examples:
        rng = np.random.default_rng(seed)
        validation = validation.select(np.sort(rng.choice(len(validation), max_examples, replace=False)).tolist())
        prefix = "final_eval"
    metrics = trainer.evaluate(with_index(validation, columns), metric_key_prefix=prefix)
    return float(metrics[f"{prefix}_loss"]), len(validation)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
