"""KEPT masking: detectors, annotation, alignment, masking strategies and the MLM + dEA collator.

The public names below are resolved lazily (module-level ``__getattr__``, PEP 562), so
``import masking`` is cheap: torch (collator), spaCy (detectors) and datasets (annotation) load
only when a name that needs them is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kg._lazy import lazy_exports

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # alignment (masking/align.py)
    "AlignedUnits": "masking.align",
    "align_spans": "masking.align",
    # batched encoding (masking/encoding.py)
    "encode_with_units": "masking.encoding",
    # masking strategies config
    "STRATEGIES": "masking.masking_config",
    "MaskingConfig": "masking.masking_config",
    # MLM + dEA collator
    "ErnieStageCallback": "masking.collator",
    "KnowledgeMaskingCollator": "masking.collator",
    # error type (masking/errors.py)
    "MaskingError": "masking.errors",
    # the Span contract
    "Span": "masking.spans",
    "make_span": "masking.spans",
    "resolve_overlaps": "masking.spans",
    # detectors (masking/detectors/)
    **{
        name: "masking.detectors"
        for name in (
            "AnnotationConfig",
            "Detector",
            "DetectorConfig",
            "GazetteerDetector",
            "GoldSpanDetector",
            "NounChunkDetector",
            "NPMIPhraseDetector",
            "PosNERDetector",
            "PosPhraseDetector",
            "RegexDetector",
            "SpacyNERDetector",
            "TermListDetector",
            "build_detectors",
            "load_spacy_pipeline",
            "register_detector",
        )
    },
    # annotation
    "annotate": "masking.annotator",
    "annotate_with_stats": "masking.annotator",
    "load_documents": "masking.documents",
    # annotation statistics
    "annotation_stats": "masking.stats",
    # word segmenters by name (jieba, pkuseg, spacy:<pipeline>)
    "SEGMENTER_NAMES": "masking.segmenters",
    "build_segmenter": "masking.segmenters",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static type checkers and IDEs see the real names
    from masking.align import AlignedUnits, align_spans
    from masking.annotator import annotate, annotate_with_stats
    from masking.collator import ErnieStageCallback, KnowledgeMaskingCollator
    from masking.detectors import (
        AnnotationConfig,
        Detector,
        DetectorConfig,
        GazetteerDetector,
        GoldSpanDetector,
        NounChunkDetector,
        NPMIPhraseDetector,
        PosNERDetector,
        PosPhraseDetector,
        RegexDetector,
        SpacyNERDetector,
        TermListDetector,
        build_detectors,
        load_spacy_pipeline,
        register_detector,
    )
    from masking.documents import load_documents
    from masking.encoding import encode_with_units
    from masking.errors import MaskingError
    from masking.masking_config import STRATEGIES, MaskingConfig
    from masking.segmenters import SEGMENTER_NAMES, build_segmenter
    from masking.spans import Span, make_span, resolve_overlaps
    from masking.stats import annotation_stats
