"""Annotations: detector tables, gold recall, annotation statistics, displaCy records."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kept import analysis
from kept.errors import KeptError
from kept.explore._common import ACTION_COLORS, SOURCE_COLORS, _figure


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


def spans_frame(data_dir: str | Path, max_documents: int | None = None) -> Any:
    """One row per annotated span: doc, start, end, text, kind, label, entity_id, entity, source."""
    import pandas as pd

    data_dir = Path(data_dir)
    names = _entity_names(data_dir)
    rows = []
    for document in _annotated_documents(data_dir, max_documents):
        text = document.get("text") or ""
        for span in document.get("spans") or []:
            entity_id = int(span.get("entity_id", -1))
            rows.append(
                {
                    "doc": document.get("id"),
                    "start": span["start"],
                    "end": span["end"],
                    "text": text[span["start"] : span["end"]],
                    "kind": span.get("kind"),
                    "label": span.get("label") or "",
                    "entity_id": entity_id,
                    "entity": names[entity_id] if 0 <= entity_id < len(names) else "",
                    "source": span.get("source") or "?",
                }
            )
    return pd.DataFrame(rows, columns=["doc", "start", "end", "text", "kind", "label", "entity_id", "entity", "source"])


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


def detector_table(data_dir: str | Path, max_documents: int | None = None) -> Any:
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
            row = per.setdefault(
                source,
                {
                    "documents": 0,
                    "spans": 0,
                    "entity_spans": 0,
                    "phrase_spans": 0,
                    "linked": 0,
                    "chars": 0,
                    "ambiguous": 0,
                    "candidates": 0,
                },
            )
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
                    count = len(index.lookup(text[span["start"] : span["end"]]))
                    row["candidates"] += count
                    row["ambiguous"] += int(count > 1)
    rows = []
    for source, row in sorted(per.items(), key=lambda item: -item[1]["spans"]):
        linked = row["linked"]
        rows.append(
            {
                "detector": source,
                "spans": int(row["spans"]),
                "documents": int(row["documents"]),
                "entity_spans": int(row["entity_spans"]),
                "phrase_spans": int(row["phrase_spans"]),
                "linked_fraction": row["linked"] / row["entity_spans"] if row["entity_spans"] else math.nan,
                "char_coverage": row["chars"] / total_chars if total_chars else math.nan,
                "ambiguous_fraction": row["ambiguous"] / linked if linked and index is not None else math.nan,
                "mean_candidates": row["candidates"] / linked if linked and index is not None else math.nan,
            }
        )
    columns = [
        "detector",
        "spans",
        "documents",
        "entity_spans",
        "phrase_spans",
        "linked_fraction",
        "char_coverage",
        "ambiguous_fraction",
        "mean_candidates",
    ]
    return pd.DataFrame(rows, columns=columns).set_index("detector")


def detector_figure(detectors: Any) -> Any:
    """Grouped bars of :func:`detector_table`: coverage, linked fraction and ambiguity per detector."""
    figure, axes = _figure(max(6, 1.6 * len(detectors) + 2), 3.2)
    axis = axes[0][0]
    columns = ["char_coverage", "linked_fraction", "ambiguous_fraction"]
    width = 0.8 / len(columns)
    for i, column in enumerate(columns):
        axis.bar(
            [x + i * width for x in range(len(detectors))],
            detectors[column].fillna(0.0),
            width=width,
            label=column.replace("_", " "),
        )
    axis.set_xticks([x + width for x in range(len(detectors))])
    axis.set_xticklabels(list(detectors.index), fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_title("per detector (final annotation)")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def gold_recall_table(data_dir: str | Path, max_documents: int | None = None) -> tuple[Any | None, str]:
    """Recall of the final annotation against the corpus's gold entity spans (corpus/documents.jsonl),
    per detector and for all non-gold detectors together: exact offsets, any overlap, and link
    accuracy (same KG id) of the exact hits.

    Returns ``(frame, note)`` (note: "" or a caveat), or ``(None, reason)`` when the corpus has no
    gold spans or the annotation has no spans besides the gold ones (recall would be trivial).
    """
    import pandas as pd

    from masking.stats import gold_matches

    data_dir = Path(data_dir)
    try:
        documents = analysis.load_documents(data_dir)
    except KeptError as error:
        return None, f"no corpus documents ({error})"
    gold_by_doc = {
        str(d.get("id")): [s for s in d.get("spans") or [] if s.get("kind", "entity") == "entity"] for d in documents
    }
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
            for key, count in gold_matches(gold, found).items():  # the counting of annotation_stats.json
                row[key] += count
    if not detected:
        return None, "the annotation holds only gold spans (no other detector ran), so recall against gold is trivial"
    gold_in_annotation = any((s.get("source") or "?") == "gold" for d in annotated for s in d.get("spans") or [])
    rows = [
        {
            "detector": name,
            "gold_spans": total,
            "recall_exact": row["exact"] / total if total else math.nan,
            "recall_overlap": row["overlap"] / total if total else math.nan,
            "link_accuracy": row["link_correct"] / row["link_total"] if row["link_total"] else math.nan,
        }
        for name, row in pools.items()
    ]
    frame = pd.DataFrame(rows, columns=["detector", "gold_spans", "recall_exact", "recall_overlap", "link_accuracy"])
    why = (
        (
            "the gold detector is part of this annotation and its spans win overlaps, so the other detectors' final "
            "spans rarely coincide with gold ones; their raw candidates' recall (annotation_stats.json) is the fairer "
            "figure"
        )
        if gold_in_annotation
        else ""
    )
    return frame.set_index("detector"), why


def annotation_stats_tables(stats: Mapping[str, Any]) -> dict[str, Any]:
    """annotation_stats.json as DataFrames: ``summary`` (scalar figures), ``by_source`` (final spans
    and raw detector candidates per source), ``by_kind``, and ``gold`` (recall of each detector's
    raw candidates, before overlap resolution) when the stats have gold figures."""
    import pandas as pd

    tables: dict[str, Any] = {}
    scalars = {
        k: v
        for k, v in stats.items()
        if k != "counts" and (v is None or (isinstance(v, (int, float, str)) and not isinstance(v, bool)))
    }
    tables["summary"] = pd.DataFrame({"value": pd.Series(scalars, dtype=object)})
    by_source = {
        "final_spans": stats.get("spans_by_source") or {},
        "raw_candidates": stats.get("candidates_by_source") or {},
    }
    if any(by_source.values()):
        tables["by_source"] = pd.DataFrame(by_source).fillna(0).astype(int)
    if stats.get("spans_by_kind"):
        tables["by_kind"] = pd.DataFrame({"spans": stats["spans_by_kind"]})
    gold = stats.get("gold")
    if isinstance(gold, Mapping) and gold.get("recall_exact"):
        tables["gold"] = pd.DataFrame(
            {k: gold.get(k) or {} for k in ("recall_exact", "recall_overlap", "link_accuracy")}
        )
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


def displacy_records(
    data_dir: str | Path,
    n: int = 3,
    *,
    doc_ids: Sequence[str] | None = None,
    max_chars: int = 1200,
    sources: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
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
        spans = [
            s
            for s in document.get("spans") or []
            if s["end"] <= len(text) and (wanted is None or (s.get("source") or "?") in wanted)
        ]
        if not spans and doc_ids is None:
            continue
        ents = [
            {"start": int(s["start"]), "end": int(s["end"]), "label": _span_label(s, names)}
            for s in sorted(spans, key=lambda s: (s["start"], s["end"]))
        ]
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
            colors[label] = (
                ACTION_COLORS.get(head)
                or SOURCE_COLORS.get(head.lower())
                or next((c for k, c in ACTION_COLORS.items() if label.endswith(k)), "#dddddd")
            )
    return {"colors": colors}
