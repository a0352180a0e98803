"""The data stage: a run's corpus (corpus/documents.jsonl) and knowledge graph (kg/) from its ``data`` section.

One preparer per ``data.source`` in :data:`DATA_SOURCES`; adding a source is one function
``(paths, config) -> info`` and one entry there (plus its name in ``kept.config``'s ``data.source``),
and :data:`KG_SOURCES` when it brings a knowledge graph of its own. ``kept corpus``, ``kept data ...``
and the runner's ``data`` stage call these; so can notebooks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kept.errors import KeptError
from kept.rundir import RunPaths, run_paths

if TYPE_CHECKING:
    from kept.config import RunConfig

DOCUMENTS_FILE = Path("corpus") / "documents.jsonl"
ALIASES_FILE = Path("kg") / "aliases.tsv"


# ------------------------------------------------------------------ builders (also `kept data ...`)


def build_wikipedia_sample(
    out_dir: str | Path, *, source: str | Path | None = None, max_documents: int | None = None, sample: Any = None
) -> dict[str, Any]:
    """Parse the enwiki sample (gensim's wheel, or ``source``) into ``out_dir``.

    Writes corpus/documents.jsonl (gold link spans: kind "entity", label "WIKI_LINK", source "gold"),
    kg/entities.tsv, relations.tsv, triples.tsv, aliases.tsv, stats.json, metadata.json and
    kg/wikipedia_stats.json. Returns the sample's numbers (documents, words, links, entities, ...)
    plus ``out_dir``. ``sample`` may be an already parsed :class:`kg.wikipedia.WikipediaSample`.
    """
    from kept.corpus import write_documents
    from kg._io import atomic_write_json
    from kg.wikipedia import load_wikipedia_sample

    out = Path(out_dir)
    if sample is None:
        sample = load_wikipedia_sample(source, max_documents=max_documents)
    write_documents((doc.to_dict() for doc in sample.documents), out / DOCUMENTS_FILE)
    sample.graph.save(out / "kg")
    sample.alias_index.save(out / ALIASES_FILE)
    atomic_write_json(out / "kg" / "wikipedia_stats.json", sample.stats)
    return {**sample.stats, "out_dir": str(out)}


def build_pykeen_run(name: str, out_dir: str | Path) -> dict[str, Any]:
    """Put PyKEEN's bundled ``name`` (nations, kinships, umls) into ``out_dir/kg/`` (+ alias index)."""
    from kg import load_pykeen_dataset

    return write_graph(load_pykeen_dataset(name), Path(out_dir))


def build_triples_run(
    path: str | Path,
    out_dir: str | Path,
    *,
    labels: str | Path | None = None,
    aliases: str | Path | None = None,
    strict: bool = False,
    delimiter: str | None = None,
    header: bool | None = None,
) -> dict[str, Any]:
    """Load a triples TSV/CSV (+ optional label/alias files) into ``out_dir/kg/``; returns counts and the load report."""
    from kg import load_triples

    graph = load_triples(path, labels=labels, aliases=aliases, strict=strict, delimiter=delimiter, header=header)
    result = write_graph(graph, Path(out_dir))
    result["load_report"] = graph.load_report.to_dict() if graph.load_report else None
    return result


def write_graph(graph: Any, out: Path) -> dict[str, Any]:
    """``graph`` into ``out/kg/`` with its alias index; returns its counts."""
    from kg import AliasIndex

    graph.save(out / "kg")
    AliasIndex.from_graph(graph).save(out / ALIASES_FILE)
    return {
        "entities": graph.num_entities,
        "relations": graph.num_relations,
        "triples": graph.num_triples,
        "out_dir": str(out),
    }


def verbalize_graph(graph: Any, max_documents: int | None = None, per_document: int = 8) -> list[dict[str, Any]]:
    """Template sentences from a KG's triples ("head relation tail .") with gold spans on both entities."""
    documents: list[dict[str, Any]] = []
    sentences: list[str] = []
    spans: list[dict[str, Any]] = []
    text = ""
    labels = graph.entity_labels
    for h, r, t in graph.triples.tolist():
        relation = graph.relation_labels[r].replace("_", " ")
        head, tail = labels[h] or graph.entities[h], labels[t] or graph.entities[t]
        sentence = f"{head} {relation} {tail} ."
        base = len(text) + (1 if text else 0)
        spans.append(
            {"start": base, "end": base + len(head), "kind": "entity", "label": "", "entity_id": h, "source": "gold"}
        )
        tail_start = base + len(head) + 1 + len(relation) + 1
        spans.append(
            {
                "start": tail_start,
                "end": tail_start + len(tail),
                "kind": "entity",
                "label": "",
                "entity_id": t,
                "source": "gold",
            }
        )
        text = f"{text} {sentence}" if text else sentence
        sentences.append(sentence)
        if len(sentences) == per_document:
            documents.append({"id": f"kg-{len(documents)}", "title": "", "text": text, "spans": spans})
            text, sentences, spans = "", [], []
            if max_documents is not None and len(documents) >= max_documents:
                return documents
    if sentences:
        documents.append({"id": f"kg-{len(documents)}", "title": "", "text": text, "spans": spans})
    return documents


# ------------------------------------------------------------------ one preparer per data.source


def _corpus_from_files(paths: RunPaths, config: RunConfig) -> int:
    from kept.corpus import read_corpus, write_documents

    data = config.data
    if data.corpus is None:
        raise KeptError(
            f"data.source '{data.source}' needs data.corpus",
            where="data.corpus",
            fix="give a txt/jsonl/parquet file or a saved HF dataset directory",
        )
    documents = read_corpus(
        data.corpus,
        text_field=data.text_field,
        id_field=data.id_field,
        title_field=data.title_field,
        max_documents=data.max_documents,
    )
    return write_documents(documents, paths.documents)


def prepare_wikipedia_sample(paths: RunPaths, config: RunConfig) -> dict[str, Any]:
    data = config.data
    stats = build_wikipedia_sample(paths.root, source=data.wikipedia_dump, max_documents=data.max_documents)
    return {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}


def prepare_sanguo_sample(paths: RunPaths, config: RunConfig) -> dict[str, Any]:
    """The Chinese sample that ships in kg/data/sanguo (三国演义 ch. 1-20, gold mentions, a small KG)."""
    from kept.corpus import write_documents
    from kg._io import atomic_write_json
    from kg.sanguo import load_sanguo_sample

    sample = load_sanguo_sample(max_documents=config.data.max_documents)
    write_documents(sample.documents, paths.documents)
    sample.graph.save(paths.kg)
    sample.alias_index.save(paths.aliases)
    atomic_write_json(paths.kg / "sanguo_stats.json", sample.stats)
    return dict(sample.stats)


def prepare_pykeen(paths: RunPaths, config: RunConfig) -> dict[str, Any]:
    """A bundled PyKEEN graph; the corpus from data.corpus, else the graph's triples as sentences."""
    from kept.corpus import write_documents
    from kg import KnowledgeGraph

    data = config.data
    info = build_pykeen_run(data.pykeen_dataset, paths.root)
    if data.corpus is not None:
        info["documents"] = _corpus_from_files(paths, config)
    else:
        graph = KnowledgeGraph.load(paths.kg)
        info["documents"] = write_documents(verbalize_graph(graph, data.max_documents), paths.documents)
    return info


def prepare_files(paths: RunPaths, config: RunConfig) -> dict[str, Any]:
    data = config.data
    info: dict[str, Any] = {"documents": _corpus_from_files(paths, config)}
    if data.kg_triples is not None:
        info.update(build_triples_run(data.kg_triples, paths.root, labels=data.kg_labels, aliases=data.kg_aliases))
    return info


def prepare_fewrel(paths: RunPaths, config: RunConfig) -> dict[str, Any]:
    """FewRel sentences as documents with gold head/tail spans, and their (head, relation, tail) KG."""
    from kept.corpus import write_documents
    from kept.fewrel import fewrel_documents, fewrel_entities, fewrel_triples, load_fewrel
    from kg import AliasIndex, KnowledgeGraph

    data = config.data
    if data.corpus is None:
        raise KeptError(
            "data.source 'fewrel' needs data.corpus",
            where="data.corpus",
            fix="give a FewRel JSON file or a directory of them",
        )
    dataset = load_fewrel(data.corpus)
    if data.max_documents is not None:
        dataset.examples = dataset.examples[: data.max_documents]
    entities = fewrel_entities(dataset)
    triples = fewrel_triples(dataset)
    ids = [kb for kb, _ in entities]
    relations = sorted({r for _, r, _ in triples}) or ["related_to"]
    index = {kb: i for i, kb in enumerate(ids)}
    rel_index = {r: i for i, r in enumerate(relations)}
    graph = KnowledgeGraph(
        ids,
        relations,
        [(index[h], rel_index[r], index[t]) for h, r, t in triples],
        entity_labels=[name for _, name in entities],
        relation_labels=[dataset.relation_names.get(r, r) for r in relations],
        metadata={"source": f"fewrel:{data.corpus}"},
    )
    graph.save(paths.kg)
    AliasIndex.from_graph(graph).save(paths.aliases)
    count = write_documents(fewrel_documents(dataset, index), paths.documents)
    return {
        "documents": count,
        "entities": graph.num_entities,
        "relations": graph.num_relations,
        "triples": graph.num_triples,
    }


#: data.source -> its preparer: writes corpus/documents.jsonl (and kg/ when the source has one), returns numbers.
DATA_SOURCES: dict[str, Callable[[RunPaths, RunConfig], dict[str, Any]]] = {
    "wikipedia_sample": prepare_wikipedia_sample,
    "pykeen": prepare_pykeen,
    "files": prepare_files,
    "fewrel": prepare_fewrel,
    "sanguo_sample": prepare_sanguo_sample,
}
#: Sources that always bring a knowledge graph (``files`` has one when data.kg_triples is given).
KG_SOURCES: frozenset[str] = frozenset({"wikipedia_sample", "pykeen", "fewrel", "sanguo_sample"})


def has_kg(config: RunConfig) -> bool:
    data = config.data
    return data.source in KG_SOURCES or data.kg_triples is not None


def prepare_data(run_dir: str | Path, config: RunConfig) -> dict[str, Any]:
    """Write corpus/documents.jsonl and (when the source has one) kg/ for the configured source."""
    source = config.data.source
    if source not in DATA_SOURCES:
        raise KeptError(
            f"unknown data.source '{source}'", where="data.source", fix=f"choose from {', '.join(DATA_SOURCES)}"
        )
    return {"source": source, **DATA_SOURCES[source](run_paths(run_dir), config)}
