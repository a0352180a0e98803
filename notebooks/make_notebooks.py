"""Write the analyst notebooks (notebooks/*.ipynb) from the cell sources below, without outputs.

    python notebooks/make_notebooks.py            # (re)write every notebook
    python notebooks/make_notebooks.py --check    # exit 1 if a committed notebook differs

The notebooks are generated so that git only ever holds stripped notebooks (no outputs, no
execution counts) with stable cell ids; edit the cells here, not in Jupyter, then re-run this script.
Each notebook's first code cell is tagged ``parameters`` (papermill-style) and reads ``RUN_DIR``
from ``KEPT_RUN_DIR`` (default ``../runs/demo``, written by ``kept demo``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMETERS_TAG = "parameters"

# ----------------------------------------------------------------------------------------- 01
ANNOTATIONS = [
    ("md", """\
# Annotations: what was detected, what gets masked

For one run directory: the spans the detectors found (rendered with displaCy), coverage, linked
fraction and ambiguity per detector, recall against the corpus's gold spans (when it has them), and
masked example batches from `masking.KnowledgeMaskingCollator` for a few strategies.

Set `RUN_DIR` below (or the `KEPT_RUN_DIR` environment variable); the default is the demo's
`runs/demo` (`kept demo` writes it, a compare directory). A single run and a `kept compare`
directory both work."""),
    ("parameters", """\
import os

RUN_DIR = os.environ.get("KEPT_RUN_DIR", "../runs/demo")
MAX_DOCUMENTS = None  # None: the whole annotated corpus; an int: the first N documents
SHOW_DOCUMENTS = 3  # documents rendered with displaCy
STRATEGIES = ["token", "whole_word", "phrase", "entity"]  # masking strategies summarised
SHOW_STRATEGIES = ["token", "entity"]  # strategies whose masked example is rendered"""),
    ("code", """\
import pandas as pd
from spacy import displacy

from kept import analysis, explore

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 20)
pd.set_option("display.max_colwidth", 60)

runs = explore.open_runs(RUN_DIR)
DATA = runs.data_dir
have = explore.available(DATA)
print(f"run directory: {runs.root}")
print(f"data (corpus, KG, encoded): {DATA}")
print("has: " + ", ".join(name for name, present in have.items() if present))
if not have["annotations"]:
    explore.note("no annotated corpus (corpus/annotated): run the annotation step (`kept run CONFIG`); "
                 "the annotation sections are skipped")"""),
    ("md", "## Annotation statistics\n\n`corpus/annotation_stats.json`, written by the annotation step."),
    ("code", """\
stat_tables = {}
if have["annotation_stats"]:
    stat_tables = explore.annotation_stats_tables(analysis.load_annotation_stats(DATA))
    for name, table in stat_tables.items():
        if name != "gold":
            print(f"--- {name}")
            display(table)
else:
    explore.note("no annotation statistics (corpus/annotation_stats.json); the tables below are computed "
                 "from the annotated corpus")"""),
    ("md", "## What was detected\n\nThe first documents with their spans; labels read `SOURCE:label → linked KG entity`."),
    ("code", """\
records = explore.displacy_records(DATA, n=SHOW_DOCUMENTS) if have["annotations"] else []
if records:
    displacy.render(records, style="ent", manual=True, jupyter=True, options=explore.displacy_options(records))
else:
    explore.note("no annotated document with spans to show")"""),
    ("code", """\
if have["annotations"]:
    spans = explore.spans_frame(DATA, max_documents=MAX_DOCUMENTS)
    print(f"{len(spans)} spans in {spans['doc'].nunique()} documents")
    display(spans.groupby(["source", "kind"]).size().rename("spans").to_frame())
    linked = spans[spans["entity_id"] >= 0]
    if len(linked):
        print("most frequent linked entities")
        display(linked["entity"].value_counts().head(15).rename("mentions").to_frame())
    else:
        explore.note("no span is linked to the KG")"""),
    ("md", """\
## Per detector: coverage, linked fraction, ambiguity

Over the final annotation (after overlap resolution): `char_coverage` is the share of corpus
characters inside the detector's spans, `linked_fraction` the share of its entity spans linked to a
KG entity, `ambiguous_fraction` the share of its linked mentions whose surface form has more than
one candidate in the alias index (`mean_candidates`: candidates per linked mention)."""),
    ("code", """\
if have["annotations"]:
    detectors = explore.detector_table(DATA, max_documents=MAX_DOCUMENTS)
    display(detectors)
    if detectors.empty:
        explore.note("the annotation has no spans")
    else:
        explore.show(explore.detector_figure(detectors))"""),
    ("md", "## Recall against gold spans\n\nWhere the corpus has gold entity spans (e.g. Wikipedia links)."),
    ("code", """\
recall, why = explore.gold_recall_table(DATA, max_documents=MAX_DOCUMENTS) if have["annotations"] \\
    else (None, "no annotated corpus")
if why:
    explore.note(why)
if recall is not None:
    print("final annotation vs gold entity spans")
    display(recall)
if "gold" in stat_tables:
    print("raw detector candidates (before overlap resolution) vs gold, from annotation_stats.json")
    display(stat_tables["gold"])"""),
    ("md", """\
## What gets masked

`masking.KnowledgeMaskingCollator` on encoded validation sequences: the share of tokens predicted,
where they fall (entity / phrase / word units) and how they are replaced, per strategy; then one
example per strategy, masked units highlighted (`KIND·ACTION`: [MASK], RANDOM token, or KEPT)."""),
    ("code", """\
summary = None
if have["encoded"] and have["tokenizer"]:
    summary = explore.masking_summary(DATA, STRATEGIES, rows=32)
    display(summary)
else:
    explore.note("no encoded data or tokenizer: run the encode step (`kept run CONFIG`) to see masked batches")"""),
    ("code", """\
if summary is not None:
    for strategy in SHOW_STRATEGIES:
        masked = explore.masked_batch(DATA, strategy, rows=2)
        record = explore.masked_displacy(masked, row=0)
        displacy.render([record], style="ent", manual=True, jupyter=True, options=explore.displacy_options([record]))
        tokens = explore.masked_tokens_frame(masked, row=0)
        display(tokens[tokens["action"] != ""])"""),
]

