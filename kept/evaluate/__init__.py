"""`kept evaluate`: every figure of a trained run, written to ``RUN_DIR/eval/metrics.json``.

    >>> from kept.evaluate import evaluate_run_dir
    >>> metrics = evaluate_run_dir("runs/demo")          # eval settings from the run's config.yaml
    >>> metrics["metrics"]["cloze"]["accuracy"]

One module per metric: :mod:`~kept.evaluate.mlm` (held-out MLM with the run's strategy and with
token masking), :mod:`~kept.evaluate.cloze` (entity cloze), :mod:`~kept.evaluate.probe` (KG probe),
:mod:`~kept.evaluate.relation` (FewRel fine-tune), :mod:`~kept.evaluate.typing` (entity typing fine-tune),
:mod:`~kept.evaluate.linkpred` (KG link prediction).

metrics.json (format ``kept.eval.metrics``, format_version 1)::

    {"format", "format_version", "kept_version", "run", "created_at",
     "model": {"path", "fusion", "strategy", "num_parameters", "device"},
     "eval_config": {...EvalConfig...},
     "metrics": {
        "mlm":   {"strategy": {strategy, loss, accuracy, perplexity, num_predicted, num_sequences,
                               accuracy_by_kind: {word, phrase, entity}, predicted_by_kind: {...}, ...},
                  "token":    {... same, plain token masking with default settings ...}},
        "cloze": {accuracy, piece_accuracy, num_mentions, num_available},
        "probe": {mrr, hits_at_1, hits_at_3, hits_at_10, mean_rank, num_facts, num_skipped, mean_candidates,
                  score, filtered, note, per_relation: {relation name: {mrr, hits_at_1, count}}},
        "relation": {accuracy, macro_f1, num_labels, num_train, num_dev, num_test, chance, best_epoch, dev_macro_f1,
                     relations, entity_input, linked_fraction, data, init, loaded_tensors, new_tensors, ...}
                    | {"skipped": reason},
        "typing": {micro_f1, macro_f1, strict_accuracy, micro_precision, micro_recall, num_types, num_train,
                   num_dev, num_test, best_epoch, dev_micro_f1, types, type_source, data, ...} | {"skipped": reason},
        "linkpred": {mrr, hits_at_1, hits_at_3, hits_at_10, model, source} | {"skipped": reason}},
     "examples": {"cloze": [{doc_id, position, entity_id, context, gold, prediction, correct}],
                  "probe": [{head, relation, prompt, gold, prediction, rank, num_candidates}]},
     "items": {"cloze": {"ids", "correct"}, "probe": {"ids", "reciprocal_rank", "hits_at_1"},
               "relation": {"ids", "gold", "pred"},
               "typing": {"ids", "gold": [[type index, ...]], "pred"}},  # per-item outcomes (bootstrap)
     "timings_s": {"mlm": s, "cloze": s, ...}}

A disabled metric is ``{"skipped": "disabled in eval config"}``; a figure that cannot be computed
(no linked mention, no fact) is null.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kept.analysis.files import json_safe
from kept.analysis.metrics import METRICS_FORMAT, METRICS_FORMAT_VERSION
from kept.errors import KeptError
from kept.evaluate.config import EvalConfig, coerce_eval_config
from kept.rundir import read_json

logger = logging.getLogger(__name__)

__all__ = ["EvalConfig", "evaluate_run_dir", "metrics_path"]


def metrics_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "eval" / "metrics.json"


def _check_model_dir(model_dir: Path) -> dict[str, Any]:
    from kept.checkpoints import read_model_config

    model_config = read_model_config(model_dir, fix="pretrain the run first (`kept run CONFIG`)")
    if model_config.get("model_type") not in ("kept", "bert"):
        raise KeptError(
            f"holds a '{model_config.get('model_type')}' model, not a kept or BERT masked LM",
            where=model_dir / "config.json",
            fix="evaluate a run directory written by this version of kept",
        )
    return model_config


def _run_settings(run_config: Any) -> dict[str, Any]:
    masking = dict(getattr(run_config, "masking", {}) or {})
    model = getattr(run_config, "model", None)
    data = getattr(run_config, "data", None)
    return {
        "strategy": str(masking.get("strategy") or "token"),
        "mlm_probability": float(masking.get("mlm_probability") or 0.15),
        "fusion": bool(getattr(model, "fusion", True)),
        "fewrel": getattr(data, "fewrel", None),
    }


def untrained_mlm_head(run_dir: Path) -> str | None:
    """Why the MLM-head figures (MLM, cloze, probe) cannot be read from this run's model, or None.

    A starting checkpoint without an MLM head (a sentence-embedding BERT such as MiniLM) saved untrained
    (``train.max_steps: 0``, the ``reference`` variant of `kept compare`) has a random head: its MLM,
    cloze and probe scores would measure the random projection, not the checkpoint."""
    metrics_file = run_dir / "logs" / "pretrain_metrics.json"
    if not metrics_file.is_file():
        return None
    recorded = read_json(metrics_file, "pretrain_metrics.json")
    if recorded.get("objective") == "electra":  # kept.electra: model/ is the discriminator
        return (
            "the model is an ELECTRA discriminator: its MLM head was never trained (replaced-token detection "
            "trains the encoder), so MLM, cloze and probe scores would measure an untrained projection"
        )
    if recorded.get("random_mlm_head") and not recorded.get("global_step"):
        return (
            "the MLM head was never trained (the starting checkpoint has none and train.max_steps is 0): "
            "its scores would measure a random projection"
        )
    return None


def _timed(timings: dict[str, float], name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    result = fn()
    timings[name] = round(time.perf_counter() - start, 3)
    return result


_DISABLED = {"skipped": "disabled in eval config"}


def _skipped(enabled: bool, head_missing: str | None) -> dict[str, str] | None:
    """The record of a metric read through the MLM head (MLM, cloze, probe) that is not run, or None to run it."""
    if not enabled:
        return dict(_DISABLED)
    return {"skipped": head_missing} if head_missing else None


def evaluate_run_dir(run_dir: str | Path, config: Any = None) -> dict[str, Any]:
    """Evaluate the run's final model and write ``RUN_DIR/eval/metrics.json`` (atomically).

    ``config``: an :class:`EvalConfig`, a ``RunConfig`` (its ``eval`` section is used), a dict, or None
    for the ``eval`` section of the run's own config.yaml. Returns the metrics.json content.
    """
    import torch

    from kept import __version__
    from kept.analysis import load_encoded, load_kg_tables
    from kept.config import load_run_config
    from kept.evaluate import cloze, linkpred, mlm, probe, relation
    from kept.evaluate.common import quiet_from_pretrained, resolve_device
    from kept.evaluate.probe_facts import facts_from_tables
    from kept.rundir import atomic_write_json

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KeptError("run directory not found", where=run_dir, fix="pass a run directory (runs/NAME)")
    if not (run_dir / "config.yaml").is_file():
        raise KeptError(
            "config.yaml not found (the run's strategy and fusion setting are read from it)",
            where=run_dir / "config.yaml",
            fix="evaluate a run directory written by `kept run`",
        )
    run_config = load_run_config(run_dir)
    eval_config: EvalConfig = coerce_eval_config(config if config is not None else run_config)
    settings = _run_settings(run_config)
    model_dir = run_dir / "model"
    model_type = _check_model_dir(model_dir).get("model_type")  # bert: a distilled student (`kept distill`)
    tokenizer_dir = run_dir / "tokenizer" if (run_dir / "tokenizer").is_dir() else model_dir

    from transformers import AutoTokenizer

    from fusion import KeptForMaskedLM

    torch.manual_seed(eval_config.seed)
    finetune_seed = eval_config.finetune_seed if eval_config.finetune_seed is not None else run_config.train.seed
    device = resolve_device(eval_config.device)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=False)
    if model_type == "bert":
        from transformers import BertForMaskedLM

        model = quiet_from_pretrained(BertForMaskedLM, str(model_dir)).to(device).eval()
    else:
        model = quiet_from_pretrained(KeptForMaskedLM, str(model_dir)).to(device).eval()
    fusion = settings["fusion"] and model_type == "kept"  # a BERT has no entity input
    metrics: dict[str, Any] = {}
    examples: dict[str, list[dict[str, Any]]] = {}
    timings: dict[str, float] = {}
    head_missing = untrained_mlm_head(run_dir)
    kg_tables: dict[str, Any] = {}

    def tables() -> dict[str, Any]:
        """The run's KG tables, read once for the probe and the relation task."""
        if not kg_tables:
            kg_tables.update(load_kg_tables(run_dir))
        return kg_tables

    rows: list[dict[str, Any]] = []  # read when the MLM or the cloze task runs
    if eval_config.mlm.enabled or eval_config.cloze.enabled:
        validation = load_encoded(run_dir, "validation")
        limit = max(
            eval_config.mlm.max_examples if eval_config.mlm.enabled else 0,
            eval_config.cloze.max_rows if eval_config.cloze.enabled else 0,
        )
        rows = validation.select(range(min(limit, len(validation)))).to_list()
        if not rows:
            raise KeptError(
                "the encoded validation split is empty",
                where=run_dir / "encoded" / "validation",
                fix="set encode.validation_fraction above 0 and re-run the encode step",
            )

    if (skipped := _skipped(eval_config.mlm.enabled, head_missing)) is not None:
        metrics["mlm"] = skipped
    else:
        logger.info("evaluate: MLM")
        mlm_rows = rows[: eval_config.mlm.max_examples]
        metrics["mlm"] = _timed(
            timings,
            "mlm",
            lambda: mlm.evaluate_mlm_both(
                model,
                tokenizer,
                mlm_rows,
                strategy=settings["strategy"],
                mlm_probability=eval_config.mlm.mlm_probability or settings["mlm_probability"],
                masking=run_config.masking.to_dict(),
                seed=eval_config.seed,
                batch_size=eval_config.batch_size,
                use_entities=fusion,
                token_probability=eval_config.mlm.mlm_probability or 0.15,
            ),
        )

    from kept.electra import objective_figures

    objectives = objective_figures(run_dir)  # ELECTRA / WKLM losses of the training, for `kept compare`
    if objectives:
        metrics["objectives"] = objectives

    def with_examples(name: str, evaluate: Callable[..., dict[str, Any]], data: Any, **options: Any) -> None:
        """Run a metric read through the MLM head (cloze, probe), timed; its examples move to the top level."""
        result = _timed(
            timings,
            name,
            lambda: evaluate(
                model,
                tokenizer,
                data,
                seed=eval_config.seed,
                batch_size=eval_config.batch_size,
                num_examples=eval_config.num_examples,
                use_entities=fusion,
                **options,
            ),
        )
        examples[name] = result.pop("examples")
        metrics[name] = result

    if (skipped := _skipped(eval_config.cloze.enabled, head_missing)) is not None:
        metrics["cloze"] = skipped
    else:
        logger.info("evaluate: entity cloze")
        c = eval_config.cloze
        with_examples(
            "cloze",
            cloze.evaluate_cloze,
            rows[: c.max_rows],
            max_mentions=c.max_mentions,
            max_pieces=c.max_pieces,
            context_tokens=c.context_tokens,
        )

    if (skipped := _skipped(eval_config.probe.enabled, head_missing)) is not None:
        metrics["probe"] = skipped
    else:
        logger.info("evaluate: KG probe")
        p = eval_config.probe
        kg = tables()
        held_out = _kg_test_split(run_dir)
        relation_labels = None
        if p.relation_labels is not None:
            from kg.sources import read_relation_labels

            relation_labels = read_relation_labels(p.relation_labels)
        facts = facts_from_tables(
            kg["entities"].to_dict("records"),
            kg["relations"].to_dict("records"),
            list(kg["triples"].itertuples(index=False, name=None)),
            held_out,
            p.holdout_fraction,
            eval_config.seed,
            relation_labels=relation_labels,
            templates=p.templates,
            default_template=p.default_template,
            language=p.language,
        )
        with_examples(
            "probe",
            probe.evaluate_probe,
            facts,
            max_facts=p.max_facts,
            max_candidates=p.max_candidates,
            max_pieces=p.max_pieces,
            score=p.score,
            filtered=p.filtered,
        )

    if eval_config.relation.enabled:
        logger.info("evaluate: relation classification")
        r = eval_config.relation
        data = r.data or settings["fewrel"]
        entity_index = None
        if fusion and (run_dir / "kg" / "entities.tsv").is_file():
            entities = tables()["entities"]
            entity_index = dict(zip(entities["name"], entities["id"].astype(int)))
        metrics["relation"] = _timed(
            timings,
            "relation",
            lambda: relation.evaluate_relation(
                model_dir,
                tokenizer_dir,
                data,
                **r.model_dump(exclude={"enabled", "data"}),
                seed=eval_config.seed,
                finetune_seed=finetune_seed,
                device=device,
                entity_index=entity_index,
            ),
        )
    else:
        metrics["relation"] = dict(_DISABLED)

    if eval_config.typing.enabled and model_type == "bert":
        metrics["typing"] = {"skipped": "entity typing fine-tunes kept models; this run's model is a BERT"}
    elif eval_config.typing.enabled:
        logger.info("evaluate: entity typing")
        from kept.evaluate import typing as entity_typing

        t = eval_config.typing

        def run_typing() -> dict[str, Any]:
            data = entity_typing.typing_data(run_dir, t, tables=tables, encode=run_config.encode, seed=eval_config.seed)
            return entity_typing.evaluate_typing(
                model_dir, tokenizer_dir, data, config=t, seed=finetune_seed, device=device, fusion=fusion
            )

        metrics["typing"] = _timed(timings, "typing", run_typing)
        if "skipped" in metrics["typing"]:
            del timings["typing"]  # nothing ran
    else:
        metrics["typing"] = dict(_DISABLED)

    if eval_config.linkpred.enabled:
        logger.info("evaluate: KG link prediction")
        recompute = eval_config.linkpred.recompute
        embedding = None
        if recompute:
            embedding = run_config.kg
        metrics["linkpred"] = _timed(
            timings,
            "linkpred",
            lambda: linkpred.evaluate_linkpred(run_dir, recompute=recompute, embedding_config=embedding),
        )
    else:
        metrics["linkpred"] = dict(_DISABLED)

    items: dict[str, Any] = {}
    for name, result in metrics.items():  # per-item outcomes move out of the figures, to the top level
        if isinstance(result, dict) and "items" in result:
            items[name] = result.pop("items")
    record = {
        "format": METRICS_FORMAT,
        "format_version": METRICS_FORMAT_VERSION,
        "kept_version": __version__,
        "run": run_dir.name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {
            "path": "model",
            "fusion": fusion,
            "strategy": settings["strategy"],
            "num_parameters": int(sum(p.numel() for p in model.parameters())),
            "device": str(device),
        },
        "eval_config": eval_config.model_dump(mode="json"),
        "metrics": metrics,
        "examples": examples,
        "items": items,
        "timings_s": timings,
    }
    record = json_safe(record)  # NaN (e.g. no linked mention to test) is written as null
    atomic_write_json(metrics_path(run_dir), record)
    return record


def _kg_test_split(run_dir: Path) -> list[tuple[str, str, str]] | None:
    """Test triples of the KG split that the kg step saved before embedding (kg/test_triples.tsv), else None."""
    from kg.graph import read_triple_rows
    from kg.split import SPLIT_FILES

    path = run_dir / "kg" / SPLIT_FILES["test"]
    if not path.is_file():
        return None
    return [triple for _, triple in read_triple_rows(path)]
