from masking.align import AlignedUnits, align_spans, encode_with_units  # alignment (masking/align.py)
from masking.masking_config import STRATEGIES, MaskingConfig  # masking strategies config
from masking.collator import ErnieStageCallback, KnowledgeMaskingCollator  # MLM + dEA collator
from masking.errors import MaskingError  # error type (masking/errors.py)
from masking.spans import Span, make_span, resolve_overlaps  # the Span contract
from masking.detectors import (  # detectors (masking/detectors/)
    AnnotationConfig,
    Detector,
    DetectorConfig,
    GazetteerDetector,
    GoldSpanDetector,
    NounChunkDetector,
    NPMIPhraseDetector,
    RegexDetector,
    SpacyNERDetector,
    TermListDetector,
    build_detectors,
    load_spacy_pipeline,
)
from masking.annotate import annotate, annotate_run_dir, annotate_with_stats, load_documents  # annotation
from masking.stats import annotation_stats  # annotation statistics
