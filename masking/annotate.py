"""Annotate a corpus with spans: detectors -> overlap resolution -> ``spans`` column (``datasets`` pipeline).

``annotate(dataset, config, alias_index)`` runs one batched ``Dataset.map`` (``num_proc`` workers, each
building its detectors once; spaCy detectors share one ``nlp.pipe`` with only the needed components).
Results are cached by a content fingerprint (input dataset fingerprint + config + alias index + code
version), and a corpus can be split with ``num_shards``/``shard_index`` to fan out across machines;
``merge_annotated_shards`` puts the pieces back together.

``annotate_run_dir(run_dir, config)`` is the product entry point (``kept annotate``, ``kept run``).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from kg._io import atomic_dir, atomic_write_json
from masking.detectors.config import AnnotationConfig, NPMIConfig, build_detectors, gazetteer_case_modes
from masking.errors import MaskingError
from masking.spans import SPAN_FIELDS, Span, check_spans, resolve_overlaps
from masking.stats import doc_counts, finalize_stats, merge_counts

ANNOTATION_VERSION = "1"  # bump when detector output changes for the same config (invalidates caches)
_STATS_COLUMN = "_annotation_counts"
_DETECTOR_CACHE: dict[str, tuple[list[Any], Any]] = {}  # built detectors per (config, KG, nlp) in this process
_DETECTOR_CACHE_SIZE = 4


def span_features() -> Any:
    """The Arrow schema of one Span (``datasets.Features`` value)."""
    from datasets import Value

    return {"start": Value("int32"), "end": Value("int32"), "kind": Value("string"), "label": Value("string"),
            "entity_id": Value("int64"), "source": Value("string")}


def document_features() -> Any:
    """Schema of ``corpus/documents.jsonl`` and ``corpus/annotated/``: id, title, text, spans."""
    from datasets import Features, List, Value

    return Features({"id": Value("string"), "title": Value("string"), "text": Value("string"),
                     "spans": List(span_features())})


# ------------------------------------------------------------------------------------------------ reading

def _clean_text(text: str, policy: str, where: str, line: int) -> tuple[str, bool]:
    """Lone surrogates (undecodable bytes smuggled through JSON) -> U+FFFD (same length) or an error."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        if policy == "error":
            raise MaskingError("the text holds undecodable characters (lone UTF-16 surrogates)", where=where,
                               line=line, fix="re-encode the corpus as UTF-8, or set undecodable='replace' to "
                                               "replace them with U+FFFD") from None
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text), True


def iter_documents(path: str | Path, *, undecodable: str = "error") -> Iterator[dict[str, Any]]:
    """Documents of a ``documents.jsonl`` file, checked line by line (MaskingError names file:line)."""
    path = Path(path)
    seen: set[str] = set()
    try:
        handle = path.open("rb")
    except OSError as error:
        raise MaskingError(f"cannot read the corpus: {error.strerror}", where=path,
                           fix="run `kept data ...` first or check the path") from None
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                if undecodable == "error":
                    raise MaskingError(f"line is not UTF-8 (byte {error.start})", where=path, line=line_no,
                                       fix="re-encode the corpus as UTF-8 (e.g. iconv -f latin1 -t utf-8), or set "
                                           "undecodable='replace'") from None
                line = raw.decode("utf-8", "replace")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise MaskingError(f"invalid JSON: {error.msg}", where=path, line=line_no,
                                   fix="each line must be one JSON object {id, title, text, spans}") from None
            if not isinstance(record, dict) or not isinstance(record.get("text", ""), (str, type(None))):
                raise MaskingError("a document must be a JSON object with a string 'text'", where=path,
                                   line=line_no, fix='write {"id": ..., "title": ..., "text": "...", "spans": []}')
            doc_id = str(record.get("id", line_no))
            if doc_id in seen:
                raise MaskingError(f"duplicate document id {doc_id!r}", where=path, line=line_no,
                                   fix="give every document a unique id")
            seen.add(doc_id)
            text, _ = _clean_text(record.get("text") or "", undecodable, str(path), line_no)
            spans = record.get("spans") or []
            if not isinstance(spans, list):
                raise MaskingError("'spans' must be a list", where=path, line=line_no, fix="write spans as a JSON list")
            try:
                spans, _ = check_spans(text, spans, doc_id=doc_id, on_invalid="error")
            except MaskingError as error:
                raise MaskingError(f"{error.where}: {error.what}", where=path, line=line_no, fix=error.fix) from None
            yield {"id": doc_id, "title": str(record.get("title") or ""), "text": text, "spans": spans}