# ----------------------------------------------------------------------------------------- 02
KNOWLEDGE_GRAPH = [
    ("md", """\
# The knowledge graph

Statistics of the run's KG, one entity's neighbourhood (networkx), a 2-D PCA projection of the
entity embeddings (`kg/embeddings.safetensors`) and link-prediction metrics.

Set `RUN_DIR` below (or `KEPT_RUN_DIR`); default: the demo's `runs/demo`."""),
    ("parameters", """\
import os

RUN_DIR = os.environ.get("KEPT_RUN_DIR", "../runs/demo")
ENTITY = None  # an entity name (kg/entities.tsv); None: the entity with the highest degree
HOPS = 1  # neighbourhood radius
MAX_NEIGHBOURS = 30  # entities drawn at most
LABEL_TOP = 15  # entities labelled in the projection (highest degree)"""),
    ("code", """\
import pandas as pd

from kept import explore

pd.set_option("display.width", 160)

runs = explore.open_runs(RUN_DIR)
DATA = runs.data_dir
have = explore.available(DATA)
print(f"run directory: {runs.root}")
graph, stats = (None, {})
if have["kg"]:
    graph, stats = explore.kg_overview(DATA)
    print(graph)
else:
    explore.note("this run has no knowledge graph (kg/entities.tsv): the KG sections are skipped")"""),
    ("md", "## Statistics"),
    ("code", """\
if graph is not None:
    scalars = {k: v for k, v in stats.items() if not isinstance(v, (dict, list))}
    display(pd.DataFrame({"value": pd.Series(scalars, dtype=object)}))
    print("entities with the highest degree")
    display(pd.DataFrame(stats.get("top_entities_by_degree", []), columns=["entity", "degree"]))
    explore.show(explore.degree_figure(stats))
    explore.show(explore.relation_frequency_figure(stats))"""),
    ("md", "## An entity's neighbourhood"),
    ("code", """\
top = stats.get("top_entities_by_degree") or []
entity = ENTITY or (top[0][0] if top else None)
if graph is None or entity is None:
    explore.note("no entity to show")
else:
    hood = graph.neighbourhood(entity, hops=HOPS, max_entities=MAX_NEIGHBOURS)
    display(pd.DataFrame(hood.triple_names(graph), columns=["head", "relation", "tail"]).head(40))
    explore.show(explore.neighbourhood_figure(graph, entity, hops=HOPS, max_entities=MAX_NEIGHBOURS))"""),
    ("md", "## Entity embeddings, 2-D projection\n\nPCA by numpy SVD of the centred embedding table; point size grows with degree."),
    ("code", """\
if graph is not None and have["embeddings"]:
    projection, variance = explore.entity_projection(DATA)
    print(f"{len(projection)} entities; explained variance: PC1 {variance[0]:.1%}, PC2 {variance[1]:.1%}")
    explore.show(explore.projection_figure(projection, variance, annotate=LABEL_TOP,
                                           highlight=[entity] if entity else []))
else:
    explore.note("no entity embeddings (kg/embeddings.safetensors): run the kg embed step")"""),
    ("md", "## Link prediction\n\nRank-based MRR and hits@k of the KG embedding (PyKEEN), from `kg/kg_metrics.json` and each run's evaluation."),
    ("code", """\
linkpred = explore.linkpred_table(runs)
display(linkpred)
if linkpred["mrr"].isna().all():
    explore.note("no link-prediction figures in this directory (the KG embedding was not evaluated)")"""),
]

