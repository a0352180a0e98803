"""Detectors from configuration: ``build_detectors`` turns an ``AnnotationConfig`` into detector objects.

The schema itself lives in :mod:`masking.detectors.config`; detector classes are imported only when a
configuration asks for them (spaCy, jieba and the plug-ins load on demand).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from masking.detectors.base import AliasIndexLike
from masking.detectors.config import (
    AnnotationConfig,
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
from masking.errors import MaskingError


def _read_terms(cfg: TermsConfig) -> dict[str, str] | list[str]:
    if not cfg.path:
        return cfg.terms
    try:
        lines = Path(cfg.path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise MaskingError(
            f"cannot read term list: {error}",
            where=cfg.path,
            fix="give a UTF-8 file with one term per line (term<TAB>label optional)",
        ) from None
    terms: dict[str, str] = dict(cfg.terms) if isinstance(cfg.terms, dict) else {t: cfg.label for t in cfg.terms}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            term, _, label = line.partition("\t")
            terms[term.strip()] = label.strip() or cfg.label
    return terms


def build_detectors(
    config: AnnotationConfig,
    alias_index: AliasIndexLike | None = None,
    *,
    entity_labels: Sequence[str] | None = None,
    nlp: Any = None,
) -> list[Any]:
    """Instantiate the configured detectors. spaCy detectors share one pipeline with the union of the
    components they need (``nlp`` overrides loading ``config.spacy_model``)."""
    from masking.detectors.gazetteer import GazetteerDetector
    from masking.detectors.gazetteer_table import ENGLISH_STOPWORDS
    from masking.detectors.plugins import build_plugin
    from masking.detectors.pos import PosNERDetector, PosPhraseDetector
    from masking.detectors.rules import GoldSpanDetector, RegexDetector, TermListDetector
    from masking.detectors.spacy_detectors import NounChunkDetector, SpacyNERDetector
    from masking.detectors.spacy_model import load_spacy_pipeline

    needs = [c for d in config.detectors for c in ({"ner": ["ner"], "noun_chunk": ["parser"]}.get(d.type, []))]
    if needs and nlp is None:
        nlp = load_spacy_pipeline(config.spacy_model, needs, max_length=config.max_length)
    elif nlp is not None and config.max_length is not None:
        nlp.max_length = config.max_length
    detectors: list[Any] = []
    for cfg in config.detectors:
        name = cfg.name or cfg.type
        if isinstance(cfg, NERConfig):
            detectors.append(
                SpacyNERDetector(
                    nlp,
                    alias_index=alias_index if cfg.link else None,
                    labels=cfg.labels,
                    exclude_labels=cfg.exclude_labels,
                    batch_size=config.batch_size,
                    min_prior=cfg.min_prior,
                    trim=cfg.trim,
                    name=name,
                )
            )
        elif isinstance(cfg, NounChunkConfig):
            detectors.append(
                NounChunkDetector(
                    nlp, min_tokens=cfg.min_tokens, trim=cfg.trim, batch_size=config.batch_size, name=name
                )
            )
        elif isinstance(cfg, GazetteerConfig):
            if alias_index is None:
                raise MaskingError(
                    "the gazetteer detector needs the KG's alias index",
                    where=f"detector {name}",
                    fix="build the KG first (RUN_DIR/kg/aliases.tsv) or drop 'gazetteer' from --detectors",
                )
            detectors.append(
                GazetteerDetector(
                    alias_index,
                    case_insensitive=config.case_setting(cfg),
                    min_chars=cfg.min_chars,
                    stopwords=ENGLISH_STOPWORDS if cfg.stopwords is None else cfg.stopwords,
                    labels=entity_labels,
                    backend=cfg.backend,
                    name=name,
                )
            )
        elif isinstance(cfg, GoldConfig):
            detectors.append(
                GoldSpanDetector(
                    alias_index=alias_index if cfg.link else None, on_invalid=config.invalid_spans, name=name
                )
            )
        elif isinstance(cfg, NPMIConfig):
            detectors.append(npmi_detector(cfg))
        elif isinstance(cfg, TermsConfig):
            detectors.append(
                TermListDetector(
                    _read_terms(cfg),
                    kind=cfg.kind,
                    label=cfg.label,
                    case_insensitive=bool(config.case_setting(cfg)),
                    alias_index=alias_index,
                    name=name,
                )
            )
        elif isinstance(cfg, RegexConfig):
            detectors.append(RegexDetector(cfg.patterns, kind=cfg.kind, label=cfg.label, name=name))
        elif isinstance(cfg, PosNERConfig):
            detectors.append(
                PosNERDetector(
                    alias_index=alias_index if cfg.link else None,
                    tags=cfg.tags,
                    labels=cfg.labels,
                    min_prior=cfg.min_prior,
                    merge=cfg.merge,
                    tagger=cfg.segmenter,
                    user_dict=cfg.user_dict,
                    name=name,
                )
            )
        elif isinstance(cfg, PosPhraseConfig):
            detectors.append(
                PosPhraseDetector(
                    pattern=cfg.pattern,
                    min_words=cfg.min_words,
                    max_words=cfg.max_words,
                    label=cfg.label,
                    tagger=cfg.segmenter,
                    user_dict=cfg.user_dict,
                    name=name,
                )
            )
        elif isinstance(cfg, PluginConfig):
            if cfg.needs_kg and alias_index is None:
                raise MaskingError(
                    "the plug-in detector needs the KG's alias index",
                    where=f"detector {name}",
                    fix="build the KG first (RUN_DIR/kg/aliases.tsv) or set needs_kg: false",
                )
            detectors.append(
                build_plugin(
                    cfg.plugin or name,
                    cfg.factory,
                    cfg.options,
                    alias_index=alias_index,
                    entity_labels=entity_labels,
                    name=name,
                )
            )
    return detectors


def npmi_detector(cfg: NPMIConfig, texts: Iterable[str] | None = None) -> Any:
    """The NPMI detector of ``cfg``: loaded from ``path``, else fitted on ``texts`` (unfitted without them)."""
    from masking.detectors.npmi import NPMIPhraseDetector
    from masking.segmenters import build_segmenter

    name = cfg.name or cfg.type
    segmenter = build_segmenter(cfg.segmenter) if cfg.segmenter else None
    if cfg.path:
        return NPMIPhraseDetector.load(cfg.path, name=name, **({"segmenter": segmenter} if segmenter else {}))
    detector = NPMIPhraseDetector(
        min_count=cfg.min_count, threshold=cfg.threshold, max_tokens=cfg.max_tokens, segmenter=segmenter, name=name
    )
    return detector if texts is None else detector.fit(texts)
