"""Notebook-facing views of run directories, built on :mod:`kept.analysis`.

The analyst notebooks (``notebooks/*.ipynb``) call these functions; they return pandas
DataFrames, plain dicts (displaCy "manual" records) or matplotlib figures, and they work on:

* a single run directory (``runs/NAME``: corpus/, kg/, encoded/, model/, eval/),
* the demo directory (``runs/demo``: the shared stages at the top, one run per variant below it,
  ``compare/summary.json``),
* a ``kept compare`` directory (``prepared/`` + ``runs/*`` + ``compare/summary.json``).

    >>> from kept import explore
    >>> runs = explore.open_runs("runs/demo")
    >>> runs.data_dir, list(runs.runs)
    >>> explore.detector_table(runs.data_dir)

What a run lacks (no gold spans, no KG metrics, no comparison, no FewRel) comes back as None or an
empty frame, and :func:`note` prints one line saying why, so a notebook runs top to bottom anyway.
Figures are built with ``matplotlib.figure.Figure`` (no pyplot state); :func:`show` displays one
as a PNG in Jupyter and closes it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from kept import analysis
from kept.errors import KeptError

__all__ = [
    "ARTIFACTS", "MaskedBatch", "RunSet", "annotation_stats_tables", "available", "cloze_comparison", "cloze_examples", "cloze_wins",
    "comparison", "comparison_figure", "degree_figure", "detector_figure", "detector_table",
    "displacy_options", "displacy_records", "entity_projection", "gold_recall_table", "kg_overview",
    "learning_curves", "linkpred_table", "masked_batch", "masked_displacy", "masked_tokens_frame",
    "masking_summary", "neighbourhood_figure", "note", "open_runs", "probe_per_relation",
    "probe_per_relation_figure", "projection_figure", "relation_frequency_figure", "show", "skipped_metrics",
    "spans_frame",
]

#: Colours of span sources in displaCy renderings (other sources get a grey).
SOURCE_COLORS = {"gold": "#ffd166", "gazetteer": "#8ecae6", "ner": "#b5e48c", "noun_chunk": "#e0c3fc",
                 "npmi": "#ffadad", "terms": "#caffbf", "regex": "#fdffb6"}
ACTION_COLORS = {"[MASK]": "#ff8fa3", "RANDOM": "#ffd166", "KEPT": "#bde0fe"}
UNIT_KINDS = {0: "word", 1: "phrase", 2: "entity"}


def note(message: str) -> None:
    """Print a one-line note (what a run lacks, and what to do about it)."""
    print(f"note: {message}")


def show(figure: Any, dpi: int = 100) -> None:
    """Display a matplotlib figure as a PNG in Jupyter (any backend) and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    try:
        import matplotlib.pyplot as plt

        plt.close(figure)
    except Exception:  # noqa: BLE001 - a Figure() not managed by pyplot: nothing to close
        pass
    try:
        from IPython.display import Image, display
    except ImportError:  # outside IPython: nothing to display on
        return
    display(Image(data=buffer.getvalue(), format="png"))


