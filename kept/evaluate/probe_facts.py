"""KG probe facts: which triples are probed and the prompt template of each relation.

A fact (head, relation, tail) becomes its relation's template with ``[X]`` = the head's label and
``[Y]`` = the answer: a user template (``eval.probe.templates: {P17: "[X] is located in [Y] ."}``) or the
language's default where ``[R]`` is the relation's label (a relation-label file, FewRel's
``pid2name.json``, the KG's labels): ``[X] [R] [Y] .`` in English, ``[X][R][Y]。`` in Chinese (no spaces
between words, the Chinese full stop). ``eval.probe.language: auto`` picks Chinese when most entity
labels are written in CJK characters. An opaque id such as ``P155`` is never written
into a prompt: without a readable label the default reads ``[X] [Y] .``.
The probed facts are the KG's test split, or a seeded share of its triples when it has none.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kept.evaluate.config import check_template_slots

#: The default template of each language (``eval.probe.language``).
LANGUAGE_TEMPLATES: dict[str, str] = {"en": "[X] [R] [Y] .", "zh": "[X][R][Y]。"}
DEFAULT_TEMPLATE = LANGUAGE_TEMPLATES["en"]
PROBE_LANGUAGES: tuple[str, ...] = ("auto", *LANGUAGE_TEMPLATES)
#: Relation ids that carry no words (Wikidata P17, Freebase-style m.0abc, plain numbers).
_OPAQUE_ID = re.compile(r"(?:[A-Za-z]{1,2}\d+|m\.[0-9a-z_]+|\d+)")


def relation_words(name: str, label: str = "") -> str:
    """Words of a relation for the template: its label when it reads as words, else its name split
    on ``_ - / .`` and camelCase (``placeOfBirth`` and ``place_of_birth`` -> ``place of birth``);
    ``""`` for an opaque id with no label (``P155``)."""
    text = label.strip() if label and label.strip() and label.strip() != name else name
    if _OPAQUE_ID.fullmatch(text.strip()):
        return ""
    text = text.rsplit("/", 1)[-1] if "/" in text and " " not in text else text
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", text)
    text = re.sub(r"[_\-./:]+", " ", text)
    return re.sub(r"\s+", " ", text).strip().lower() or name


def probe_language(entity_labels: Sequence[str], language: str = "auto") -> str:
    """``language`` itself, or for ``auto`` the script of the labels: ``zh`` when at least half of the
    non-empty labels are CJK (``故宫``), else ``en``."""
    if language != "auto":
        if language not in LANGUAGE_TEMPLATES:
            from kept.errors import KeptError

            raise KeptError(
                f"unknown probe language {language!r}",
                where="eval.probe.language",
                fix=f"use one of {', '.join(PROBE_LANGUAGES)}",
            )
        return language
    from kg.aliases import is_cjk

    labels = [label for label in entity_labels if label and label.strip()]
    return "zh" if labels and 2 * sum(map(is_cjk, labels)) >= len(labels) else "en"


def check_template(template: str, where: str = "eval.probe.templates") -> str:
    """A template holds ``[X]`` and ``[Y]`` exactly once each (``[R]`` optional); else a KeptError."""
    try:
        return check_template_slots(template)
    except ValueError as error:
        from kept.errors import KeptError

        raise KeptError(str(error), where=where, fix="put [X] and [Y] in the template once each") from None


def relation_templates(
    names: Sequence[str], words: Sequence[str], templates: dict[str, str] | None = None, default: str = DEFAULT_TEMPLATE
) -> list[str]:
    """The template of each relation: a user template keyed by the relation's name or words (case
    ignored), else ``default`` with ``[R]`` = its words."""
    given = {
        key.strip().lower(): check_template(value, f"eval.probe.templates.{key}")
        for key, value in (templates or {}).items()
    }
    check_template(default, "eval.probe.default_template")
    chosen = []
    for name, text in zip(names, words):
        template = given.get(name.lower()) or given.get(text.lower()) or default.replace("[R]", text)
        chosen.append(re.sub(r"\s+", " ", template).strip())
    return chosen


@dataclass
class ProbeFacts:
    """What the probe needs of a KG: labels, relation words, all true triples and the held-out ones."""

    entity_labels: list[str]
    relation_words: list[str]
    relation_names: list[str]
    triples: list[tuple[int, int, int]]
    held_out: list[tuple[int, int, int]]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    templates: list[str] = field(default_factory=list)  # per relation; empty: the language's default template
    language: str = "en"  # the prompts' language (LANGUAGE_TEMPLATES)

    def __post_init__(self) -> None:
        if not self.templates:
            self.templates = relation_templates(
                self.relation_names,
                self.relation_words,
                default=LANGUAGE_TEMPLATES.get(self.language, DEFAULT_TEMPLATE),
            )


def held_out_triples(num_triples: int, fraction: float, seed: int) -> list[int]:
    """Seeded indices of the held-out share of the triples (at least one when there are any)."""
    if num_triples == 0:
        return []
    count = max(1, int(round(num_triples * fraction)))
    return sorted(random.Random(seed).sample(range(num_triples), min(count, num_triples)))


def facts_from_tables(
    entities: Sequence[dict[str, Any]],
    relations: Sequence[dict[str, Any]],
    triples: Sequence[tuple[str, str, str]],
    held_out: Sequence[tuple[str, str, str]] | None,
    fraction: float,
    seed: int,
    *,
    relation_labels: Mapping[str, str] | None = None,
    templates: dict[str, str] | None = None,
    default_template: str | None = None,
    language: str = "auto",
) -> ProbeFacts:
    """Build ProbeFacts from KG rows (entities: id/name/label, relations: id/name/label, triples by name).

    ``held_out``: the KG's test triples when it has a split; else a seeded ``fraction`` of all triples.
    ``relation_labels`` (name -> label, e.g. from ``pid2name.json``) win over the KG's relation labels;
    ``templates``/``default_template``: see :func:`relation_templates` (``default_template`` None: the
    template of ``language``, which ``auto`` reads from the script of the entity labels).
    Triples naming unknown entities/relations are ignored.
    """
    n_entities = max((int(e["id"]) for e in entities), default=-1) + 1
    labels = [""] * n_entities
    entity_index: dict[str, int] = {}
    for e in entities:
        i = int(e["id"])
        labels[i] = (e.get("label") or e["name"]).strip() or e["name"]
        entity_index[e["name"]] = i
    n_relations = max((int(r["id"]) for r in relations), default=-1) + 1
    names, words = [""] * n_relations, [""] * n_relations
    relation_index: dict[str, int] = {}
    for r in relations:
        i = int(r["id"])
        names[i] = r["name"]
        words[i] = relation_words(r["name"], (relation_labels or {}).get(r["name"]) or r.get("label") or "")
        relation_index[r["name"]] = i

    def to_ids(rows: Sequence[tuple[str, str, str]]) -> list[tuple[int, int, int]]:
        return [
            (entity_index[h], relation_index[r], entity_index[t])
            for h, r, t in rows
            if h in entity_index and r in relation_index and t in entity_index
        ]

    all_triples = to_ids(triples)
    if held_out is not None:
        test = to_ids(held_out)
        note = f"held-out facts: the KG's test split ({len(test)} triples, not seen by the KG embedding)"
        all_triples = list(dict.fromkeys(all_triples + test))
    else:
        test = [all_triples[i] for i in held_out_triples(len(all_triples), fraction, seed)]
        note = (
            f"held-out facts: a seeded {fraction:.0%} sample of the KG's triples (the KG has no saved split, "
            "so the KG embedding may have been trained on them)"
        )
    language = probe_language(labels, language)
    if default_template is None:
        default_template = LANGUAGE_TEMPLATES[language]
    chosen = relation_templates(names, words, templates, default_template)
    unreadable_ids = sorted(
        {
            r
            for _, r, _ in test
            if not words[r]
            and "[R]" in default_template
            and chosen[r] == re.sub(r"\s+", " ", default_template.replace("[R]", "")).strip()
        }
    )
    unreadable = sorted(names[r] for r in unreadable_ids)
    if unreadable:
        note += (
            f"; {len(unreadable)} relation(s) without a readable label use "
            f"'{chosen[unreadable_ids[0]]}' prompts ({', '.join(unreadable[:5])}): give eval.probe.relation_labels or eval.probe.templates"
        )
    return ProbeFacts(labels, words, names, all_triples, test, note=note, templates=chosen, language=language)
