"""Notebook-facing views of run directories, built on :mod:`kept.analysis`.

The analyst notebooks (``notebooks/*.ipynb``) call these functions; they return pandas
DataFrames, plain dicts (displaCy "manual" records) or matplotlib figures, and they work on:

* a single run directory (``runs/NAME``: corpus/, kg/, encoded/, model/, eval/),
* a ``kept compare`` directory (``prepared/`` + ``runs/*`` + ``compare/summary.json``), which is also
  what ``kept demo`` writes (``runs/demo``).

    >>> from kept import explore
    >>> runs = explore.open_runs("runs/demo")
    >>> runs.data_dir, list(runs.runs)
    >>> explore.detector_table(runs.data_dir)

What a run lacks (no gold spans, no KG metrics, no comparison, no FewRel) comes back as None or an
empty frame, and :func:`note` prints one line saying why, so a notebook runs top to bottom anyway.
Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no backend chosen); :func:`show`
displays one as a PNG in Jupyter.

One module per thing an analyst looks at, all re-exported here: :mod:`~kept.explore.runs` (which runs a
directory holds), :mod:`~kept.explore.annotations` (spans, detectors, gold recall),
:mod:`~kept.explore.masked` (what each strategy masks), :mod:`~kept.explore.graph` (the KG and its
embeddings) and :mod:`~kept.explore.results` (curves, the comparison, probe and cloze).
"""

from kept.explore._common import ACTION_COLORS, SOURCE_COLORS, UNIT_KINDS, note, show
from kept.explore.annotations import (
    annotation_stats_tables,
    detector_figure,
    detector_table,
    displacy_options,
    displacy_records,
    gold_recall_table,
    spans_frame,
)
from kept.explore.graph import (
    degree_figure,
    entity_projection,
    kg_overview,
    linkpred_table,
    neighbourhood_figure,
    projection_figure,
    relation_frequency_figure,
)
from kept.explore.masked import MaskedBatch, masked_batch, masked_displacy, masked_tokens_frame, masking_summary
from kept.explore.results import (
    cloze_comparison,
    cloze_examples,
    cloze_wins,
    comparison,
    comparison_figure,
    learning_curves,
    probe_per_relation,
    probe_per_relation_figure,
    skipped_metrics,
)
from kept.explore.runs import ARTIFACTS, RunSet, available, open_runs

__all__ = [
    "ACTION_COLORS",
    "SOURCE_COLORS",
    "UNIT_KINDS",
    "ARTIFACTS",
    "MaskedBatch",
    "RunSet",
    "annotation_stats_tables",
    "available",
    "cloze_comparison",
    "cloze_examples",
    "cloze_wins",
    "comparison",
    "comparison_figure",
    "degree_figure",
    "detector_figure",
    "detector_table",
    "displacy_options",
    "displacy_records",
    "entity_projection",
    "gold_recall_table",
    "kg_overview",
    "learning_curves",
    "linkpred_table",
    "masked_batch",
    "masked_displacy",
    "masked_tokens_frame",
    "masking_summary",
    "neighbourhood_figure",
    "note",
    "open_runs",
    "probe_per_relation",
    "probe_per_relation_figure",
    "projection_figure",
    "relation_frequency_figure",
    "show",
    "skipped_metrics",
    "spans_frame",
]
