"""The ``Dataset.map`` function of annotation: one batch of documents -> resolved spans + per-document counts.

:class:`BatchAnnotator` builds its detectors once per process (kept in a small module cache so forked
workers inherit them), runs the spaCy detectors in one ``nlp.pipe`` and the others batch by batch,
resolves overlaps and counts what was found. ``masking.annotator`` sets it up and runs the map.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from typing import Any

from masking.detectors.build import build_detectors
from masking.detectors.config import AnnotationConfig
from masking.errors import MaskingError
from masking.spans import Span, check_spans, resolve_overlaps
from masking.stats import doc_counts

STATS_COLUMN = "_annotation_counts"  # per-document counts (JSON), merged into the statistics and dropped
_DETECTOR_CACHE: dict[str, tuple[list[Any], Any]] = {}  # built detectors per (config, KG, nlp) in this process
_DETECTOR_CACHE_SIZE = 4


def clear_detector_cache() -> None:
    """Forget the detectors (and spaCy pipelines, and the POS taggers' recent tags) that ``annotate`` keeps
    between calls in this process."""
    from masking.detectors.pos import clear_shared_tagging

    _DETECTOR_CACHE.clear()
    clear_shared_tagging()


class BatchAnnotator:
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
        return {"spans": out_spans, STATS_COLUMN: counts}
