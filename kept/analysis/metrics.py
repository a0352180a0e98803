"""A run's evaluation figures (``eval/metrics.json``): the file, its flat figures, and pandas tables of
figures and stored examples across runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kept.analysis.files import check_format, existing_dir
from kept.atomic_io import read_json
from kept.errors import KeptError

METRICS_FORMAT = "kept.eval.metrics"
METRICS_FORMAT_VERSION = 1


def load_metrics(run_dir: str | Path) -> dict[str, Any]:
    """``eval/metrics.json`` of a run, checked for its format version."""
    path = existing_dir(run_dir) / "eval" / "metrics.json"
    fix = f"run `kept evaluate {run_dir}`"
    data = read_json(path, "metrics file", fix)
    check_format(data, path, METRICS_FORMAT, METRICS_FORMAT_VERSION, fix)
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
