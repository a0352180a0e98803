"""Loaders of run directories for notebooks and for the evaluate/compare/report commands.

Every loader takes a run directory (``runs/NAME``) and returns plain Python, pandas or
datasets objects; a missing or unreadable file raises :class:`kept.errors.KeptError` naming it.

    >>> from kept import analysis
    >>> metrics = analysis.load_metrics("runs/demo")
    >>> history = analysis.load_log_history("runs/demo")
    >>> table = analysis.metrics_frame(["runs/a", "runs/b"])
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kept.errors import KeptError

METRICS_FORMAT = "kept.eval.metrics"
METRICS_FORMAT_VERSION = 1
COMPARE_FORMAT = "kept.compare.summary"
COMPARE_FORMAT_VERSION = 1

__all__ = [
    "METRICS_FORMAT",
    "METRICS_FORMAT_VERSION",
    "COMPARE_FORMAT",
    "COMPARE_FORMAT_VERSION",
    "examples_frame",
    "flatten_metrics",
    "is_compare_dir",
    "is_run_dir",
    "load_annotation_stats",
    "load_annotations",
    "load_compare",
    "load_config",
    "load_documents",
    "load_encoded",
    "load_kg",
    "load_kg_metrics",
    "load_kg_tables",
    "load_log_history",
    "load_metrics",
    "load_model",
    "load_tokenizer",
    "metrics_frame",
    "json_safe",
]


# --------------------------------------------------------------------------- helpers


def _dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise KeptError("directory not found", where=path, fix="pass an existing run directory (runs/NAME)")
    if not path.is_dir():
        raise KeptError("not a directory", where=path, fix="pass a run directory, not a file")
    return path


def _read_json(path: Path, what: str, fix: str) -> Any:
    if not path.is_file():
        raise KeptError(f"{what} not found", where=path, fix=fix)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise KeptError(
            f"{what} is not valid JSON ({error.msg})",
            where=path,
            line=error.lineno,
            fix="delete it and re-run the step that writes it",
        ) from error


def _read_json_object(path: Path, what: str, fix: str, rerun: str) -> dict[str, Any]:
    """``_read_json`` for files that must hold one JSON object; ``rerun`` says which step rewrites it."""
    data = _read_json(path, what, fix)
    if not isinstance(data, dict):
        raise KeptError(f"{what} must be a JSON object", where=path, fix=rerun)
    return data


def is_run_dir(path: str | Path) -> bool:
    """A run directory has a config.yaml or at least one of the stage folders."""
    path = Path(path)
    return path.is_dir() and (
        (path / "config.yaml").is_file()
        or any((path / sub).is_dir() for sub in ("model", "encoded", "kg", "corpus", "eval"))
    )


def is_compare_dir(path: str | Path) -> bool:
    """A compare directory holds compare/summary.json, or summary.json with a format marker."""
    path = Path(path)
    for candidate in (path / "compare" / "summary.json", path / "summary.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8")).get("format") == COMPARE_FORMAT
            except (json.JSONDecodeError, AttributeError):
                return False
    return False


# --------------------------------------------------------------------------- configuration


def load_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved configuration ``config.yaml`` as a dict."""
    from kept.config import read_yaml

    path = _dir(run_dir) / "config.yaml"
    if not path.is_file():
        raise KeptError("config.yaml not found", where=path, fix="run `kept run CONFIG` to create the run directory")
    data = read_yaml(path)[0]  # the one YAML loader (file:line errors)
    if not isinstance(data, dict):
        raise KeptError("config.yaml must hold a mapping", where=path, fix="write `key: value` pairs at top level")
    return data


# --------------------------------------------------------------------------- metrics


def _check_format(data: Any, path: Path, fmt: str, version: int, fix: str) -> None:
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise KeptError(
            f"not a {fmt} file (format={data.get('format') if isinstance(data, dict) else None!r})", where=path, fix=fix
        )
    found = data.get("format_version")
    if found != version:
        raise KeptError(
            f"written by another version of kept (format_version {found}, this kept reads {version})",
            where=path,
            fix=fix,
        )


