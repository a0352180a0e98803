"""Loaders of run directories for notebooks and for the evaluate/compare/report commands.

Every loader takes a run directory (``runs/NAME``) and returns plain Python, pandas or
datasets objects; a missing or unreadable file raises :class:`kept.errors.KeptError` naming it.

    >>> from kept import analysis
    >>> metrics = analysis.load_metrics("runs/demo")
    >>> history = analysis.load_log_history("runs/demo")
    >>> table = analysis.metrics_frame(["runs/a", "runs/b"])

One module per kind of run data: :mod:`~kept.analysis.metrics` (eval/metrics.json),
:mod:`~kept.analysis.history` (training log history), :mod:`~kept.analysis.corpus` (annotations,
documents, encoded splits), :mod:`~kept.analysis.graph` (the KG), :mod:`~kept.analysis.model` (model and
tokenizer), :mod:`~kept.analysis.compare_summary` (compare directories), :mod:`~kept.analysis.run`
(the run directory and its config.yaml); :mod:`~kept.analysis.files` reads their JSON. The names below
are the public API (README; the same as before ``kept.analysis`` became a package); import anything else from
its module.
"""

from kept.analysis.compare_summary import COMPARE_FORMAT, COMPARE_FORMAT_VERSION, is_compare_dir, load_compare
from kept.analysis.corpus import load_annotation_stats, load_annotations, load_documents, load_encoded
from kept.analysis.files import json_safe
from kept.analysis.graph import load_kg, load_kg_metrics, load_kg_tables
from kept.analysis.history import load_log_history
from kept.analysis.metrics import (
    METRICS_FORMAT,
    METRICS_FORMAT_VERSION,
    examples_frame,
    flatten_metrics,
    load_metrics,
    metrics_frame,
)
from kept.analysis.model import load_model, load_tokenizer
from kept.analysis.run import is_run_dir, load_config

__all__ = [
    "COMPARE_FORMAT",
    "COMPARE_FORMAT_VERSION",
    "METRICS_FORMAT",
    "METRICS_FORMAT_VERSION",
    "examples_frame",
    "flatten_metrics",
    "is_compare_dir",
    "is_run_dir",
    "json_safe",
    "load_config",
    "load_annotation_stats",
    "load_annotations",
    "load_compare",
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
]
