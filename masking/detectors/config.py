"""The annotation configuration schema: ``AnnotationConfig`` and one pydantic model per detector type.

Configuration is data (YAML/JSON round-trips through ``model_dump``); turning it into detector objects
is :mod:`masking.detectors.build`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from masking.detectors.base import AliasIndexLike
from masking.detectors.pos import DEFAULT_ENTITY_TAGS, DEFAULT_PHRASE_PATTERN
from masking.detectors.spacy_model import DEFAULT_MODEL
from masking.errors import MaskingError


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None  # the span ``source``; defaults to the type


class NERConfig(_Base):
    type: Literal["ner"] = "ner"
    labels: list[str] | None = None
    exclude_labels: list[str] = Field(
        default_factory=lambda: ["CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "MONEY", "DATE", "TIME"]
    )
    link: bool = True
    min_prior: float = 0.0
    trim: bool = True  # drop leading the/a/an and trailing 's from entity spans


class NounChunkConfig(_Base):
    type: Literal["noun_chunk"] = "noun_chunk"
    min_tokens: int = 2
    trim: bool = True


class GazetteerConfig(_Base):
    type: Literal["gazetteer"] = "gazetteer"
    backend: Literal["fast", "spacy"] = "fast"
    case_insensitive: bool | Literal["auto"] | None = Field(
        None,
        description="true: fold case; false: exact case; auto: fold when >= 90% of the KG's cased aliases "
        "are lower-case (exact-case aliases preferred); None: AnnotationConfig.case_insensitive, "
        "else auto",
    )
    min_chars: int | None = Field(
        None,
        ge=1,
        description="shorter aliases are skipped; None: by script (1 for CJK aliases such as 京, 2 for others)",
    )
    stopwords: list[str] | None = None  # None: a built-in English list


class GoldConfig(_Base):
    type: Literal["gold"] = "gold"
    link: bool = True


class NPMIConfig(_Base):
    type: Literal["npmi"] = "npmi"
    min_count: int = 5
    threshold: float = 0.5
    max_tokens: int = 4
    fit_max_documents: int | None = 100_000
    path: str | None = None  # a saved phrase table (skips fitting)
    segmenter: str | None = Field(
        None,
        description="words from a segmenter (jieba, pkuseg[:dir], spacy:<pipeline>) "
        "for text without spaces; None: whitespace words, CJK "
        "characters one word each",
    )


class PosNERConfig(_Base):
    """Entities from a segmenter's POS tags (jieba.posseg: nr/ns/nt/nz), linked like ``ner``."""

    type: Literal["pos_ner"] = "pos_ner"
    segmenter: Literal["jieba"] = "jieba"
    tags: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ENTITY_TAGS),
        description="tag -> label; a tag also covers longer tags it starts (nr: nrfg)",
    )
    labels: list[str] | None = None  # keep only these labels
    link: bool = True
    min_prior: float = 0.0
    merge: bool = Field(True, description="join adjacent entity words of one label when the joined text is a KG alias")
    user_dict: str | None = Field(None, description="jieba user dictionary: 'word [frequency] [tag]' per line")


class PosPhraseConfig(_Base):
    """Phrases from a segmenter's POS tags: a tag pattern in NLTK RegexpParser style."""

    type: Literal["pos_phrase"] = "pos_phrase"
    segmenter: Literal["jieba"] = "jieba"
    pattern: str = Field(DEFAULT_PHRASE_PATTERN, description="regex over <tag> units (NLTK RegexpParser style)")
    min_words: int = Field(2, ge=1)
    max_words: int = Field(6, ge=1)
    label: str = "NP"
    user_dict: str | None = None


class PluginConfig(_Base):
    """A detector registered by name (``register_detector``, the ``kept.detectors`` entry points) or made
    by ``factory`` (``package.module:callable``); ``options`` are its keyword arguments."""

    type: Literal["plugin"] = "plugin"
    plugin: str | None = Field(None, description="the registered name; None: name")
    factory: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    needs_kg: bool = False  # true: the run must have a KG (alias index) for this detector

    @model_validator(mode="after")
    def _named(self) -> PluginConfig:
        if not (self.plugin or self.name or self.factory):
            raise ValueError("a plugin detector needs name (a registered detector) or factory ('module:callable')")
        self.plugin = self.plugin or self.name or self.factory.rsplit(":", 1)[-1]  # type: ignore[union-attr]
        self.name = self.name or self.plugin
        return self


class TermsConfig(_Base):
    type: Literal["terms"] = "terms"
    terms: dict[str, str] | list[str] = Field(default_factory=list)
    path: str | None = None  # one term per line, optionally ``term<TAB>label``
    kind: Literal["entity", "phrase"] = "phrase"
    label: str = "TERM"
    case_insensitive: bool | None = None