def load_metrics(run_dir: str | Path) -> dict[str, Any]:
    """``eval/metrics.json`` of a run, checked for its format version."""
    path = _dir(run_dir) / "eval" / "metrics.json"
    fix = f"run `kept evaluate {run_dir}`"
    data = _read_json(path, "metrics file", fix)
    _check_format(data, path, METRICS_FORMAT, METRICS_FORMAT_VERSION, fix)
    return data


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalar figures of a (nested) metrics mapping as ``{"mlm.token.accuracy": 0.41, ...}``.

    Accepts the whole metrics.json (uses its ``metrics`` part) or any nested dict. Non-numeric
    leaves, lists and per-relation breakdowns (``per_relation``) are left out; NaN is kept.
    """
    if not prefix and "metrics" in metrics and isinstance(metrics.get("metrics"), Mapping):
        metrics = metrics["metrics"]
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if key in ("per_relation", "examples", "note", "skipped"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            flat[name] = float(value)
        elif isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=f"{name}."))
    return flat


def metrics_frame(run_dirs: Iterable[str | Path]) -> Any:
    """A pandas DataFrame: one row per run (index = directory name), one column per flat metric."""
    import pandas as pd

    rows = {}
    for run_dir in run_dirs:
        rows[Path(run_dir).name] = flatten_metrics(load_metrics(run_dir))
    return pd.DataFrame.from_dict(rows, orient="index").sort_index(axis=1)


def examples_frame(run_dirs: Iterable[str | Path] | Mapping[str, str | Path], kind: str = "cloze") -> Any:
    """Stored examples of several runs side by side (pandas): one row per item, a prediction column
    per run (and a ``<run> ok`` column for cloze). The items are the same in every run evaluated on the
    same data (seeded selection), so they join on their key (cloze: doc_id/position; probe: prompt/gold).

    ``run_dirs``: paths (column names = directory names) or ``{name: path}``.
    """
    import pandas as pd

    named = dict(run_dirs) if isinstance(run_dirs, Mapping) else {Path(r).name: r for r in run_dirs}
    if kind == "cloze":
        keys, shared = ["doc_id", "position"], ["context", "gold"]
    elif kind == "probe":
        keys, shared = ["prompt", "gold"], ["relation"]
    else:
        raise KeptError(f"unknown example kind '{kind}'", where="kind", fix="use 'cloze' or 'probe'")
    frame = None
    for name, run_dir in named.items():
        items = load_metrics(run_dir).get("examples", {}).get(kind, [])
        part = pd.DataFrame(items)
        if part.empty:
            continue
        columns = {"prediction": name}
        if "correct" in part:
            columns["correct"] = f"{name} ok"
        if "rank" in part:
            columns["rank"] = f"{name} rank"
        part = part[[c for c in keys + shared + list(columns) if c in part]].rename(columns=columns)
        frame = (
            part
            if frame is None
            else frame.merge(part.drop(columns=[c for c in shared if c in part]), on=keys, how="outer")
        )
    return frame if frame is not None else pd.DataFrame(columns=keys + shared)


def load_kg_metrics(run_dir: str | Path) -> dict[str, Any]:
    """``kg/kg_metrics.json`` (link prediction of the KG embedding, written by the kg embed step)."""
    path = _dir(run_dir) / "kg" / "kg_metrics.json"
    return _read_json_object(
        path, "KG metrics", "run the kg embed step (`kept run` or `kept kg embed`)", "re-run the kg embed step"
    )


# --------------------------------------------------------------------------- training history


def _checkpoint_step(path: Path) -> int:
    match = re.search(r"checkpoint-(\d+)$", path.name)
    return int(match.group(1)) if match else -1


def log_history_path(run_dir: str | Path) -> Path | None:
    """The file the training log history is read from, or None: ``logs/train_history.json`` first,
    then log_history.json / trainer_state.json of the run, the model or the latest checkpoint."""
    run_dir = Path(run_dir)
    candidates = [
        run_dir / "logs" / "train_history.json",
        run_dir / "log_history.json",
        run_dir / "trainer_state.json",
        run_dir / "checkpoints" / "log_history.json",
        run_dir / "checkpoints" / "trainer_state.json",
        run_dir / "model" / "trainer_state.json",
    ]
    checkpoints = (
        sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=_checkpoint_step, reverse=True)
        if (run_dir / "checkpoints").is_dir()
        else []
    )
    candidates += [c / "trainer_state.json" for c in checkpoints]
    return next((c for c in candidates if c.is_file()), None)


def load_log_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The HF Trainer's ``log_history``: a list of dicts with step, epoch, loss/eval_loss, learning_rate...

    Read from ``log_history.json`` (a list, or an object with ``log_history``) or a ``trainer_state.json``.
    """
    path = log_history_path(_dir(run_dir))
    if path is None:
        raise KeptError(
            "no training log history (log_history.json or trainer_state.json)",
            where=Path(run_dir) / "checkpoints",
            fix="pretrain the run first (`kept run CONFIG`)",
        )
    data = _read_json(path, "training log history", "re-run pretraining")
    history = data.get("log_history") if isinstance(data, dict) else data
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        raise KeptError("log history must be a list of objects", where=path, fix="re-run pretraining")
    return history