def _figure(width: float, height: float, rows: int = 1, columns: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


# --------------------------------------------------------------------------- the runs of a directory

@dataclass
class RunSet:
    """What a directory holds: the data (corpus, KG, encoded) and the evaluated runs.

    ``runs``: label -> run directory with ``eval/metrics.json`` (label = variant, e.g.
    ``token`` or ``entity+fusion``, with ``/NAME`` added when a variant has several seeds);
    ``variants``: variant -> its run directories; ``compare``: compare/summary.json or None.
    """

    root: Path
    data_dir: Path | None
    runs: dict[str, Path] = field(default_factory=dict)
    variants: dict[str, list[Path]] = field(default_factory=dict)
    compare: dict[str, Any] | None = None
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> {"strategy", "fusion"}

    def baseline(self) -> str | None:
        """The label of the baseline run: no fusion, token masking preferred."""
        plain = [label for label, i in self.info.items() if not i.get("fusion")]
        if not plain:
            return None
        return next((label for label in plain if self.info[label].get("strategy") == "token"), plain[0])

    def knowledge(self) -> str | None:
        """The label of the knowledge run: fusion on (entity/ernie masking preferred), else the
        non-baseline run with knowledge masking."""
        baseline = self.baseline()
        others = [label for label in self.info if label != baseline]
        fused = [label for label in others if self.info[label].get("fusion")]
        pool = fused or [label for label in others if self.info[label].get("strategy") != "token"] or others
        if not pool:
            return None
        return next((label for label in pool if self.info[label].get("strategy") in ("entity", "ernie")), pool[0])

    def pick(self, which: str | Path | None, role: str = "baseline") -> tuple[str, Path] | None:
        """``(label, run_dir)`` for ``which`` (a run label, or a run directory); with None the
        default of ``role`` ("baseline" or "knowledge"); None when there is no such run."""
        if which is None:
            label = self.baseline() if role == "baseline" else self.knowledge()
            return (label, self.runs[label]) if label is not None else None
        if str(which) in self.runs:
            return str(which), self.runs[str(which)]
        path = Path(which).expanduser()
        if not path.is_absolute() and not path.exists():
            path = self.root / path
        if (path / "eval" / "metrics.json").is_file():
            return path.name, path.resolve()
        raise KeptError(f"no evaluated run '{which}'", where=self.root,
                        fix=f"give one of {', '.join(self.runs) or '(none)'} or a run directory with eval/metrics.json")

    def describe(self) -> "Any":
        """One row per evaluated run: label, directory, strategy, fusion."""
        import pandas as pd

        rows = [{"run": label, "directory": str(path), "strategy": self.info.get(label, {}).get("strategy"),
                 "fusion": self.info.get(label, {}).get("fusion")} for label, path in self.runs.items()]
        return pd.DataFrame(rows, columns=["run", "directory", "strategy", "fusion"])


def _has_data(path: Path) -> bool:
    return (path / "corpus").is_dir() or (path / "kg" / "entities.tsv").is_file() or (path / "encoded").is_dir()


def _run_info(run_dir: Path) -> dict[str, Any]:
    try:
        model = analysis.load_metrics(run_dir).get("model", {})
        return {"strategy": model.get("strategy"), "fusion": bool(model.get("fusion"))}
    except KeptError:
        try:
            config = analysis.load_config(run_dir)
            return {"strategy": (config.get("masking") or {}).get("strategy"),
                    "fusion": bool((config.get("model") or {}).get("fusion"))}
        except KeptError:
            return {}


#: What :func:`available` checks, as (name, path inside the run directory).
ARTIFACTS: tuple[tuple[str, str], ...] = (
    ("config", "config.yaml"), ("documents", "corpus/documents.jsonl"), ("annotations", "corpus/annotated"),
    ("annotation_stats", "corpus/annotation_stats.json"), ("kg", "kg/entities.tsv"),
    ("aliases", "kg/aliases.tsv"), ("embeddings", "kg/embeddings.safetensors"), ("kg_metrics", "kg/kg_metrics.json"),
    ("tokenizer", "tokenizer"), ("encoded", "encoded/validation"), ("model", "model/config.json"),
    ("metrics", "eval/metrics.json"),
)


def available(run_dir: str | Path | None) -> dict[str, bool]:
    """Which artifacts a run directory holds: ``{"annotations": True, "kg_metrics": False, ...}``
    (see :data:`ARTIFACTS`); all False for None."""
    if run_dir is None:
        return {name: False for name, _ in ARTIFACTS}
    root = Path(run_dir)
    return {name: (root / relative).exists() for name, relative in ARTIFACTS}


def open_runs(path: str | Path) -> RunSet:
    """Resolve a run, demo or compare directory into a :class:`RunSet` (KeptError if it does not exist)."""
    from kept.compare import variant_name

    root = Path(path).expanduser()
    if not root.is_dir():
        raise KeptError("run directory not found", where=root,
                        fix="run `kept demo` (writes runs/demo), or set KEPT_RUN_DIR / RUN_DIR to a run directory")
    root = root.resolve()
    compare = analysis.load_compare(root) if analysis.is_compare_dir(root) else None
    variants: dict[str, list[Path]] = {}
    if compare is not None:
        for variant, run_dirs in compare.get("runs", {}).items():
            for run in run_dirs:
                run_path = Path(run) if Path(run).is_absolute() else root / run
                if (run_path / "eval" / "metrics.json").is_file():
                    variants.setdefault(variant, []).append(run_path)
    else:
        candidates = [root] if (root / "eval" / "metrics.json").is_file() else []
        children = sorted(p for p in root.iterdir() if p.is_dir())
        runs_folder = root / "runs"
        if runs_folder.is_dir():
            children += sorted(p for p in runs_folder.iterdir() if p.is_dir())
        candidates += [p for p in children if (p / "eval" / "metrics.json").is_file()]
        for run_path in candidates:
            info = _run_info(run_path)
            name = variant_name(info.get("strategy") or run_path.name, bool(info.get("fusion")))
            variants.setdefault(name, []).append(run_path)
    runs: dict[str, Path] = {}
    info: dict[str, dict[str, Any]] = {}
    for variant, run_dirs in variants.items():
        for run_path in run_dirs:
            label = variant if len(run_dirs) == 1 else f"{variant}/{run_path.name}"
            runs[label] = run_path
            info[label] = _run_info(run_path)
    data_candidates = [root, root / "prepared", *runs.values()]
    data_dir = next((p for p in data_candidates if p.is_dir() and _has_data(p)), None)
    return RunSet(root=root, data_dir=data_dir, runs=runs, variants=variants, compare=compare, info=info)


# --------------------------------------------------------------------------- annotations

def _entity_names(data_dir: Path) -> list[str]:
    try:
        entities = analysis.load_kg_tables(data_dir)["entities"]
    except KeptError:
        return []
    names = entities["label"].where(entities["label"] != "", entities["name"])
    by_id = dict(zip(entities["id"].tolist(), names.tolist()))
    return [by_id.get(i, "") for i in range(max(by_id) + 1)] if by_id else []


def _annotated_documents(data_dir: Path, max_documents: int | None) -> list[dict[str, Any]]:
    dataset = analysis.load_annotations(data_dir)
    if max_documents is not None:
        dataset = dataset.select(range(min(max_documents, len(dataset))))
    return dataset.to_list()


def spans_frame(data_dir: str | Path, max_documents: int | None = None) -> "Any":
    """One row per annotated span: doc, start, end, text, kind, label, entity_id, entity, source."""
    import pandas as pd

    data_dir = Path(data_dir)
    names = _entity_names(data_dir)
    rows = []
    for document in _annotated_documents(data_dir, max_documents):
        text = document.get("text") or ""
        for span in document.get("spans") or []:
            entity_id = int(span.get("entity_id", -1))
            rows.append({"doc": document.get("id"), "start": span["start"], "end": span["end"],
                         "text": text[span["start"]:span["end"]], "kind": span.get("kind"),
                         "label": span.get("label") or "", "entity_id": entity_id,
                         "entity": names[entity_id] if 0 <= entity_id < len(names) else "",
                         "source": span.get("source") or "?"})
    return pd.DataFrame(rows, columns=["doc", "start", "end", "text", "kind", "label", "entity_id", "entity",
                                       "source"])


def _alias_index(data_dir: Path) -> Any:
    """The run's alias index (kg/aliases.tsv), else one built from the KG's names and aliases, else None."""
    from kg import AliasIndex

    path = data_dir / "kg" / "aliases.tsv"
    try:
        if path.is_file():
            return AliasIndex.load(path)
        return AliasIndex.from_graph(analysis.load_kg(data_dir))
    except Exception:  # noqa: BLE001 - no KG: ambiguity is left out
        return None


def detector_table(data_dir: str | Path, max_documents: int | None = None) -> "Any":
    """Per detector (span ``source``): spans, entity/phrase spans, linked fraction of its entity spans,
    coverage (share of corpus characters inside its spans), ambiguity (share of its linked mentions
    whose surface form has several KG candidates, and mean candidates) — over the final annotation."""
    import pandas as pd

    data_dir = Path(data_dir)
    documents = _annotated_documents(data_dir, max_documents)
    total_chars = sum(len(d.get("text") or "") for d in documents)
    index = _alias_index(data_dir)
    per: dict[str, dict[str, float]] = {}
    for document in documents:
        text = document.get("text") or ""
        seen_docs: set[str] = set()
        for span in document.get("spans") or []:
            source = span.get("source") or "?"
            row = per.setdefault(source, {"documents": 0, "spans": 0, "entity_spans": 0, "phrase_spans": 0,
                                          "linked": 0, "chars": 0, "ambiguous": 0, "candidates": 0})
            if source not in seen_docs:
                row["documents"] += 1
                seen_docs.add(source)
            row["spans"] += 1
            row["chars"] += span["end"] - span["start"]
            if span.get("kind") == "entity":
                row["entity_spans"] += 1
            else:
                row["phrase_spans"] += 1
            if int(span.get("entity_id", -1)) >= 0:
                row["linked"] += 1
                if index is not None:
                    count = len(index.lookup(text[span["start"]:span["end"]]))
                    row["candidates"] += count
                    row["ambiguous"] += int(count > 1)
    rows = []
    for source, row in sorted(per.items(), key=lambda item: -item[1]["spans"]):
        linked = row["linked"]
        rows.append({
            "detector": source, "spans": int(row["spans"]), "documents": int(row["documents"]),
            "entity_spans": int(row["entity_spans"]), "phrase_spans": int(row["phrase_spans"]),
            "linked_fraction": row["linked"] / row["entity_spans"] if row["entity_spans"] else math.nan,
            "char_coverage": row["chars"] / total_chars if total_chars else math.nan,
            "ambiguous_fraction": row["ambiguous"] / linked if linked and index is not None else math.nan,
            "mean_candidates": row["candidates"] / linked if linked and index is not None else math.nan,
        })
    columns = ["detector", "spans", "documents", "entity_spans", "phrase_spans", "linked_fraction",
               "char_coverage", "ambiguous_fraction", "mean_candidates"]
    return pd.DataFrame(rows, columns=columns).set_index("detector")


def detector_figure(detectors: "Any") -> Any:
    """Grouped bars of :func:`detector_table`: coverage, linked fraction and ambiguity per detector."""
    figure, axes = _figure(max(6, 1.6 * len(detectors) + 2), 3.2)
    axis = axes[0][0]
    columns = ["char_coverage", "linked_fraction", "ambiguous_fraction"]
    width = 0.8 / len(columns)
    for i, column in enumerate(columns):
        axis.bar([x + i * width for x in range(len(detectors))], detectors[column].fillna(0.0), width=width,
                 label=column.replace("_", " "))
    axis.set_xticks([x + width for x in range(len(detectors))])
    axis.set_xticklabels(list(detectors.index), fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_title("per detector (final annotation)")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def gold_recall_table(data_dir: str | Path, max_documents: int | None = None) -> tuple["Any | None", str]:
    """Recall of the final annotation against the corpus's gold entity spans (corpus/documents.jsonl),
    per detector and for all non-gold detectors together: exact offsets, any overlap, and link
    accuracy (same KG id) of the exact hits.

    Returns ``(frame, note)`` (note: "" or a caveat), or ``(None, reason)`` when the corpus has no
    gold spans or the annotation has no spans besides the gold ones (recall would be trivial).
    """
    import pandas as pd

    data_dir = Path(data_dir)
    try:
        documents = analysis.load_documents(data_dir)
    except KeptError as error:
        return None, f"no corpus documents ({error})"
    gold_by_doc = {str(d.get("id")): [s for s in d.get("spans") or [] if s.get("kind", "entity") == "entity"]
                   for d in documents}
    if not any(gold_by_doc.values()):
        return None, "the corpus has no gold spans (corpus/documents.jsonl 'spans' are empty)"
    annotated = _annotated_documents(data_dir, max_documents)
    pools: dict[str, dict[str, float]] = {}
    total = 0
    detected = 0
    for document in annotated:
        gold = gold_by_doc.get(str(document.get("id")), [])
        spans = [s for s in document.get("spans") or [] if (s.get("source") or "?") != "gold"]
        detected += len(spans)
        if not gold:
            continue
        total += len(gold)
        groups: dict[str, list[Mapping[str, Any]]] = {"all detectors (non-gold)": spans}
        for span in spans:
            groups.setdefault(span.get("source") or "?", []).append(span)
        for name, found in groups.items():
            row = pools.setdefault(name, {"exact": 0, "overlap": 0, "link_total": 0, "link_correct": 0})
            by_offsets = {(s["start"], s["end"]): s for s in found}
            for g in gold:
                hit = by_offsets.get((g["start"], g["end"]))
                if hit is not None:
                    row["exact"] += 1
                    if int(g.get("entity_id", -1)) >= 0 and int(hit.get("entity_id", -1)) >= 0:
                        row["link_total"] += 1
                        row["link_correct"] += int(hit["entity_id"] == g["entity_id"])
                if any(s["start"] < g["end"] and g["start"] < s["end"] for s in found):
                    row["overlap"] += 1
    if not detected:
        return None, "the annotation holds only gold spans (no other detector ran), so recall against gold is trivial"
    gold_in_annotation = any((s.get("source") or "?") == "gold" for d in annotated for s in d.get("spans") or [])
    rows = [{"detector": name, "gold_spans": total, "recall_exact": row["exact"] / total if total else math.nan,
             "recall_overlap": row["overlap"] / total if total else math.nan,
             "link_accuracy": row["link_correct"] / row["link_total"] if row["link_total"] else math.nan}
            for name, row in pools.items()]
    frame = pd.DataFrame(rows, columns=["detector", "gold_spans", "recall_exact", "recall_overlap", "link_accuracy"])
    why = ("the gold detector is part of this annotation and its spans win overlaps, so the other detectors' final "
           "spans rarely coincide with gold ones; their raw candidates' recall (annotation_stats.json) is the fairer "
           "figure") if gold_in_annotation else ""
    return frame.set_index("detector"), why


def annotation_stats_tables(stats: Mapping[str, Any]) -> dict[str, "Any"]:
    """annotation_stats.json as DataFrames: ``summary`` (scalar figures), ``by_source`` (final spans
    and raw detector candidates per source), ``by_kind``, and ``gold`` (recall of each detector's
    raw candidates, before overlap resolution) when the stats have gold figures."""
    import pandas as pd

    tables: dict[str, Any] = {}
    scalars = {k: v for k, v in stats.items() if k != "counts" and (v is None or (
        isinstance(v, (int, float, str)) and not isinstance(v, bool)))}
    tables["summary"] = pd.DataFrame({"value": pd.Series(scalars, dtype=object)})
    by_source = {"final_spans": stats.get("spans_by_source") or {},
                 "raw_candidates": stats.get("candidates_by_source") or {}}
    if any(by_source.values()):
        tables["by_source"] = pd.DataFrame(by_source).fillna(0).astype(int)
    if stats.get("spans_by_kind"):
        tables["by_kind"] = pd.DataFrame({"spans": stats["spans_by_kind"]})
    gold = stats.get("gold")
    if isinstance(gold, Mapping) and gold.get("recall_exact"):
        tables["gold"] = pd.DataFrame({k: gold.get(k) or {} for k in ("recall_exact", "recall_overlap",
                                                                        "link_accuracy")})
        tables["gold"].index.name = f"detector ({gold.get('gold_entity_spans')} gold entity spans)"
    return tables


def _span_label(span: Mapping[str, Any], names: Sequence[str]) -> str:
    source = span.get("source") or "?"
    label = span.get("label") or span.get("kind") or ""
    text = f"{source.upper()}:{label}" if label else source.upper()
    entity_id = int(span.get("entity_id", -1))
    if 0 <= entity_id < len(names):
        text += f" → {names[entity_id]}"
    return text


def displacy_records(data_dir: str | Path, n: int = 3, *, doc_ids: Sequence[str] | None = None,
                     max_chars: int = 1200, sources: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """displaCy "manual" records (``{"text", "ents": [{"start", "end", "label"}], "title"}``) of the
    first ``n`` annotated documents with spans (or of ``doc_ids``), cut to ``max_chars`` characters.
    Labels read ``SOURCE:label → linked entity``. For ``displacy.render(records, manual=True)``."""
    data_dir = Path(data_dir)
    names = _entity_names(data_dir)
    wanted = set(sources) if sources is not None else None
    dataset = analysis.load_annotations(data_dir)
    records = []
    for document in dataset:
        if doc_ids is not None and str(document.get("id")) not in set(map(str, doc_ids)):
            continue
        text = (document.get("text") or "")[:max_chars]
        spans = [s for s in document.get("spans") or [] if s["end"] <= len(text)
                 and (wanted is None or (s.get("source") or "?") in wanted)]
        if not spans and doc_ids is None:
            continue
        ents = [{"start": int(s["start"]), "end": int(s["end"]), "label": _span_label(s, names)}
                for s in sorted(spans, key=lambda s: (s["start"], s["end"]))]
        records.append({"text": text, "ents": ents, "title": f"{document.get('id')}: {document.get('title') or ''}"})
        if len(records) >= n:
            break
    return records


def displacy_options(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """displaCy options colouring every label of ``records`` by its source (or masking action)."""
    colors = {}
    for record in records:
        for ent in record.get("ents", []):
            label = ent["label"]
            head = label.split(":", 1)[0].split(" ", 1)[0]
            colors[label] = (ACTION_COLORS.get(head) or SOURCE_COLORS.get(head.lower())
                             or next((c for k, c in ACTION_COLORS.items() if label.endswith(k)), "#dddddd"))
    return {"colors": colors}


# --------------------------------------------------------------------------- masking

@dataclass
class MaskedBatch:
    """A collated batch and the features it was built from (for display)."""

    strategy: str
    tokenizer: Any
    features: list[dict[str, Any]]
    batch: dict[str, Any]


def _masking_settings(data_dir: Path) -> dict[str, Any]:
    try:
        masking = dict(analysis.load_config(data_dir).get("masking") or {})
    except KeptError:
        return {}
    keep = ("mlm_probability", "mask_replace_prob", "random_replace_prob", "span_geometric_p", "span_max_words",
            "entity_share", "phrase_share", "ernie_stages", "ernie_mixture", "dea_replace_prob", "dea_remove_prob")
    return {k: v for k, v in masking.items() if k in keep and v is not None}


def masked_batch(data_dir: str | Path, strategy: str, *, rows: int = 2, split: str = "validation", seed: int = 0,
                 start: int = 0, **masking: Any) -> MaskedBatch:
    """Collate ``rows`` encoded examples of the run with ``masking.KnowledgeMaskingCollator`` and
    ``strategy`` (the run's other masking settings, overridable by keyword)."""
    from masking import KnowledgeMaskingCollator

    data_dir = Path(data_dir)
    encoded = analysis.load_encoded(data_dir, split)
    if len(encoded) == 0:
        raise KeptError(f"the encoded {split} split is empty", where=data_dir / "encoded" / split,
                        fix="pick another split (split='train')")
    stop = min(len(encoded), start + rows)
    features = encoded.select(range(start, stop)).to_list()
    tokenizer = analysis.load_tokenizer(data_dir)
    settings = {**_masking_settings(data_dir), **masking}
    dea = bool(settings.pop("dea", True)) and all("entity_ids" in f for f in features)
    collator = KnowledgeMaskingCollator(tokenizer, strategy=strategy, seed=seed, dea=dea, **settings)
    batch = collator([{k: v for k, v in f.items() if k != "doc_id"} for f in features])
    return MaskedBatch(strategy, tokenizer, features, batch)


def _row_actions(masked: MaskedBatch, row: int) -> tuple[list[str], list[int], list[str], list[int]]:
    feature = masked.features[row]
    original = list(feature["input_ids"])
    length = sum(1 for a in feature.get("attention_mask", [1] * len(original)) if a)
    inputs = masked.batch["input_ids"][row].tolist()[:length]
    labels = masked.batch["labels"][row].tolist()[:length]
    tokens = masked.tokenizer.convert_ids_to_tokens(original[:length])
    mask_id = masked.tokenizer.mask_token_id
    actions = []
    for before, after, label in zip(original, inputs, labels):
        if label == -100:
            actions.append("")
        elif after == mask_id:
            actions.append("[MASK]")
        elif after != before:
            actions.append("RANDOM")
        else:
            actions.append("KEPT")
    units = list(feature.get("unit_ids", [-1] * length))[:length]
    return tokens, units, actions, inputs


def masked_tokens_frame(masked: MaskedBatch, row: int = 0) -> "Any":
    """One row per token of example ``row``: token, unit, unit kind, entity id (input/true), the
    masking action ([MASK], RANDOM, KEPT or blank) and the token the model sees."""
    import pandas as pd

    feature = masked.features[row]
    tokens, units, actions, inputs = _row_actions(masked, row)
    kinds = list(feature.get("unit_kind", [0] * len(tokens)))
    entity_true = list(feature.get("entity_ids", [-1] * len(tokens)))
    entity_input = masked.batch["entity_ids"][row].tolist() if "entity_ids" in masked.batch else [-1] * len(tokens)
    seen = masked.tokenizer.convert_ids_to_tokens(inputs)
    rows = [{"position": i, "token": tokens[i], "unit": units[i], "unit_kind": UNIT_KINDS.get(kinds[i], kinds[i]),
             "entity_id": entity_true[i], "entity_input": entity_input[i], "action": actions[i], "model_sees": seen[i]}
            for i in range(len(tokens))]
    return pd.DataFrame(rows)


def masked_displacy(masked: MaskedBatch, row: int = 0) -> dict[str, Any]:
    """A displaCy manual record of example ``row``: the word pieces joined by spaces, masked units
    highlighted as ``KIND·ACTION`` (whole units masked together show as one highlight)."""
    feature = masked.features[row]
    tokens, units, actions, _ = _row_actions(masked, row)
    kinds = list(feature.get("unit_kind", [0] * len(tokens)))
    text, offsets = "", []
    for token in tokens:
        start = len(text) + (1 if text else 0)
        text = f"{text} {token}" if text else token
        offsets.append((start, len(text)))
    ents: list[dict[str, Any]] = []
    previous = None
    for i, action in enumerate(actions):
        if not action:
            previous = None
            continue
        key = (units[i] if units[i] >= 0 else -(i + 2), action)
        label = f"{UNIT_KINDS.get(kinds[i], 'word')}·{action}"
        if previous == key and ents:
            ents[-1]["end"] = offsets[i][1]
        else:
            ents.append({"start": offsets[i][0], "end": offsets[i][1], "label": label})
        previous = key
    masked_count = sum(1 for a in actions if a)
    return {"text": text, "ents": ents,
            "title": f"strategy {masked.strategy}: {masked_count} of {len(tokens)} tokens predicted"}


def masking_summary(data_dir: str | Path, strategies: Sequence[str], *, rows: int = 32, seed: int = 0,
                    split: str = "validation") -> "Any":
    """Per strategy, over ``rows`` encoded examples: share of tokens predicted, and of the predicted
    tokens the share in entity / phrase / word units and the [MASK] / random / kept split."""
    import pandas as pd
    import torch

    records = []
    for strategy in strategies:
        masked = masked_batch(data_dir, strategy, rows=rows, seed=seed, split=split)
        batch = masked.batch
        predicted = batch["labels"] != -100
        content = batch["attention_mask"].bool()
        kinds = torch.zeros_like(batch["input_ids"])
        for r, feature in enumerate(masked.features):
            values = list(feature.get("unit_kind", []))[: kinds.shape[1]]
            if values:
                kinds[r, : len(values)] = torch.tensor(values)
        original = torch.full_like(batch["input_ids"], -1)
        for r, feature in enumerate(masked.features):
            values = list(feature["input_ids"])[: original.shape[1]]
            original[r, : len(values)] = torch.tensor(values)
        n = int(predicted.sum())
        is_mask = batch["input_ids"] == masked.tokenizer.mask_token_id
        records.append({
            "strategy": strategy, "sequences": len(masked.features),
            "predicted_fraction": n / max(int(content.sum()), 1),
            "in_entities": int((predicted & (kinds == 2)).sum()) / n if n else math.nan,
            "in_phrases": int((predicted & (kinds == 1)).sum()) / n if n else math.nan,
            "in_words": int((predicted & (kinds == 0)).sum()) / n if n else math.nan,
            "as_mask": int((predicted & is_mask).sum()) / n if n else math.nan,
            "as_random": int((predicted & ~is_mask & (batch["input_ids"] != original)).sum()) / n if n else math.nan,
            "dea_alignments": int((batch["entity_labels"] != -100).sum()) if "entity_labels" in batch else 0,
        })
    return pd.DataFrame(records).set_index("strategy")


# --------------------------------------------------------------------------- knowledge graph

def kg_overview(data_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The run's ``kg.KnowledgeGraph`` and its statistics (kg/stats.json, else computed)."""
    import json

    data_dir = Path(data_dir)
    graph = analysis.load_kg(data_dir)
    path = data_dir / "kg" / "stats.json"
    stats = None
    if path.is_file():
        try:
            stats = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            stats = None
    if not isinstance(stats, dict) or "num_entities" not in stats:
        stats = graph.stats().to_dict()
    return graph, stats


def degree_figure(stats: Mapping[str, Any]) -> Any:
    """Bars of the degree histogram (entities per degree bucket)."""
    histogram = stats.get("degree_histogram") or {}
    figure, axes = _figure(6, 3)
    axis = axes[0][0]
    axis.bar(range(len(histogram)), list(histogram.values()), color="#4C72B0")
    axis.set_xticks(range(len(histogram)))
    axis.set_xticklabels(list(histogram), rotation=30)
    axis.set_xlabel("degree (in + out)")
    axis.set_ylabel("entities")
    axis.set_title("degree distribution")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def relation_frequency_figure(stats: Mapping[str, Any], top: int = 20) -> Any:
    """Horizontal bars: triples per relation (the ``top`` most frequent)."""
    frequencies = list((stats.get("relation_frequencies") or {}).items())[:top]
    figure, axes = _figure(6, 0.3 * max(len(frequencies), 3) + 1)
    axis = axes[0][0]
    axis.barh(range(len(frequencies)), [c for _, c in frequencies], color="#55A868")
    axis.set_yticks(range(len(frequencies)))
    axis.set_yticklabels([r for r, _ in frequencies], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("triples")
    axis.set_title(f"relations (top {len(frequencies)})")
    figure.tight_layout()
    return figure


def neighbourhood_figure(graph: Any, entity: str | int, hops: int = 1, max_entities: int = 30,
                         seed: int = 0) -> Any:
    """The entity's ``hops``-neighbourhood drawn with networkx (labels = entity labels, edges = relations)."""
    import networkx as nx

    hood = graph.neighbourhood(entity, hops=hops, max_entities=max_entities)
    labels_of = graph.entity_labels
    view = nx.MultiDiGraph()
    view.add_nodes_from(hood.entities)
    edge_labels: dict[tuple[int, int], str] = {}
    for head, relation, tail in hood.triples.tolist():
        view.add_edge(head, tail)
        name = graph.relations[relation]
        key = (head, tail)
        edge_labels[key] = f"{edge_labels[key]}, {name}" if key in edge_labels and name not in edge_labels[key] \
            else edge_labels.get(key, name)
    positions = nx.spring_layout(nx.Graph(view), seed=seed)
    figure, axes = _figure(8, 6)
    axis = axes[0][0]
    colors = ["#ef476f" if node == hood.center else "#8ecae6" for node in view.nodes]
    nx.draw_networkx_nodes(view, positions, ax=axis, node_color=colors, node_size=500)
    nx.draw_networkx_edges(view, positions, ax=axis, arrows=True, arrowsize=12, edge_color="#888888",
                           connectionstyle="arc3,rad=0.08")
    nx.draw_networkx_labels(view, positions, ax=axis, font_size=8,
                            labels={n: (labels_of[n] or graph.entities[n])[:28] for n in view.nodes})
    nx.draw_networkx_edge_labels(view, positions, ax=axis, font_size=6, edge_labels=edge_labels)
    axis.set_title(f"{labels_of[hood.center] or graph.entities[hood.center]}: {hops}-hop neighbourhood "
                   f"({len(hood.entities)} entities, {len(hood.triples)} triples)")
    axis.axis("off")
    figure.tight_layout()
    return figure


def entity_projection(data_dir: str | Path, max_entities: int | None = None) -> tuple["Any", list[float]]:
    """2-D PCA (numpy SVD of the centred table) of ``kg/embeddings.safetensors``'s entity embeddings.

    Returns a DataFrame (id, name, label, degree, x, y) and the explained-variance ratio of the two axes.
    """
    import numpy as np
    import pandas as pd

    from kg import load_embeddings

    data_dir = Path(data_dir)
    path = data_dir / "kg" / "embeddings.safetensors"
    if not path.is_file():
        raise KeptError("KG embeddings not found", where=path, fix="run the kg embed step (`kept run CONFIG`)")
    table = load_embeddings(path, mmap=False).entity_embeddings.float().numpy()
    graph = analysis.load_kg(data_dir)
    count = min(len(table), graph.num_entities) if max_entities is None else min(len(table), max_entities)
    matrix = table[:count].astype(np.float64)
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2] if vt.shape[0] >= 2 else np.vstack([vt, np.zeros_like(vt)])[:2]
    coords = centred @ components.T
    variance = singular ** 2
    ratio = (variance[:2] / variance.sum()).tolist() if variance.sum() > 0 else [math.nan, math.nan]
    degree = graph.degrees().tolist()
    frame = pd.DataFrame({"id": range(count), "name": graph.entities[:count],
                          "label": graph.entity_labels[:count], "degree": degree[:count],
                          "x": coords[:, 0], "y": coords[:, 1]})
    return frame, (ratio + [math.nan, math.nan])[:2]


def projection_figure(frame: "Any", variance: Sequence[float] = (), annotate: int = 15,
                      highlight: Iterable[str] = ()) -> Any:
    """Scatter of the 2-D projection, point size by degree; the ``annotate`` highest-degree entities
    and the ``highlight`` names are labelled."""
    figure, axes = _figure(7, 5.5)
    axis = axes[0][0]
    sizes = 6 + 4 * frame["degree"].clip(upper=50)
    axis.scatter(frame["x"], frame["y"], s=sizes, alpha=0.5, color="#4C72B0", linewidths=0)
    wanted = set(highlight)
    labelled = frame.nlargest(annotate, "degree") if annotate else frame.iloc[:0]
    for _, row in frame[frame["name"].isin(wanted) | frame.index.isin(labelled.index)].iterrows():
        axis.annotate(str(row["label"] or row["name"])[:24], (row["x"], row["y"]), fontsize=7,
                      color="#d62828" if row["name"] in wanted else "black")
    axis.set_xlabel(f"PC1 ({variance[0]:.0%} of variance)" if len(variance) > 0 and not math.isnan(variance[0])
                    else "PC1")
    axis.set_ylabel(f"PC2 ({variance[1]:.0%} of variance)" if len(variance) > 1 and not math.isnan(variance[1])
                    else "PC2")
    axis.set_title(f"entity embeddings, PCA ({len(frame)} entities)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def linkpred_table(runs: RunSet) -> "Any":
    """Link-prediction figures: kg/kg_metrics.json of the data, and each run's eval linkpred section.
    Rows that are skipped carry the reason in ``note``."""
    import pandas as pd

    columns = ["source", "model", "mrr", "hits_at_1", "hits_at_3", "hits_at_10", "note"]
    rows = []
    if runs.data_dir is not None:
        try:
            metrics = analysis.load_kg_metrics(runs.data_dir)
            rows.append({"source": "kg/kg_metrics.json", "model": metrics.get("model"),
                         **{k: metrics.get(k) for k in columns[2:6]}, "note": ""})
        except KeptError as error:
            rows.append({"source": "kg/kg_metrics.json", "note": str(error)})
    for label, run_dir in runs.runs.items():
        section = (analysis.load_metrics(run_dir).get("metrics") or {}).get("linkpred") or {}
        if "skipped" in section:
            rows.append({"source": f"{label}: eval linkpred", "note": section["skipped"]})
        elif section:
            rows.append({"source": f"{label}: eval linkpred", "model": section.get("model"),
                         **{k: section.get(k) for k in columns[2:6]}, "note": section.get("source", "")})
    return pd.DataFrame(rows, columns=columns).set_index("source")


# --------------------------------------------------------------------------- results

def learning_curves(runs: RunSet) -> tuple[Any | None, dict[str, str]]:
    """A figure of every run's logged losses and learning rate (kept.report.learning_curve_figure),
    and ``{run: reason}`` for the runs without a log history."""
    from kept.report import learning_curve_figure

    histories: dict[str, list[dict[str, Any]]] = {}
    missing: dict[str, str] = {}
    for label, run_dir in runs.runs.items():
        try:
            histories[label] = analysis.load_log_history(run_dir)
        except KeptError as error:
            missing[label] = str(error)
    if not histories:
        return None, missing
    return learning_curve_figure(histories, title="learning curves"), missing


def comparison(runs: RunSet) -> Any | None:
    """The strategy × fusion comparison (kept.compare.CompareResult): compare/summary.json when the
    directory has one, else aggregated from its evaluated runs; None without evaluated runs."""
    from kept.compare import CompareResult, compare_runs

    if runs.compare is not None:
        return CompareResult.from_dict(runs.compare)
    if not runs.variants:
        return None
    return compare_runs(runs.variants)


def comparison_figure(result: Any, metrics: Sequence[str] | None = None) -> Any:
    """Bars per variant with error bars (sample std over seeds), one panel per metric."""
    from kept.report import metric_bars_figure

    shown = list(metrics) if metrics is not None else result.shown_metrics()
    return metric_bars_figure(result, shown, title="mean ± std over seeds")


def skipped_metrics(runs: RunSet) -> dict[str, dict[str, str]]:
    """``{run: {metric: reason}}`` for the metrics a run's evaluation skipped (e.g. no FewRel data)."""
    skipped: dict[str, dict[str, str]] = {}
    for label, run_dir in runs.runs.items():
        metrics = analysis.load_metrics(run_dir).get("metrics") or {}
        for name, section in metrics.items():
            if isinstance(section, Mapping) and "skipped" in section:
                skipped.setdefault(label, {})[name] = str(section["skipped"])
    return skipped


def probe_per_relation(runs: RunSet, metric: str = "hits_at_1") -> "Any":
    """KG-probe ``metric`` (hits@1 = probe accuracy; or ``mrr``) per relation (rows) and run
    (columns), with the number of facts; empty when no run has a per-relation breakdown."""
    import pandas as pd

    table: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for label, run_dir in runs.runs.items():
        probe = (analysis.load_metrics(run_dir).get("metrics") or {}).get("probe") or {}
        for relation, values in (probe.get("per_relation") or {}).items():
            table.setdefault(label, {})[relation] = values.get(metric, math.nan)
            counts[relation] = max(counts.get(relation, 0), int(values.get("count", 0) or 0))
    if not table:
        return pd.DataFrame()
    frame = pd.DataFrame(table)
    frame.insert(0, "facts", pd.Series(counts))
    return frame.sort_values("facts", ascending=False)


def probe_per_relation_figure(frame: "Any", metric: str = "hits_at_1", top: int = 15) -> Any:
    """Grouped horizontal bars of :func:`probe_per_relation` (``top`` relations by facts)."""
    shown = frame.head(top)
    runs = [c for c in shown.columns if c != "facts"]
    figure, axes = _figure(7, 0.45 * max(len(shown), 2) * max(1, len(runs)) / 1.5 + 1.2)
    axis = axes[0][0]
    height = 0.8 / max(len(runs), 1)
    for i, run in enumerate(runs):
        axis.barh([y + i * height for y in range(len(shown))], shown[run].fillna(0.0), height=height, label=run)
    axis.set_yticks([y + height * (len(runs) - 1) / 2 for y in range(len(shown))])
    axis.set_yticklabels([f"{r} (n={int(n)})" for r, n in zip(shown.index, shown["facts"])], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel(metric)
    axis.set_xlim(0, 1)
    axis.set_title(f"KG probe {metric} per relation")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def cloze_examples(run_dir: str | Path, recompute: int = 0) -> list[dict[str, Any]]:
    """A run's entity-cloze examples: those recorded in eval/metrics.json (``recompute=0``), or the
    first ``recompute`` of the evaluation's held-out mentions predicted again with the run's model and
    the evaluation's own settings (rows, seed, context, max pieces; kept.evaluate.cloze): the items
    are the same for two runs on the same data, and the first ones match the recorded examples."""
    run_dir = Path(run_dir)
    record = analysis.load_metrics(run_dir)
    if not recompute:
        return list((record.get("examples") or {}).get("cloze") or [])
    import torch

    from kept.evaluate.cloze import evaluate_cloze
    from kept.evaluate.common import quiet_from_pretrained
    from kept.evaluate.config import EvalConfig

    from fusion import KeptForMaskedLM

    settings = EvalConfig.model_validate(record.get("eval_config") or {})
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise KeptError("model not found (no model/config.json)", where=model_dir,
                        fix="pretrain the run first, or use the recorded examples (recompute=0)")
    validation = analysis.load_encoded(run_dir, "validation")
    # the rows and items kept.evaluate uses, so the first examples are the evaluation's own items
    rows = validation.select(range(min(settings.cloze.max_rows, len(validation)))).to_list()
    tokenizer = analysis.load_tokenizer(run_dir)
    model = quiet_from_pretrained(KeptForMaskedLM, str(model_dir)).eval()
    fusion = bool((record.get("model") or {}).get("fusion"))
    torch.manual_seed(settings.seed)
    result = evaluate_cloze(model, tokenizer, rows, max_mentions=max(recompute, settings.cloze.max_mentions),
                            max_pieces=settings.cloze.max_pieces,
                            context_tokens=settings.cloze.context_tokens, seed=settings.seed,
                            batch_size=settings.batch_size, num_examples=recompute, use_entities=fusion)
    return result["examples"]


def cloze_comparison(baseline_dir: str | Path, knowledge_dir: str | Path, recompute: int = 0) -> "Any":
    """The entity-cloze examples of two runs side by side, joined on the item (document row and
    token position: both runs evaluate the same seeded held-out mentions on the same data).

    ``recompute=0``: the examples recorded in each eval/metrics.json (``eval.num_examples``);
    ``recompute=N``: the first N mentions predicted again by both models (see :func:`cloze_examples`).
    """
    import pandas as pd

    def frame(run_dir: str | Path, suffix: str) -> "Any":
        rows = [{"doc_id": e.get("doc_id"), "row": e.get("row"), "position": e.get("position"),
                 "gold": e.get("gold"), f"context_{suffix}": e.get("context"),
                 f"prediction_{suffix}": e.get("prediction"), f"correct_{suffix}": bool(e.get("correct"))}
                for e in cloze_examples(run_dir, recompute)]
        return pd.DataFrame(rows, columns=["doc_id", "row", "position", "gold", f"context_{suffix}",
                                           f"prediction_{suffix}", f"correct_{suffix}"])

    base, know = frame(baseline_dir, "baseline"), frame(knowledge_dir, "knowledge")
    keys = ["doc_id", "row", "position", "gold"]
    merged = base.merge(know, on=keys, how="inner")
    merged = merged.rename(columns={"context_knowledge": "context"}).drop(columns=["context_baseline"])
    return merged[["doc_id", "row", "position", "context", "gold", "prediction_baseline", "prediction_knowledge",
                   "correct_baseline", "correct_knowledge"]]


def cloze_wins(baseline_dir: str | Path, knowledge_dir: str | Path, recompute: int = 0) -> "Any":
    """Cloze examples the knowledge run gets right and the baseline gets wrong."""
    both = cloze_comparison(baseline_dir, knowledge_dir, recompute)
    return both[both["correct_knowledge"] & ~both["correct_baseline"]].reset_index(drop=True)