class RegexConfig(_Base):
    type: Literal["regex"] = "regex"
    patterns: list[dict[str, Any] | str]
    kind: Literal["entity", "phrase"] = "phrase"
    label: str = "REGEX"


DetectorConfig = Annotated[
    Union[
        NERConfig,
        NounChunkConfig,
        GazetteerConfig,
        GoldConfig,
        NPMIConfig,
        TermsConfig,
        RegexConfig,
        PosNERConfig,
        PosPhraseConfig,
        PluginConfig,
    ],
    Field(discriminator="type"),
]
DETECTOR_TYPES: tuple[str, ...] = (
    "ner",
    "noun_chunk",
    "gazetteer",
    "gold",
    "npmi",
    "terms",
    "regex",
    "pos_ner",
    "pos_phrase",
    "plugin",
)


def _default_detectors() -> list[DetectorConfig]:
    return [NERConfig(), NounChunkConfig(), GazetteerConfig(), GoldConfig()]


class AnnotationConfig(BaseModel):
    """How a corpus is annotated. Configuration is data: YAML/JSON round-trips through ``model_dump``."""

    model_config = ConfigDict(extra="forbid")

    detectors: list[DetectorConfig] = Field(default_factory=lambda: _default_detectors())
    spacy_model: str = DEFAULT_MODEL
    batch_size: int = Field(64, ge=1, description="nlp.pipe batch size")
    map_batch_size: int = Field(256, ge=1, description="documents per Dataset.map batch")
    num_proc: int = Field(1, ge=1)
    case_insensitive: bool | None = Field(
        None,
        description="case folding for the gazetteer and term lists; None: each detector's own setting "
        "(gazetteer: auto, term lists: exact case)",
    )
    invalid_spans: Literal["error", "drop"] = "error"
    long_documents: Literal["split", "error"] = "split"
    max_length: int | None = Field(None, ge=1000, description="spaCy nlp.max_length (None: the pipeline's)")
    undecodable: Literal["error", "replace"] = "error"  # non-UTF-8 lines / lone surrogates in the corpus
    missing_kg: Literal["error", "skip"] = "error"  # no RUN_DIR/kg: fail, or drop the gazetteer and linking
    segmenter: str | None = Field(
        None,
        description="the words token_coverage counts (jieba, pkuseg[:dir], "
        "spacy:<pipeline>, none); None: kept uses encode.segmenter",
    )

    @classmethod
    def from_names(cls, names: str | Sequence[str], **overrides: Any) -> AnnotationConfig:
        """``"ner,noun_chunk,gazetteer,gold"`` -> a config with those detectors and default options."""
        from masking.detectors.plugins import registered_detectors

        parts = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
        plugins = registered_detectors()
        unknown = [
            n for n in parts if (n not in DETECTOR_TYPES or n in ("terms", "regex", "plugin")) and n not in plugins
        ]
        if unknown or not parts:
            raise MaskingError(
                f"unknown detector name(s) {unknown or parts!r}",
                where="--detectors",
                fix=f"choose from ner, noun_chunk, gazetteer, gold, npmi, pos_ner, pos_phrase"
                f"{', ' + ', '.join(plugins) if plugins else ''} (terms and regex need a config "
                f"file)",
            )
        try:
            return cls(
                detectors=[{"type": n} if n in DETECTOR_TYPES else {"type": "plugin", "name": n} for n in parts],
                **overrides,
            )
        except ValidationError as error:
            raise MaskingError(
                f"invalid annotation config: {error.errors()[0]['msg']}",
                where="annotation config",
                fix="see masking.AnnotationConfig for the fields",
            ) from None

    def needs_kg(self) -> bool:
        return any(
            d.type == "gazetteer" or getattr(d, "link", False) or getattr(d, "needs_kg", False) for d in self.detectors
        )

    def case_setting(self, detector: GazetteerConfig | TermsConfig) -> bool | Literal["auto"]:
        """The detector's own ``case_insensitive``, else this config's, else auto (gazetteer) / exact (terms)."""
        if detector.case_insensitive is not None:
            return detector.case_insensitive
        if self.case_insensitive is not None:
            return self.case_insensitive
        return "auto" if detector.type == "gazetteer" else False


def gazetteer_case_modes(config: AnnotationConfig, alias_index: AliasIndexLike | None) -> dict[str, dict[str, Any]]:
    """Per gazetteer detector (by name): the case mode its configuration gives on ``alias_index``, as
    recorded in ``annotation_stats.json`` (``gazetteer_case``); {} without a gazetteer or an alias index."""
    from masking.detectors.gazetteer import resolve_case_mode

    if alias_index is None:
        return {}
    return {
        cfg.name or cfg.type: resolve_case_mode(
            alias_index, config.case_setting(cfg), name=cfg.name or cfg.type
        ).to_dict()
        for cfg in config.detectors
        if isinstance(cfg, GazetteerConfig)
    }
