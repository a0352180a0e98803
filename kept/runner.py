"""`kept run CONFIG`: every stage of a run configuration, skipping what is already done and valid.

Stages, in order: ``data`` (corpus/documents.jsonl + kg/) → ``kg`` (KG embeddings) → ``annotate``
(corpus/annotated) → ``encode`` (tokenizer + encoded/) → ``pretrain`` (model/) → ``evaluate``
(eval/metrics.json) → ``report`` (eval/report.md).

A stage is *done* when its outputs exist and its stamp (``stamps/<stage>.json``) records the
fingerprint of the configuration sections it depends on plus its inputs (names, sizes and mtimes
of the files it reads). Change a section, or re-create an input, and that stage and every stage
after it run again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from kept.config import RunConfig, save_config
from kept.errors import KeptError
from kept.rundir import (
    RunLock,
    RunPaths,
    is_main_process,
    make_run_dir,
    run_paths,
    stage_done,
    stamp_fingerprint,
    write_stamp,
)

STAGES: tuple[str, ...] = ("data", "kg", "annotate", "encode", "pretrain", "evaluate", "report")


@dataclass
class StageOutcome:
    stage: str
    status: str  # "ran", "skipped" (done and valid), "not needed"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class RunResult:
    run_dir: Path
    outcomes: list[StageOutcome] = field(default_factory=list)

    def ran(self) -> list[str]:
        return [o.stage for o in self.outcomes if o.status == "ran"]

    def skipped(self) -> list[str]:
        return [o.stage for o in self.outcomes if o.status == "skipped"]


# ------------------------------------------------------------------ the data stage

def has_kg(config: RunConfig) -> bool:
    data = config.data
    return data.source in ("wikipedia_sample", "pykeen", "fewrel") or data.kg_triples is not None


def verbalize_graph(graph: Any, max_documents: int | None = None, per_document: int = 8) -> list[dict[str, Any]]:
    """Template sentences from a KG's triples ("head relation tail .") with gold spans on both entities."""
    documents, sentences, spans = [], [], []
    text = ""
    labels = graph.entity_labels
    for index, (h, r, t) in enumerate(graph.triples.tolist()):
        relation = graph.relation_labels[r].replace("_", " ")
        head, tail = labels[h] or graph.entities[h], labels[t] or graph.entities[t]
        sentence = f"{head} {relation} {tail} ."
        base = len(text) + (1 if text else 0)
        spans.append({"start": base, "end": base + len(head), "kind": "entity", "label": "", "entity_id": h,
                      "source": "gold"})
        tail_start = base + len(head) + 1 + len(relation) + 1
        spans.append({"start": tail_start, "end": tail_start + len(tail), "kind": "entity", "label": "",
                      "entity_id": t, "source": "gold"})
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


