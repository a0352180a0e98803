"""Annotate a corpus with spans: detectors -> overlap resolution -> ``spans`` column (``datasets`` pipeline).

``annotate(dataset, config, alias_index)`` runs one batched ``Dataset.map`` (``num_proc`` workers, each
building its detectors once; spaCy detectors share one ``nlp.pipe`` with only the needed components).
Results are cached by a content fingerprint (input dataset fingerprint + config + alias index + code
version), and a corpus can be split with ``num_shards``/``shard_index`` to fan out across machines.
This module validates, fingerprints, shards and runs the map; the map function itself (and its detector
cache) lives in ``masking.batch_annotator``. Reading ``documents.jsonl`` lives in ``masking.documents``;
run directories, shard files and their merge belong to the product (``kept.annotation``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from masking.batch_annotator import STATS_COLUMN, BatchAnnotator
from masking.detectors.config import AnnotationConfig, NPMIConfig, gazetteer_case_modes
from masking.detectors.plugins import code_digest
from masking.documents import span_features
from masking.errors import MaskingError
from masking.spans import SPAN_FIELDS
from masking.stats import finalize_stats, merge_counts

ANNOTATION_VERSION = "1"  # bump when detector output changes for the same config (invalidates caches)


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
    from masking.detectors.build import npmi_detector

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
    if STATS_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(STATS_COLUMN)
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

    annotator = BatchAnnotator(
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
    features[STATS_COLUMN] = Value("string")
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
    for record in mapped[STATS_COLUMN]:
        merge_counts(totals, json.loads(record))
    stats = finalize_stats(totals)
    stats["config"] = config.model_dump(mode="json")
    stats["gazetteer_case"] = gazetteer_case_modes(config, alias_index)  # exact or folded, and why
    stats["shard"] = {"num_shards": num_shards, "shard_index": shard_index}
    stats["fingerprint"] = fingerprint
    return mapped.remove_columns(STATS_COLUMN), stats


def annotate(dataset: Any, config: AnnotationConfig | None = None, alias_index: Any = None, **kwargs: Any) -> Any:
    """``annotate_with_stats`` without the statistics: the dataset with its resolved ``spans`` column."""
    return annotate_with_stats(dataset, config, alias_index, **kwargs)[0]


__all__ = [
    "ANNOTATION_VERSION",
    "SPAN_FIELDS",
    "annotate",
    "annotate_with_stats",
    "shard_dataset",
]