def _file_digest(path: Path) -> str:
    import xxhash

    digest = xxhash.xxh64()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _generate(path: str, digest: str, undecodable: str) -> Iterator[dict[str, Any]]:  # digest keys the cache
    yield from iter_documents(path, undecodable=undecodable)


def load_documents(path: str | Path, *, cache_dir: str | Path | None = None, undecodable: str = "error") -> Any:
    """``documents.jsonl`` -> ``datasets.Dataset`` (id, title, text, spans), cached by the file's content hash."""
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    path = Path(path)
    if not path.exists():
        raise MaskingError("corpus file not found", where=path,
                           fix="write corpus/documents.jsonl first (kept data ...) or pass the right run directory")
    with path.open("rb") as handle:
        if not any(line.strip() for line in handle):
            raise MaskingError("the corpus has no documents", where=path,
                               fix="write one JSON document per line ({id, title, text, spans}) or rebuild the corpus")
    digest = _file_digest(path)
    try:
        return Dataset.from_generator(_generate, features=document_features(),
                                      cache_dir=str(cache_dir) if cache_dir else None,
                                      gen_kwargs={"path": str(path), "digest": digest, "undecodable": undecodable},
                                      fingerprint=f"kept-docs-{digest}-{undecodable}")
    except DatasetGenerationError as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, MaskingError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, MaskingError):
            raise cause from None
        raise


def documents_from_records(records: Sequence[Mapping[str, Any]]) -> Any:
    """A small in-memory corpus (list of {id, title, text, spans}) as a ``datasets.Dataset``."""
    from datasets import Dataset

    rows = [{"id": str(r.get("id", i)), "title": str(r.get("title") or ""), "text": r.get("text") or "",
             "spans": list(r.get("spans") or [])} for i, r in enumerate(records)]
    for row in rows:
        row["spans"], _ = check_spans(row["text"], row["spans"], doc_id=row["id"], on_invalid="error")
    if not rows:
        return Dataset.from_dict({"id": [], "title": [], "text": [], "spans": []}, features=document_features())
    return Dataset.from_list(rows, features=document_features())


# ------------------------------------------------------------------------------------------------ annotating

