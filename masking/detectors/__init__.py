"""Detectors: texts in, Span records out. Combine them with ``AnnotationConfig`` + ``build_detectors``."""

from masking.detectors.base import AliasIndexLike, Detector, DocDetector
from masking.detectors.build import build_detectors
from masking.detectors.config import (
    AnnotationConfig,
    DetectorConfig,
    GazetteerConfig,
    GoldConfig,
    NERConfig,
    NounChunkConfig,
    NPMIConfig,
    PluginConfig,
    PosNERConfig,
    PosPhraseConfig,
    RegexConfig,
    TermsConfig,
)
from masking.detectors.gazetteer import GazetteerDetector
from masking.detectors.gazetteer_spacy import KeptGazetteer, register_spacy_components
from masking.detectors.gazetteer_table import GazetteerTable
from masking.detectors.linking import MentionLinker
from masking.detectors.npmi import NPMIPhraseDetector
from masking.detectors.plugins import register_detector, registered_detectors
from masking.detectors.pos import PosNERDetector, PosPhraseDetector
from masking.detectors.rules import GoldSpanDetector, RegexDetector, TermListDetector
from masking.detectors.spacy_detectors import NounChunkDetector, SpacyNERDetector, split_long_text
from masking.detectors.spacy_model import load_spacy_pipeline, resolve_model_name

__all__ = [
    "AliasIndexLike",
    "AnnotationConfig",
    "Detector",
    "DetectorConfig",
    "DocDetector",
    "GazetteerConfig",
    "GazetteerDetector",
    "GazetteerTable",
    "GoldConfig",
    "GoldSpanDetector",
    "KeptGazetteer",
    "MentionLinker",
    "NERConfig",
    "NPMIConfig",
    "NPMIPhraseDetector",
    "NounChunkConfig",
    "NounChunkDetector",
    "PluginConfig",
    "PosNERConfig",
    "PosNERDetector",
    "PosPhraseConfig",
    "PosPhraseDetector",
    "RegexConfig",
    "RegexDetector",
    "SpacyNERDetector",
    "TermListDetector",
    "TermsConfig",
    "build_detectors",
    "load_spacy_pipeline",
    "register_detector",
    "register_spacy_components",
    "registered_detectors",
    "resolve_model_name",
    "split_long_text",
]
