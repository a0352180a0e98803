"""Annotate a corpus with spans: detectors -> overlap resolution -> ``spans`` column (``datasets`` pipeline).

``annotate(dataset, config, alias_index)`` runs one batched ``Dataset.map`` (``num_proc`` workers, each
building its detectors once; spaCy detectors share one ``nlp.pipe`` with only the needed components).
Results are cached by a content fingerprint (input dataset fingerprint + config + alias index + code
version), and a corpus can be split with ``num_shards``/``shard_index`` to fan out across machines.
Reading ``documents.jsonl`` lives in ``masking.documents``; run directories, shard files and their merge
belong to the product (``kept.annotation``).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from typing import Any

from masking.detectors.config import AnnotationConfig, NPMIConfig, build_detectors, gazetteer_case_modes
from masking.detectors.plugins import code_digest
from masking.documents import span_features
from masking.errors import MaskingError
from masking.spans import SPAN_FIELDS, Span, check_spans, resolve_overlaps
from masking.stats import doc_counts, finalize_stats, merge_counts

ANNOTATION_VERSION = "1"  # bump when detector output changes for the same config (invalidates caches)
_STATS_COLUMN = "_annotation_counts"
_DETECTOR_CACHE: dict[str, tuple[list[Any], Any]] = {}  # built detectors per (config, KG, nlp) in this process
_DETECTOR_CACHE_SIZE = 4

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
    """Forget the detectors (and spaCy pipelines, and the POS taggers' recent tags) that ``annotate`` keeps
    between calls in this process."""
    from masking.detectors.pos import clear_shared_tagging

    _DETECTOR_CACHE.clear()
    clear_shared_tagging()


class _Annotator:
    """The ``Dataset.map`` function. Detectors are built lazily once per process (never pickled)."""

    def __init__(
        self,
        config: AnnotationConfig,
        alias_index: Any,
        entity_labels: Sequence[str] | None,
        fitted: dict[int, Any],
        nlp: Any = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
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
        self._segmenter: Any = None
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
                self._inputs = pickle.dumps(
                    (self.alias_index, self.entity_labels, self.fitted), protocol=pickle.HIGHEST_PROTOCOL
                )
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
                built = build_detectors(self.config, self.alias_index, entity_labels=self.entity_labels, nlp=self.nlp)
                for position, detector in self.fitted.items():
                    built[position] = detector
                cached = (built, MentionLinker(self.alias_index))
                if self.cache_key:
                    while len(_DETECTOR_CACHE) >= _DETECTOR_CACHE_SIZE:
                        _DETECTOR_CACHE.pop(next(iter(_DETECTOR_CACHE)))
                    _DETECTOR_CACHE[self.cache_key] = cached
            self._detectors, self._linker = cached
        return self._detectors

    @property
    def segmenter(self) -> Any:
        """The words ``token_coverage`` counts (``config.segmenter``), built once per process."""
        if self._segmenter is None and self.config.segmenter not in (None, "none"):
            from masking.segmenters import build_segmenter

            self._segmenter = build_segmenter(self.config.segmenter)
        return self._segmenter

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
                    raise MaskingError(
                        f"document has {len(texts[i])} characters, more than spaCy's max_length {nlp.max_length}",
                        where=f"document {ids[i]!r} field text",
                        fix="set long_documents='split' (split at line breaks) or raise max_length "
                        "(about 1 GB of memory per 100,000 characters for parser/NER)",
                    )
                split_counts[i] = pieces - 1
            for i, spans in zip(live, run_doc_detectors(doc_detectors, live_texts, self.config.batch_size)):
                for span in spans:
                    per_source[i].setdefault(span["source"], []).append(span)
        for detector in detectors:
            if hasattr(detector, "spans_from_doc"):
                continue
            targets: Sequence[int]
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
            record = doc_counts(
                text, resolved, linker=self._linker, candidates=per_source[i], gold=gold, segmenter=self.segmenter
            )
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


def annotate_with_stats(
    dataset: Any,
    config: AnnotationConfig | None = None,
    alias_index: Any = None,
    *,
    entity_labels: Sequence[str] | None = None,
    nlp: Any = None,
    num_shards: int = 1,
    shard_index: int = 0,
    progress: Callable[[int], None] | None = None,
    load_from_cache_file: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Annotate ``dataset`` (columns ``text``; optional ``id``, ``title``, ``spans`` with gold spans).

    Returns ``(dataset with a resolved "spans" column, statistics)``. With ``num_shards > 1`` only shard
    ``shard_index`` (contiguous) is annotated. ``progress(n)`` is called as batches finish (from worker processes too).
    """
    config = config or AnnotationConfig()
    if "text" not in dataset.column_names:
        raise MaskingError(
            f"the dataset has no 'text' column (columns: {dataset.column_names})",
            where="dataset",
            fix="name the document text column 'text' (dataset.rename_column(...))",
        )
    if not 0 <= shard_index < num_shards:
        raise MaskingError(
            f"shard index {shard_index} is outside 0..{num_shards - 1}",
            where="--shard-index",
            fix="use 0 <= shard index < number of shards",
        )
    if alias_index is None and any(d.type == "gazetteer" for d in config.detectors):
        if config.missing_kg == "error":
            raise MaskingError(
                "the gazetteer detector needs a KG alias index",
                where="annotation config",
                fix="pass alias_index (kg.AliasIndex), drop the gazetteer detector, or set missing_kg='skip'",
            )
        config = config.model_copy(update={"detectors": [d for d in config.detectors if d.type != "gazetteer"]})
    fitted = _fit_corpus_detectors(config, dataset)
    if num_shards > 1:
        dataset = shard_dataset(dataset, num_shards, shard_index)
    if "spans" not in dataset.column_names:
        from datasets import List

        dataset = dataset.add_column("spans", [[] for _ in range(len(dataset))], feature=List(span_features()))
    if _STATS_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(_STATS_COLUMN)
    if len(dataset) == 0:  # an empty corpus or shard: nothing to map
        stats = finalize_stats({"documents": 0})
        stats.update(
            config=config.model_dump(mode="json"),
            shard={"num_shards": num_shards, "shard_index": shard_index},
            gazetteer_case=gazetteer_case_modes(config, alias_index),
        )
        return dataset, stats

    import xxhash

    fitted_digest = xxhash.xxh64(
        json.dumps({k: sorted(map(list, v.scores)) for k, v in fitted.items()}, default=str).encode()
    ).hexdigest()
    labels_digest = xxhash.xxh64("\n".join(entity_labels or []).encode("utf-8", "surrogatepass")).hexdigest()
    nlp_tag = "none" if nlp is None else f"{nlp.meta.get('name')}-{nlp.meta.get('version')}-{nlp.pipe_names}"
    alias_digest = _alias_digest(alias_index)
    output_config = config.model_copy(update={"num_proc": 1, "map_batch_size": 1}).model_dump_json()
    output_config += code_digest(config.detectors)  # plug-in sources and user dictionaries
    fingerprint = xxhash.xxh64(
        "|".join(
            [
                ANNOTATION_VERSION,
                dataset._fingerprint,
                output_config,
                alias_digest,
                labels_digest,
                fitted_digest,
                nlp_tag,
            ]
        ).encode()
    ).hexdigest()
    num_proc = config.num_proc if config.num_proc > 1 and len(dataset) >= config.num_proc else None
    reported = [0]

    def report(n: int) -> None:
        reported[0] += n
        if progress is not None:
            progress(n)

    annotator = _Annotator(
        config,
        alias_index,
        entity_labels,
        fitted,
        nlp=nlp,
        progress=report if num_proc is None and progress is not None else None,
    )
    annotator.cache_key = xxhash.xxh64(
        "|".join(
            [output_config, alias_digest, labels_digest, fitted_digest, "none" if nlp is None else str(id(nlp))]
        ).encode()
    ).hexdigest()
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
        mapped = work.map(
            annotator,
            batched=True,
            batch_size=config.map_batch_size,
            num_proc=num_proc,
            features=features,
            new_fingerprint=map_fingerprint,
            load_from_cache_file=load_from_cache_file,
            desc="annotating",
        )
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


__all__ = [
    "ANNOTATION_VERSION",
    "SPAN_FIELDS",
    "annotate",
    "annotate_with_stats",
    "clear_detector_cache",
    "shard_dataset",
]