def prepare_data(run_dir: str | Path, config: RunConfig, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Write corpus/documents.jsonl and (when the source has one) kg/ for the configured source."""
    from kept.commands.data import build_pykeen_run, build_triples_run, build_wikipedia_sample
    from kept.corpus import load_documents, write_documents

    paths = run_paths(run_dir)
    data = config.data
    info: dict[str, Any] = {"source": data.source}

    def corpus_from_files() -> int:
        if data.corpus is None:
            raise KeptError(f"data.source '{data.source}' needs data.corpus", where="data.corpus",
                            fix="give a txt/jsonl/parquet file or a saved HF dataset directory")
        documents = load_documents(data.corpus, text_field=data.text_field, id_field=data.id_field,
                                   title_field=data.title_field, max_documents=data.max_documents)
        return write_documents(documents, paths.documents)

    if data.source == "wikipedia_sample":
        stats = build_wikipedia_sample(paths.root, source=data.wikipedia_dump, max_documents=data.max_documents)
        info.update({k: v for k, v in stats.items() if isinstance(v, (int, float, str))})
    elif data.source == "pykeen":
        info.update(build_pykeen_run(data.pykeen_dataset, paths.root))
        if data.corpus is not None:
            info["documents"] = corpus_from_files()
        else:
            from kg import KnowledgeGraph

            graph = KnowledgeGraph.load(paths.kg)
            info["documents"] = write_documents(verbalize_graph(graph, data.max_documents), paths.documents)
    elif data.source == "files":
        info["documents"] = corpus_from_files()
        if data.kg_triples is not None:
            info.update(build_triples_run(data.kg_triples, paths.root, labels=data.kg_labels, aliases=data.kg_aliases))
    elif data.source == "fewrel":
        info.update(prepare_fewrel(paths, config))
    log(f"data: {info.get('documents', '?')} documents" + (f", {info['entities']} entities" if "entities" in info else ""))
    return info


def prepare_fewrel(paths: RunPaths, config: RunConfig) -> dict[str, Any]:
    """FewRel sentences as documents with gold head/tail spans, and their (head, relation, tail) KG."""
    from kg import AliasIndex, KnowledgeGraph

    from kept.corpus import write_documents
    from kept.fewrel import fewrel_documents, fewrel_entities, fewrel_triples, load_fewrel

    data = config.data
    if data.corpus is None:
        raise KeptError("data.source 'fewrel' needs data.corpus", where="data.corpus",
                        fix="give a FewRel JSON file or a directory of them")
    dataset = load_fewrel(data.corpus)
    if data.max_documents is not None:
        dataset.examples = dataset.examples[: data.max_documents]
    entities = fewrel_entities(dataset)
    triples = fewrel_triples(dataset)
    ids = [kb for kb, _ in entities]
    relations = sorted({r for _, r, _ in triples}) or ["related_to"]
    index = {kb: i for i, kb in enumerate(ids)}
    rel_index = {r: i for i, r in enumerate(relations)}
    graph = KnowledgeGraph(ids, relations, [(index[h], rel_index[r], index[t]) for h, r, t in triples],
                           entity_labels=[name for _, name in entities],
                           relation_labels=[dataset.relation_names.get(r, r) for r in relations],
                           metadata={"source": f"fewrel:{data.corpus}"})
    graph.save(paths.kg)
    AliasIndex.from_graph(graph).save(paths.aliases)
    count = write_documents(fewrel_documents(dataset, index), paths.documents)
    return {"documents": count, "entities": graph.num_entities, "relations": graph.num_relations,
            "triples": graph.num_triples}


# ------------------------------------------------------------------ stage definitions

def _stage_spec(stage: str, config: RunConfig, paths: RunPaths) -> tuple[Any, list[Path], list[Path]]:
    """(configuration part, inputs, outputs) of a stage."""
    from kept.config import resolve_init_from, training_view
    from kept.optim import resolve_train_defaults

    c = config.to_dict()
    kg_files = [paths.kg / "entities.tsv", paths.kg / "relations.tsv", paths.kg / "triples.tsv"]
    if stage == "data":
        data = config.data
        inputs = [p for p in (data.corpus, data.wikipedia_dump, data.kg_triples, data.kg_labels, data.kg_aliases)
                  if p is not None]
        outputs = [paths.documents] + (kg_files if has_kg(config) else [])
        return c["data"], inputs, outputs
    if stage == "kg":
        return c["kg"], kg_files, [paths.embeddings, paths.kg_metrics]
    if stage == "annotate":
        inputs = [paths.documents] + ([paths.aliases, paths.kg / "entities.tsv"] if has_kg(config) else [])
        return c["annotation"], inputs, [paths.annotated, paths.annotation_stats]
    if stage == "encode":
        init_from = resolve_init_from(config.model.init_from, config.runs_dir)
        inputs = [paths.annotated] + ([init_from / "tokenizer.json"] if init_from else [])
        return ({"tokenizer": c["tokenizer"], "encode": c["encode"], "init_from": config.model.init_from},
                inputs, [paths.tokenizer, paths.encoded_train, paths.encoded_validation])
    if stage == "pretrain":
        inputs = [paths.encoded_train, paths.encoded_validation, paths.tokenizer]
        if config.model.fusion:
            inputs.append(paths.embeddings)
        # null train.* defaults compare as the values they resolve to: pretrain writes them into config.yaml
        resolved, _ = resolve_train_defaults(config)
        return training_view(resolved), inputs, [paths.model / "config.json"]
    if stage == "evaluate":
        return c["eval"], [paths.model, paths.encoded_validation], [paths.eval / "metrics.json"]
    if stage == "report":
        return {}, [paths.eval / "metrics.json"], [paths.eval / "report.md"]
    raise KeptError(f"unknown stage '{stage}'", where="--stages", fix=f"choose from {', '.join(STAGES)}")


def _run_stage(stage: str, run_dir: Path, config: RunConfig, log: Callable[[str], None], progress: bool,
               restart_pretrain: bool = False) -> str:
    paths = run_paths(run_dir)
    if stage == "data":
        prepare_data(run_dir, config, log)
    elif stage == "kg":
        from kept.commands.kg import embed_run_dir
        from kept.config import section_object

        metrics = embed_run_dir(run_dir, section_object(config, "kg"))
        log(f"kg: {config.kg.get('model')} embeddings, MRR {metrics.get('mrr', float('nan')):.3f}")
    elif stage == "annotate":
        from kept.annotation import annotate_run_dir

        from kept.config import section_object

        stats = annotate_run_dir(run_dir, section_object(config, "annotation"))
        log(f"annotate: {stats.get('documents', '?')} documents annotated")
    elif stage == "encode":
        from kept.encode import encode_run

        encode_run(run_dir, config, log=log)
    elif stage == "pretrain":
        from kept.pretrain import pretrain_run

        result = pretrain_run(run_dir, config, log=log, progress=progress, restart=restart_pretrain)
        log(f"pretrain: {result.steps} steps, train loss {result.train_loss}, eval loss {result.eval_loss}")
    elif stage == "evaluate":
        from kept.evaluate import evaluate_run_dir

        evaluate_run_dir(run_dir, config, progress=log)
        log(f"evaluate: {paths.eval / 'metrics.json'}")
    elif stage == "report":
        from kept.report import report_run_dir

        report_run_dir(run_dir)
        log(f"report: {paths.eval / 'report.md'}")
    return "ran"


def stage_needed(stage: str, config: RunConfig) -> bool:
    if stage == "kg":
        return has_kg(config)
    return True


def check_stage_names(stages: Sequence[str], option: str) -> None:
    """Refuse a stage name that is not one of :data:`STAGES`, naming the option it came with."""
    for stage in stages:
        if stage not in STAGES:
            raise KeptError(f"unknown stage '{stage}'", where=option, fix=f"choose from {', '.join(STAGES)}")


def run_pipeline(config: RunConfig, run_dir: str | Path | None = None, *, stages: Sequence[str] | None = None,
                 force: Sequence[str] = (), restart_pretrain: bool = False,
                 log: Callable[[str], None] = lambda _: None, progress: bool = True) -> RunResult:
    """Run the configured stages in order; skip the ones whose outputs and stamp are current.

    ``stages``: a subset to consider (default: all). ``force``: stages to run even when done (and
    therefore every stage after them). Holds the run directory's lock for the whole run.
    """
    run_dir = Path(run_dir) if run_dir is not None else config.run_dir()
    wanted = list(stages) if stages else list(STAGES)
    check_stage_names(wanted, "--stages")
    check_stage_names(force, "--force")
    _check_config(config)
    result = RunResult(run_dir)
    make_run_dir(run_dir)
    with RunLock(run_dir, "kept run"):  # the lock also clears a killed writer's temporaries
        save_config(config, run_dir)
        dirty = False  # once a stage runs, every later stage runs too
        for stage in STAGES:
            if stage not in wanted:
                continue
            if not stage_needed(stage, config):
                result.outcomes.append(StageOutcome(stage, "not needed", detail="no KG in this run"))
                continue
            paths = run_paths(run_dir)
            part, inputs, outputs = _stage_spec(stage, config, paths)
            fp = stamp_fingerprint(part, inputs)
            if not dirty and stage not in force and stage_done(run_dir, stage, fp, outputs):
                result.outcomes.append(StageOutcome(stage, "skipped", detail="done and current"))
                log(f"{stage}: done, skipped")
                continue
            started, cpu_started = time.time(), time.process_time()
            _run_stage(stage, run_dir, config, log, progress, restart_pretrain)
            dirty = True
            # the stamp fingerprints the inputs as they are now (after the stage ran)
            fp = stamp_fingerprint(part, inputs)
            if is_main_process():
                write_stamp(run_dir, stage, fp, part, extra={"seconds": round(time.time() - started, 2),
                                                             "cpu_seconds": round(time.process_time() - cpu_started, 2)})
            result.outcomes.append(StageOutcome(stage, "ran", round(time.time() - started, 2)))
    return result


def _check_config(config: RunConfig) -> None:
    """Problems that would only surface stages later."""
    if config.model.fusion and not has_kg(config):
        raise KeptError("model.fusion is on but the run has no knowledge graph", where="data.kg_triples",
                        fix="give data.kg_triples, or set model.fusion: false")
    detectors = [d.get("type") for d in config.annotation.get("detectors", [])]
    if not has_kg(config) and "gazetteer" in detectors and config.annotation.get("missing_kg") == "error":
        raise KeptError("the annotation uses the KG gazetteer but the run has no knowledge graph",
                        where="annotation.detectors",
                        fix="give data.kg_triples, remove the gazetteer detector, or set annotation.missing_kg: skip")
    if config.data.source in ("files", "fewrel") and config.data.corpus is None:
        raise KeptError(f"data.source '{config.data.source}' needs data.corpus", where="data.corpus",
                        fix="give the corpus file or directory")
    if config.model.init_from:
        from kept.config import resolve_init_from

        resolve_init_from(config.model.init_from, config.runs_dir)