# --------------------------------------------------------------------------- corpus


def load_annotation_stats(run_dir: str | Path) -> dict[str, Any]:
    """``corpus/annotation_stats.json`` (spans by source and kind, linked fraction, ...)."""
    path = _dir(run_dir) / "corpus" / "annotation_stats.json"
    return _read_json_object(
        path, "annotation statistics", "run the annotation step (`kept run CONFIG`)", "re-run annotation"
    )


def load_annotations(run_dir: str | Path) -> Any:
    """The annotated corpus (``corpus/annotated``) as a datasets.Dataset: id, title, text, spans."""
    from datasets import load_from_disk

    path = _dir(run_dir) / "corpus" / "annotated"
    if not path.is_dir():
        raise KeptError("annotated corpus not found", where=path, fix="run the annotation step (`kept run CONFIG`)")
    try:
        return load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise KeptError(f"cannot read the annotated corpus ({error})", where=path, fix="re-run annotation") from error


def load_documents(run_dir: str | Path) -> list[dict[str, Any]]:
    """``corpus/documents.jsonl`` as a list of dicts, read by masking's documents reader (the one)."""
    from masking.documents import iter_documents
    from masking.errors import MaskingError

    path = _dir(run_dir) / "corpus" / "documents.jsonl"
    if not path.is_file():
        raise KeptError("documents file not found", where=path, fix="run the corpus step (`kept run CONFIG`)")
    try:
        return list(iter_documents(path))
    except MaskingError as error:
        raise KeptError(error.what, where=error.where, line=error.line, fix="re-run the corpus step") from None


def load_encoded(run_dir: str | Path, split: str = "validation") -> Any:
    """``encoded/<split>`` as a datasets.Dataset (input_ids, attention_mask, unit_ids, unit_kind, entity_ids)."""
    from datasets import load_from_disk

    path = _dir(run_dir) / "encoded" / split
    if not path.is_dir():
        raise KeptError(f"encoded {split} split not found", where=path, fix="run the encode step (`kept run CONFIG`)")
    try:
        return load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise KeptError(f"cannot read the encoded dataset ({error})", where=path, fix="re-run encoding") from error


# --------------------------------------------------------------------------- knowledge graph


def _read_kg(kg_dir: Path) -> Any:
    """``KnowledgeGraph.load`` (the one reader of the kg/ tables), its errors as KeptError."""
    from kg import KGError, KnowledgeGraph

    for name in ("entities.tsv", "relations.tsv", "triples.tsv"):
        if not (kg_dir / name).is_file():
            raise KeptError("KG table not found", where=kg_dir / name, fix="run the kg step (`kept run CONFIG`)")
    try:
        return KnowledgeGraph.load(kg_dir)
    except KGError as error:
        raise KeptError(error.what, where=error.where, line=error.line, fix="re-run the kg step") from None


