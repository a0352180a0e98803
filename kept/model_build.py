"""The model a run trains: ``KeptForPreTraining`` from a preset, a BERT or a kept checkpoint
(``model.init_from``), with the run's entity table, and where each parameter came from
(``ParameterOrigins``: loaded or new, for the optimizer plan and the loading report)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from kept import joint_kg, replaced_entity
from kept.config import RunConfig, resolve_init_from
from kept.errors import KeptError
from kept.optim import ModelSource, ParameterOrigins, kept_checkpoint_new_names
from kept.rundir import require, run_paths

logger = logging.getLogger(__name__)

#: logs/ file: which parameters are new vs loaded (with counts), the optimizer plan, the derived defaults.
LOADING_REPORT = "loading_report.json"


def _embedding_dim(path: Path) -> tuple[int, int]:
    from fusion.entity_table import read_safetensors_header

    header, _ = read_safetensors_header(path)
    info = header.get("entity_embeddings")
    if info is None:
        raise KeptError("no 'entity_embeddings' tensor", where=path, fix="re-run `kept kg embed RUN_DIR`")
    rows, dim = info["shape"]
    return int(rows), int(dim)


def build_model(config: RunConfig, run_dir: Path, tokenizer: Any) -> Any:
    """KeptForPreTraining from a preset, a previous stage (init_from) or a BERT checkpoint."""
    return build_model_and_origins(config, run_dir, tokenizer)[0]


def build_model_and_origins(config: RunConfig, run_dir: Path, tokenizer: Any) -> tuple[Any, ParameterOrigins]:
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
        require(
            paths.embeddings,
            "KG embeddings (kg/embeddings.safetensors)",
            "run `kept kg embed RUN_DIR`, or set model.fusion: false",
        )
        entity_rows, entity_dim = _embedding_dim(paths.embeddings)
        if "entity_dim" in overrides and int(overrides["entity_dim"]) != entity_dim:
            raise KeptError(
                f"model.overrides.entity_dim {overrides['entity_dim']} != KG embedding dim {entity_dim}",
                where="model.overrides.entity_dim",
                fix=f"set it to {entity_dim} or remove it",
            )
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
        kwargs["max_position_embeddings"] = max(
            int(kwargs.get("max_position_embeddings", 512)), config.encode.max_length
        )
        model_config = KeptConfig.from_preset(mcfg.preset, **kwargs)
        torch.manual_seed(config.train.seed)
        model = KeptForPreTraining(model_config)
        new_names, source, unused, tied = {n for n, _ in model.named_parameters()}, "scratch", [], []
        logger.info(f"model: preset {mcfg.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")
    else:
        check_init_vocabulary(init_from, tokenizer)
        if mcfg.preset != "tiny":  # the default says nothing; a chosen preset that cannot apply is said
            logger.info(
                f"model.preset {mcfg.preset} ignored: the init_from checkpoint gives the sizes "
                "(set KeptConfig options through model.overrides)"
            )
        model_type = json.loads((init_from / "config.json").read_text(encoding="utf-8")).get("model_type")
        torch.manual_seed(config.train.seed)  # the parameters the checkpoint lacks start from this seed
        if model_type == "kept":
            model = KeptForPreTraining.from_pretrained(str(init_from), trust_remote_code=False, **overrides)
            new_names, source, unused, tied = kept_checkpoint_new_names(model, init_from), "kept", [], []
            logger.info(f"model: continued from {init_from}")
        else:
            if entity_dim is not None:
                overrides["entity_dim"] = entity_dim
            model, report = KeptForPreTraining.from_bert(str(init_from), **overrides)
            new_names, source, unused, tied = set(report.new), "bert", report.unused, report.tied
            logger.info(f"model: initialised from BERT: {report.summary()}")
        if model.config.vocab_size != len(tokenizer):
            raise vocabulary_size_error(model.config.vocab_size, len(tokenizer))
        if mcfg.fusion and int(model.config.entity_dim) != entity_dim:
            raise KeptError(
                f"init_from checkpoint has entity_dim {model.config.entity_dim} but the KG embeddings "
                f"have {entity_dim}",
                where="model.init_from",
                fix=f"embed the KG with dim {model.config.entity_dim} (kg.dim) or start from another checkpoint",
            )
        if not mcfg.fusion:
            model.config.dea_weight = 0.0
    if mcfg.fusion:
        model.load_entity_table(paths.embeddings, trainable=not mcfg.freeze_entity_table)
        logger.info(
            f"entity table: {entity_rows} entities x {entity_dim} ({'frozen' if mcfg.freeze_entity_table else 'trained'})"
        )
        joint_kg.init_relations(model, config, run_dir)
    origins = ParameterOrigins.from_model(model, new_names, source, init_from, unused=unused, tied=tied)
    logger.info(origins.summary())
    return model, origins


#: What to do when init_from's vocabulary is not the run tokenizer's.
INIT_TOKENIZER_FIX = "use the tokenizer of that checkpoint (leave tokenizer.base_model unset and re-run `kept encode`)"


def vocabulary_size_error(checkpoint_size: int, run_size: int) -> KeptError:
    return KeptError(
        f"init_from checkpoint has a vocabulary of {checkpoint_size} tokens but the run's tokenizer has {run_size}",
        where="model.init_from",
        fix=INIT_TOKENIZER_FIX,
    )


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
        raise KeptError(
            f"init_from checkpoint's vocabulary differs from the run's tokenizer at token id"
            f"{'s' if len(differing) > 1 else ''} {', '.join(map(str, differing))} (id {first} is "
            f"{theirs[first]!r} in the checkpoint, {ours[first]!r} in the run)",
            where="model.init_from",
            fix=INIT_TOKENIZER_FIX,
        )


# ------------------------------------------------------------------ the recipe