def _alias_digest(alias_index: Any) -> str:
    import xxhash

    if alias_index is None:
        return "none"
    digest = xxhash.xxh64()
    if hasattr(alias_index, "entries"):
        for alias, entity_id, count in alias_index.entries():
            digest.update(f"{alias}\t{entity_id}\t{count}\n".encode("utf-8", "surrogatepass"))
    else:
        for alias, ids in alias_index.surface_forms():
            digest.update(f"{alias}\t{ids}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def clear_detector_cache() -> None:
    """Forget the detectors (and spaCy pipelines) that ``annotate`` keeps between calls in this process."""
    _DETECTOR_CACHE.clear()


class _Annotator:
    """The ``Dataset.map`` function. Detectors are built lazily once per process (never pickled)."""

    def __init__(self, config: AnnotationConfig, alias_index: Any, entity_labels: Sequence[str] | None,
                 fitted: dict[int, Any], nlp: Any = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.alias_index = alias_index
        self.entity_labels = list(entity_labels) if entity_labels is not None else None
        self.fitted = fitted  # detector position -> fitted NPMI detector
        self.nlp = nlp
        self.progress = progress
        self.progress_queue: Any = None  # worker processes report batch sizes here (num_proc > 1)
        self.cache_key: str = ""
        self._detectors: list[Any] | None = None
        self._linker: Any = None
        self._inputs: bytes | None = None  # (alias_index, entity_labels, fitted) pickled once for the workers
        self._inputs_pending = False  # True in a worker until ``_inputs`` is unpickled (only on a cache miss)
        # at equal offsets: gold first, then detectors in configuration order
        self.source_priority = sorted((d.name or d.type for d in config.detectors), key=lambda n: n != "gold")

    def __getstate__(self) -> dict[str, Any]:
        """What a ``num_proc`` worker receives. ``datasets`` pickles the map function with dill once per
        worker job, serially in the parent; dill walks an alias index of 26k aliases in pure Python (0.6 s
        a job), which delayed every further worker by that much and took a core from the first one. The
        heavy inputs therefore travel as one standard-pickle payload (35 ms, made once), which a worker
        unpickles only if it does not already have the detectors (forked workers inherit them)."""
        if self._inputs is None and not self._inputs_pending:
            try:
                self._inputs = pickle.dumps((self.alias_index, self.entity_labels, self.fitted),
                                            protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - not picklable by the standard pickler: leave them to dill
                self._inputs = None
        state = dict(self.__dict__)
        state["_detectors"] = None
        state["nlp"] = None
        state["progress"] = None
        state["_linker"] = None
        if self._inputs is not None:
            state.update(alias_index=None, entity_labels=None, fitted={}, _inputs_pending=True)
        return state

    def _restore_inputs(self) -> None:
        if self._inputs_pending and self._inputs is not None:
            # in-process: bytes made by this run's parent in __getstate__, never read from a file
            self.alias_index, self.entity_labels, self.fitted = pickle.loads(self._inputs)  # in-process
        self._inputs_pending = False

    def detectors(self) -> list[Any]:
        """Built once per process and kept in a small module cache keyed by ``cache_key``: forked workers
        inherit the parent's (``annotate`` builds them before starting workers), so they load no model."""
        if self._detectors is None:
            from masking.detectors.linking import MentionLinker

            cached = _DETECTOR_CACHE.get(self.cache_key) if self.cache_key else None
            if cached is None:
                self._restore_inputs()
                built = build_detectors(self.config, self.alias_index, entity_labels=self.entity_labels,
                                        nlp=self.nlp)
                for position, detector in self.fitted.items():
                    built[position] = detector
                cached = (built, MentionLinker(self.alias_index))
                if self.cache_key:
                    while len(_DETECTOR_CACHE) >= _DETECTOR_CACHE_SIZE:
                        _DETECTOR_CACHE.pop(next(iter(_DETECTOR_CACHE)))
                    _DETECTOR_CACHE[self.cache_key] = cached
            self._detectors, self._linker = cached
        return self._detectors

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        from masking.detectors.spacy_detectors import run_doc_detectors, split_long_text

        detectors = self.detectors()
        texts: list[str] = [t or "" for t in batch["text"]]
        ids = [str(i) for i in batch["id"]] if "id" in batch else [str(i) for i in range(len(texts))]
        inputs = batch.get("spans") or [[] for _ in texts]
        live = [i for i, t in enumerate(texts) if t.strip()]  # empty documents skip the detectors
        live_texts = [texts[i] for i in live]
        per_source: list[dict[str, list[Span]]] = [dict() for _ in texts]

        doc_detectors = [d for d in detectors if hasattr(d, "spans_from_doc")]
        split_counts = [0] * len(texts)
        if doc_detectors and live_texts:
            nlp = doc_detectors[0].nlp
            for i in live:
                pieces = len(split_long_text(texts[i], nlp.max_length))
                if pieces > 1 and self.config.long_documents == "error":
                    raise MaskingError(f"document has {len(texts[i])} characters, more than spaCy's max_length "
                                       f"{nlp.max_length}", where=f"document {ids[i]!r} field text",
                                       fix="set long_documents='split' (split at line breaks) or raise max_length "
                                           "(about 1 GB of memory per 100,000 characters for parser/NER)")
                split_counts[i] = pieces - 1
            for i, spans in zip(live, run_doc_detectors(doc_detectors, live_texts, self.config.batch_size)):
                for span in spans:
                    per_source[i].setdefault(span["source"], []).append(span)
        for detector in detectors:
            if hasattr(detector, "spans_from_doc"):
                continue
            if getattr(detector, "uses_input_spans", False):
                results = detector.detect(texts, spans=inputs, ids=ids)
                targets = range(len(texts))
            else:
                results = detector.detect(live_texts)
                targets = live
            for i, spans in zip(targets, results):
                if spans:
                    per_source[i].setdefault(detector.name, []).extend(spans)

        out_spans: list[list[Span]] = []
        counts: list[str] = []
        for i, text in enumerate(texts):
            candidates = [s for spans in per_source[i].values() for s in spans]
            resolved = resolve_overlaps(candidates, self.source_priority)
            gold_input, dropped = check_spans(text, inputs[i] or [], doc_id=ids[i], on_invalid="drop")
            gold = [s for s in gold_input if s["source"] == "gold"]
            record = doc_counts(text, resolved, linker=self._linker, candidates=per_source[i], gold=gold)
            record["documents"] = 1
            record["empty_documents"] = int(not text.strip())
            record["split_documents"] = int(split_counts[i] > 0)
            record["split_pieces"] = split_counts[i]
            record["overlaps_removed"] = len(candidates) - len(resolved)
            record["invalid_input_spans"] = dropped
            out_spans.append(resolved)
            counts.append(json.dumps(record, separators=(",", ":")))
        if self.progress is not None:
            self.progress(len(texts))
        elif self.progress_queue is not None:
            self.progress_queue.put(len(texts))
        return {"spans": out_spans, _STATS_COLUMN: counts}


class _QueueListener:
    """Collects progress from worker processes (a manager queue) on a thread of the main process."""

    def __init__(self, callback: Callable[[int], None]) -> None:
        import threading

        import multiprocess

        self._manager = multiprocess.Manager()
        self.queue = self._manager.Queue()
        self._callback = callback
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            n = self.queue.get()
            if n is None:
                return
            self._callback(n)

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=10)
        self._manager.shutdown()


def shard_dataset(dataset: Any, num_shards: int, shard_index: int) -> Any:
    """Contiguous shard ``shard_index`` of ``num_shards`` (as ``Dataset.shard(contiguous=True)``; empty when
    there are fewer documents than shards)."""
    size = len(dataset)
    base, extra = divmod(size, num_shards)
    start = base * shard_index + min(shard_index, extra)
    end = start + base + (1 if shard_index < extra else 0)
    if (start, end) == (0, size):
        return dataset
    return dataset.select(range(start, end) if end > start else [])


def _fit_corpus_detectors(config: AnnotationConfig, dataset: Any) -> dict[int, Any]:
    """Detectors learned from the corpus (NPMI collocations) are fitted once, on the whole corpus (before sharding)."""
    from masking.detectors.config import npmi_detector

    fitted: dict[int, Any] = {}
    for position, cfg in enumerate(config.detectors):
        if isinstance(cfg, NPMIConfig) and not cfg.path:
            limit = len(dataset) if cfg.fit_max_documents is None else min(len(dataset), cfg.fit_max_documents)
            texts = (row["text"] or "" for row in dataset.select(range(limit)).select_columns(["text"]))
            fitted[position] = npmi_detector(cfg, texts)
    return fitted


def annotate_with_stats(dataset: Any, config: AnnotationConfig | None = None, alias_index: Any = None, *,
                        entity_labels: Sequence[str] | None = None, nlp: Any = None, num_shards: int = 1,
                        shard_index: int = 0, progress: Callable[[int], None] | None = None,
                        load_from_cache_file: bool = True) -> tuple[Any, dict[str, Any]]:
    """Annotate ``dataset`` (columns ``text``; optional ``id``, ``title``, ``spans`` with gold spans).

    Returns ``(dataset with a resolved "spans" column, statistics)``. With ``num_shards > 1`` only shard
    ``shard_index`` (contiguous) is annotated. ``progress(n)`` is called as batches finish (from worker processes too).
    """
    config = config or AnnotationConfig()
    if "text" not in dataset.column_names:
        raise MaskingError(f"the dataset has no 'text' column (columns: {dataset.column_names})", where="dataset",
                           fix="name the document text column 'text' (dataset.rename_column(...))")
    if not 0 <= shard_index < num_shards:
        raise MaskingError(f"shard index {shard_index} is outside 0..{num_shards - 1}", where="--shard-index",
                           fix="use 0 <= shard index < number of shards")
    if alias_index is None and any(d.type == "gazetteer" for d in config.detectors):
        if config.missing_kg == "error":
            raise MaskingError("the gazetteer detector needs a KG alias index", where="annotation config",
                               fix="pass alias_index (kg.AliasIndex), drop the gazetteer detector, or set "
                                   "missing_kg='skip'")
        config = config.model_copy(update={"detectors": [d for d in config.detectors if d.type != "gazetteer"]})
    fitted = _fit_corpus_detectors(config, dataset)
    if num_shards > 1:
        dataset = shard_dataset(dataset, num_shards, shard_index)
    if "spans" not in dataset.column_names:
        from datasets import List

        dataset = dataset.add_column("spans", [[] for _ in range(len(dataset))],
                                     feature=List(span_features()))
    if _STATS_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(_STATS_COLUMN)
    if len(dataset) == 0:  # an empty corpus or shard: nothing to map
        stats = finalize_stats({"documents": 0})
        stats.update(config=config.model_dump(mode="json"), shard={"num_shards": num_shards,
                                                                   "shard_index": shard_index},
                     gazetteer_case=gazetteer_case_modes(config, alias_index))
        return dataset, stats

    import xxhash

    fitted_digest = xxhash.xxh64(json.dumps({k: sorted(map(list, v.scores)) for k, v in fitted.items()},
                                            default=str).encode()).hexdigest()
    labels_digest = xxhash.xxh64("\n".join(entity_labels or []).encode("utf-8", "surrogatepass")).hexdigest()
    nlp_tag = "none" if nlp is None else f"{nlp.meta.get('name')}-{nlp.meta.get('version')}-{nlp.pipe_names}"
    alias_digest = _alias_digest(alias_index)
    output_config = config.model_copy(update={"num_proc": 1, "map_batch_size": 1}).model_dump_json()
    fingerprint = xxhash.xxh64("|".join([
        ANNOTATION_VERSION, dataset._fingerprint, output_config, alias_digest,
        labels_digest, fitted_digest, nlp_tag,
    ]).encode()).hexdigest()
    num_proc = config.num_proc if config.num_proc > 1 and len(dataset) >= config.num_proc else None
    reported = [0]

    def report(n: int) -> None:
        reported[0] += n
        if progress is not None:
            progress(n)

    annotator = _Annotator(config, alias_index, entity_labels, fitted, nlp=nlp,
                           progress=report if num_proc is None and progress is not None else None)
    annotator.cache_key = xxhash.xxh64("|".join([
        output_config, alias_digest, labels_digest,
        fitted_digest, "none" if nlp is None else str(id(nlp))]).encode()).hexdigest()
    if num_proc is not None:
        annotator.detectors()  # load models before the workers fork, so they inherit them
    listener = None
    if num_proc is not None and progress is not None:
        listener = _QueueListener(report)
        annotator.progress_queue = listener.queue
    from datasets import Value

    features = dataset.features.copy()
    from datasets import List

    features["spans"] = List(span_features())
    features[_STATS_COLUMN] = Value("string")
    work, map_fingerprint, restore = dataset, fingerprint, None
    if num_proc is not None:
        # Dataset.map(num_proc=k) gives worker r the r-th contiguous block of rows; corpora are often ordered
        # (long articles first, one source after another), so one worker can get most of the text (61% on
        # the benchmark's Wikipedia paragraphs) and the others wait. Worker r gets rows r, r+k, r+2k, ...
        # instead (same block sizes), and the original order is restored afterwards (indices only).
        size = len(dataset)
        order = [i for rank in range(num_proc) for i in range(rank, size, num_proc)]
        restore = [0] * size
        for position, row in enumerate(order):
            restore[row] = position
        map_fingerprint = xxhash.xxh64(f"{fingerprint}|round-robin|{num_proc}".encode()).hexdigest()
        work = dataset.select(order, keep_in_memory=True, new_fingerprint=f"{map_fingerprint}-input")
    try:
        mapped = work.map(annotator, batched=True, batch_size=config.map_batch_size, num_proc=num_proc,
                          features=features, new_fingerprint=map_fingerprint,
                          load_from_cache_file=load_from_cache_file, desc="annotating")
        if restore is not None:
            mapped = mapped.select(restore, keep_in_memory=True, new_fingerprint=fingerprint)
    except Exception as error:  # noqa: BLE001 - surface MaskingError raised in worker processes
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, MaskingError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, MaskingError):
            raise cause from None
        raise
    finally:
        if listener is not None:
            listener.close()
    if progress is not None and reported[0] < len(mapped):  # loaded from the cache
        progress(len(mapped) - reported[0])
    totals: dict[str, Any] = {}
    for record in mapped[_STATS_COLUMN]:
        merge_counts(totals, json.loads(record))
    stats = finalize_stats(totals)
    stats["config"] = config.model_dump(mode="json")
    stats["gazetteer_case"] = gazetteer_case_modes(config, alias_index)  # exact or folded, and why
    stats["shard"] = {"num_shards": num_shards, "shard_index": shard_index}
    stats["fingerprint"] = fingerprint
    return mapped.remove_columns(_STATS_COLUMN), stats


def annotate(dataset: Any, config: AnnotationConfig | None = None, alias_index: Any = None, **kwargs: Any) -> Any:
    """``annotate_with_stats`` without the statistics: the dataset with its resolved ``spans`` column."""
    return annotate_with_stats(dataset, config, alias_index, **kwargs)[0]


# ------------------------------------------------------------------------------------------------ run directory

def _shard_suffix(num_shards: int, shard_index: int) -> str:
    return "" if num_shards == 1 else f"shard-{shard_index:05d}-of-{num_shards:05d}"


def _atomic_write_json(path: Path, payload: Mapping[str, Any]) -> None:
    atomic_write_json(path, payload, error=MaskingError, sort_keys=True)


def atomic_save_dataset(dataset: Any, target: str | Path) -> None:
    """``dataset.save_to_disk`` into a sibling temporary directory, then swap it in place of ``target``."""
    with atomic_dir(target, error=MaskingError) as tmp:
        dataset.save_to_disk(str(tmp))


def check_entity_ids(dataset: Any, num_entities: int, where: str | Path) -> None:
    """MaskingError when a span links to an entity id that the run's KG does not have."""
    for start in range(0, len(dataset), 1000):
        batch = dataset[start:start + 1000]
        for offset, spans in enumerate(batch["spans"]):
            for i, span in enumerate(spans or []):
                entity_id = span["entity_id"]
                if entity_id is not None and not -1 <= entity_id < num_entities:
                    raise MaskingError(
                        f"document {batch['id'][offset]!r} spans[{i}] links to entity id {entity_id}, but the KG has "
                        f"{num_entities} entities (ids 0..{num_entities - 1})", where=where,
                        fix="use ids from kg/entities.tsv (or -1 for an unlinked span), or rebuild the KG that "
                            "the corpus was linked to")


def load_run_kg(run_dir: str | Path, *, required: bool = True) -> tuple[Any, list[str] | None]:
    """``(alias index, entity labels)`` from ``RUN_DIR/kg`` (aliases.tsv, else built from entities.tsv)."""
    run_dir = Path(run_dir)
    kg_dir = run_dir / "kg"
    if not (kg_dir / "entities.tsv").exists():
        if required:
            raise MaskingError("no knowledge graph in the run directory", where=kg_dir / "entities.tsv",
                               fix="build the KG first (kept data ... / kept kg ...) or annotate without the "
                                   "gazetteer (--detectors ner,noun_chunk,gold)")
        return None, None
    from kg import AliasIndex, KnowledgeGraph

    graph = KnowledgeGraph.load(kg_dir)
    aliases_path = kg_dir / "aliases.tsv"
    if aliases_path.exists():
        alias_index = AliasIndex.load(aliases_path, num_entities=graph.num_entities)
    else:
        alias_index = AliasIndex.from_graph(graph)
    if len(alias_index) == 0 and required:
        raise MaskingError("the KG has no labels or aliases to match", where=aliases_path,
                           fix="write kg/aliases.tsv (alias, entity_id, count) or annotate without the gazetteer")
    return alias_index, list(graph.entity_labels)


def annotate_run_dir(run_dir: str | Path, config: AnnotationConfig | None = None, *, num_shards: int = 1,
                     shard_index: int = 0, progress: Callable[[int], None] | None = None,
                     on_total: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Annotate ``RUN_DIR/corpus/documents.jsonl`` -> ``RUN_DIR/corpus/annotated/`` + ``annotation_stats.json``.

    With shards, writes ``annotated/shard-IIIII-of-KKKKK/`` and ``annotation_stats.shard-...json``; once all
    shards are there, ``merge_annotated_shards(run_dir)`` (called automatically by the last shard to finish)
    concatenates them. Returns the statistics.
    """
    config = config or AnnotationConfig()
    run_dir = Path(run_dir)
    corpus_dir = run_dir / "corpus"
    needs_gazetteer = any(d.type == "gazetteer" for d in config.detectors)
    alias_index, labels = load_run_kg(run_dir, required=needs_gazetteer and config.missing_kg == "error")
    if needs_gazetteer and alias_index is None:
        config = config.model_copy(update={"detectors": [d for d in config.detectors if d.type != "gazetteer"]})
    dataset = load_documents(corpus_dir / "documents.jsonl", cache_dir=corpus_dir / ".cache",
                             undecodable=config.undecodable)
    if labels is not None:
        check_entity_ids(dataset, len(labels), corpus_dir / "documents.jsonl")
    if on_total is not None:
        on_total(len(shard_dataset(dataset, num_shards, shard_index)))
    annotated, stats = annotate_with_stats(dataset, config, alias_index, entity_labels=labels,
                                           num_shards=num_shards, shard_index=shard_index, progress=progress)
    stats["kg_linked"] = alias_index is not None
    suffix = _shard_suffix(num_shards, shard_index)
    if not suffix:
        atomic_save_dataset(annotated, corpus_dir / "annotated")
        _atomic_write_json(corpus_dir / "annotation_stats.json", stats)
        return stats
    shards_dir = corpus_dir / "annotated.shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_dataset(annotated, shards_dir / suffix)
    _atomic_write_json(shards_dir / f"{suffix}.stats.json", stats)
    if all((shards_dir / f"{_shard_suffix(num_shards, i)}.stats.json").exists() for i in range(num_shards)):
        return merge_annotated_shards(run_dir, num_shards)
    return stats


def merge_annotated_shards(run_dir: str | Path, num_shards: int) -> dict[str, Any]:
    """Concatenate ``corpus/annotated.shards/*`` (in shard order) into ``corpus/annotated`` and sum the stats."""
    from datasets import concatenate_datasets, load_from_disk

    corpus_dir = Path(run_dir) / "corpus"
    shards_dir = corpus_dir / "annotated.shards"
    parts, totals = [], {}
    configs = set()
    for index in range(num_shards):
        suffix = _shard_suffix(num_shards, index)
        stats_path = shards_dir / f"{suffix}.stats.json"
        if not stats_path.exists():
            raise MaskingError(f"shard {index} of {num_shards} is missing", where=stats_path,
                               fix=f"run `kept annotate RUN_DIR --num-shards {num_shards} --shard-index {index}`")
        shard_stats = json.loads(stats_path.read_text(encoding="utf-8"))
        configs.add(json.dumps(shard_stats.get("config"), sort_keys=True))
        merge_counts(totals, shard_stats["counts"])
        parts.append(load_from_disk(str(shards_dir / suffix)))
    if len(configs) > 1:
        raise MaskingError("the shards were annotated with different configurations", where=shards_dir,
                           fix="re-run every shard with the same --detectors/--spacy-model options")
    stats = finalize_stats(totals)
    stats["config"] = json.loads(configs.pop())
    stats["gazetteer_case"] = shard_stats.get("gazetteer_case", {})  # the same KG and config in every shard
    stats["shard"] = {"num_shards": num_shards, "merged": True}
    atomic_save_dataset(concatenate_datasets(parts), corpus_dir / "annotated")
    _atomic_write_json(corpus_dir / "annotation_stats.json", stats)
    return stats


__all__ = ["ANNOTATION_VERSION", "SPAN_FIELDS", "annotate", "annotate_run_dir", "annotate_with_stats",
           "clear_detector_cache", "shard_dataset",
           "document_features", "documents_from_records", "iter_documents", "load_documents", "load_run_kg",
           "merge_annotated_shards", "span_features"]