def load_kg_tables(run_dir: str | Path) -> dict[str, Any]:
    """The KG of a run as pandas DataFrames: ``entities`` (id, name, label, aliases list),
    ``relations`` (id, name, label) and ``triples`` (head, relation, tail names)."""
    import pandas as pd

    graph = _read_kg(_dir(run_dir) / "kg")
    entity_frame = pd.DataFrame(
        {
            "id": range(graph.num_entities),
            "name": graph.entities,
            "label": graph.entity_labels,
            "aliases": graph.entity_aliases,
        }
    )
    relation_frame = pd.DataFrame(
        {"id": range(graph.num_relations), "name": graph.relations, "label": graph.relation_labels}
    )
    return {
        "entities": entity_frame,
        "relations": relation_frame,
        "triples": pd.DataFrame(graph.triple_names(), columns=["head_name", "relation_name", "tail_name"]),
    }


def load_kg(run_dir: str | Path) -> Any:
    """The run's KG as a ``kg.KnowledgeGraph`` (``KnowledgeGraph.load(run_dir / "kg")``)."""
    from kg import KnowledgeGraph

    path = _dir(run_dir) / "kg"
    if not (path / "entities.tsv").is_file():
        raise KeptError("KG not found", where=path / "entities.tsv", fix="run the kg step (`kept run CONFIG`)")
    return KnowledgeGraph.load(path)


# --------------------------------------------------------------------------- model


def load_tokenizer(run_dir: str | Path) -> Any:
    """The run's fast tokenizer (``tokenizer/``, or ``model/`` when it carries one)."""
    from transformers import AutoTokenizer

    run_dir = _dir(run_dir)
    for path in (run_dir / "tokenizer", run_dir / "model"):
        if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    raise KeptError(
        "tokenizer not found", where=run_dir / "tokenizer", fix="run the tokenizer step (`kept run CONFIG`)"
    )


def load_model(run_dir: str | Path, model_class: Any = None, **kwargs: Any) -> Any:
    """The run's final model (``model/``) in eval mode; ``model_class`` defaults to
    ``fusion.KeptForMaskedLM``. Extra keyword arguments go to ``from_pretrained``."""
    run_dir = _dir(run_dir)
    path = run_dir / "model"
    if not (path / "config.json").is_file():
        raise KeptError(
            "model not found (no model/config.json)", where=path, fix="pretrain the run first (`kept run CONFIG`)"
        )
    if model_class is None:
        from fusion import KeptForMaskedLM as model_class  # noqa: N813
    from kept.evaluate.common import quiet_from_pretrained

    try:
        model = quiet_from_pretrained(model_class, str(path), **kwargs)
    except (OSError, ValueError, KeyError) as error:
        from kept.export import outside_kept_fix

        raise KeptError(
            f"cannot load the model ({error})",
            where=path,
            fix=outside_kept_fix(error) or "check that it was saved by this version of kept (save_pretrained)",
        ) from error
    model.eval()
    return model


# --------------------------------------------------------------------------- compare


def load_compare(compare_dir: str | Path) -> dict[str, Any]:
    """``compare/summary.json`` of a compare directory (or ``summary.json`` given the compare/ folder)."""
    compare_dir = _dir(compare_dir)
    path = compare_dir / "compare" / "summary.json"
    if not path.is_file() and (compare_dir / "summary.json").is_file():
        path = compare_dir / "summary.json"
    fix = "run `kept compare CONFIG` first"
    data = _read_json(path, "compare summary", fix)
    _check_format(data, path, COMPARE_FORMAT, COMPARE_FORMAT_VERSION, fix)
    return data


def json_safe(value: Any) -> Any:
    """NaN and ±inf (not valid JSON) become None, recursively; everything else is unchanged."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