# ----------------------------------------------------------------------------------------- 03
RESULTS = [
    ("md", """\
# Results: learning curves, strategy × fusion, probes, examples

For the evaluated runs of a directory (a `kept compare` directory such as the demo's `runs/demo`, or a
single run): learning curves, the comparison of masking strategy × fusion with error
bars (sample std over seeds), KG-probe accuracy per relation, and entity-cloze examples the
knowledge model gets right and the baseline gets wrong.

Set `RUN_DIR` below (or `KEPT_RUN_DIR`)."""),
    ("parameters", """\
import os

RUN_DIR = os.environ.get("KEPT_RUN_DIR", "../runs/demo")
BASELINE = None  # a run label (see the runs table) or a run directory; None: no fusion, token masking
KNOWLEDGE = None  # likewise; None: the fusion run (entity masking preferred)
METRICS = None  # figures compared (e.g. ["cloze.accuracy", "probe.mrr"]); None: the headline figures
RECOMPUTE_CLOZE = 0  # 0: the cloze examples recorded in eval/metrics.json; N: predict N held-out mentions again"""),
    ("code", """\
import pandas as pd

from kept import analysis, explore

pd.set_option("display.width", 160)
pd.set_option("display.max_colwidth", 80)

runs = explore.open_runs(RUN_DIR)
print(f"directory: {runs.root}")
print("compare summary: " + ("compare/summary.json" if runs.compare is not None else "none (aggregated from the runs)"))
display(runs.describe())
if not runs.runs:
    explore.note("no evaluated run (eval/metrics.json) here: run `kept evaluate RUN_DIR` or `kept demo`")"""),
    ("md", "## Learning curves"),
    ("code", """\
figure, missing = explore.learning_curves(runs)
if figure is not None:
    explore.show(figure)
for label, reason in missing.items():
    explore.note(f"{label}: no learning curve ({reason})")"""),
    ("md", "## Strategy × fusion\n\nMean ± sample std over seeds; error bars are the std (zero with one seed per variant)."),
    ("code", """\
result = explore.comparison(runs)
if result is None:
    explore.note("nothing to compare")
else:
    shown = METRICS or result.shown_metrics()
    display(pd.DataFrame({v: {m: result.table[v][m].format() for m in shown if m in result.table[v]}
                          for v in result.variants}))
    if max((len(r) for r in result.runs.values()), default=0) < 2:
        explore.note("one run per variant: the error bars are zero (run `kept compare` with several seeds)")
    explore.show(explore.comparison_figure(result, shown))
for label, reasons in explore.skipped_metrics(runs).items():
    for metric, reason in reasons.items():
        explore.note(f"{label}: {metric} skipped ({reason})")"""),
    ("md", "## KG probe per relation\n\nhits@1 (probe accuracy) of the templated held-out facts, per relation."),
    ("code", """\
per_relation = explore.probe_per_relation(runs, metric="hits_at_1")
if per_relation.empty:
    explore.note("no run has a per-relation KG-probe breakdown (probe disabled or no KG)")
else:
    display(per_relation)
    explore.show(explore.probe_per_relation_figure(per_relation))"""),
    ("code", """\
probe_examples = analysis.examples_frame(runs.runs, kind="probe") if runs.runs else None
if probe_examples is None or probe_examples.empty:
    explore.note("no KG-probe examples recorded (eval.num_examples = 0, or the probe was skipped)")
else:
    print("KG-probe examples: each run's top candidate (and the gold tail's rank)")
    display(probe_examples.head(20))"""),
    ("md", """\
## Right with knowledge, wrong without

Entity-cloze examples of the two runs (the same seeded held-out mentions in both), joined item by
item: those recorded in each `eval/metrics.json` (`eval.num_examples` of them), or with
`RECOMPUTE_CLOZE = N` the first N mentions predicted again by both models."""),
    ("code", """\
baseline = runs.pick(BASELINE, "baseline")
knowledge = runs.pick(KNOWLEDGE, "knowledge")
if baseline is None or knowledge is None or baseline[1] == knowledge[1]:
    explore.note("needs two evaluated runs (a baseline and a knowledge run) to compare examples")
    wins = None
else:
    print(f"baseline: {baseline[0]} ({baseline[1]})")
    print(f"knowledge: {knowledge[0]} ({knowledge[1]})")
    both = explore.cloze_comparison(baseline[1], knowledge[1], recompute=RECOMPUTE_CLOZE)
    wins = both[both["correct_knowledge"] & ~both["correct_baseline"]]
    print(f"{len(both)} cloze examples in both runs: knowledge right {int(both['correct_knowledge'].sum())}, "
          f"baseline right {int(both['correct_baseline'].sum())}, knowledge right and baseline wrong {len(wins)}")
    if len(wins):
        display(wins[["context", "gold", "prediction_baseline", "prediction_knowledge"]])
    else:
        explore.note("no recorded example that the knowledge run gets right and the baseline gets wrong; "
                     "all recorded examples follow")
        display(both[["context", "gold", "prediction_baseline", "prediction_knowledge",
                      "correct_baseline", "correct_knowledge"]])"""),
]

NOTEBOOKS = {
    "01_annotations.ipynb": ANNOTATIONS,
    "02_knowledge_graph.ipynb": KNOWLEDGE_GRAPH,
    "03_results.ipynb": RESULTS,
}


def build(cells: list[tuple[str, str]], stem: str) -> nbformat.NotebookNode:
    """A stripped notebook (no outputs, execution_count None, stable cell ids, python3 kernel)."""
    notebook = new_notebook()
    notebook.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    for index, (kind, source) in enumerate(cells):
        cell_id = f"{stem.split('_', 1)[0]}-{index:02d}"
        if kind == "md":
            cell = new_markdown_cell(source, id=cell_id)
        else:
            cell = new_code_cell(source, id=cell_id)
            if kind == "parameters":
                cell.metadata["tags"] = [PARAMETERS_TAG]
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def render(name: str) -> str:
    return nbformat.writes(build(NOTEBOOKS[name], Path(name).stem)) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        path = HERE / name
        text = render(name)
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python notebooks/make_notebooks.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
