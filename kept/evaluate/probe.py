"""KG probe: held-out triples as templated cloze facts, tails ranked by masked pseudo log-likelihood.

A fact (head, relation, tail) becomes its relation's template with ``[X]`` = the head's label and
``[Y]`` = k masks: a user template (``eval.probe.templates: {P17: "[X] is located in [Y] ."}``) or the
language's default where ``[R]`` is the relation's label (a relation-label file, FewRel's
``pid2name.json``, the KG's labels): ``[X] [R] [Y] .`` in English, ``[X][R][Y]。`` in Chinese (no spaces
between words, the Chinese full stop). ``eval.probe.language: auto`` picks Chinese when most entity
labels are written in CJK characters. An opaque id such as ``P155`` is never written
into a prompt: without a readable label the default reads ``[X] [Y] .``.
The candidates are the labels of the relation's tail entities (the gold tail always among them;
with ``filtered`` the other true tails of (head, relation) are dropped, as in link prediction).
A candidate of k word pieces is scored with k masks: ``sum_i log p(piece_i | prompt)`` (or the
mean). Candidates of equal length share one forward pass. Ranks are PyKEEN's "realistic" ranks
(ties count half), giving hits@k and MRR, overall and per relation.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from kept.evaluate.common import masked_logits, pad, rank_metrics, ranks_from_scores, uses_fusion
from kept.evaluate.config import check_template_slots

#: The default template of each language (``eval.probe.language``).
LANGUAGE_TEMPLATES: dict[str, str] = {"en": "[X] [R] [Y] .", "zh": "[X][R][Y]。"}
DEFAULT_TEMPLATE = LANGUAGE_TEMPLATES["en"]
PROBE_LANGUAGES: tuple[str, ...] = ("auto", *LANGUAGE_TEMPLATES)
#: Relation ids that carry no words (Wikidata P17, Freebase-style m.0abc, plain numbers).
_OPAQUE_ID = re.compile(r"(?:[A-Za-z]{1,2}\d+|m\.[0-9a-z_]+|\d+)")
_SLOT = re.compile(r"(\[X\]|\[Y\])")


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


@dataclass
class _Query:
    fact: tuple[int, int, int]
    left: list[int]  # template pieces before the answer masks (head included when [X] comes first)
    right: list[int]  # template pieces after them
    head_at: int  # index of the head's first piece in left (or in right when head_in_right)
    head_in_right: bool
    candidates: list[int]  # entity ids, gold first
    pieces: list[list[int]]  # word pieces of each candidate


def _template_pieces(template: str, head: str, tokenizer: Any) -> tuple[list[int], list[int], int, bool]:
    """(left, right, head_at, head_in_right) of ``template`` filled with ``head``; segments are tokenized
    one by one so the head's first piece has a known position."""
    left: list[int] = []
    right: list[int] = []
    target, head_at, head_in_right = left, 0, False
    for segment in _SLOT.split(template):
        if segment == "[Y]":
            target = right
        elif segment == "[X]":
            head_at, head_in_right = len(target), target is right
            target.extend(tokenizer.encode(head, add_special_tokens=False))
        elif segment.strip():
            target.extend(tokenizer.encode(segment.strip(), add_special_tokens=False))
    return left, right, head_at, head_in_right


def _queries(
    facts: ProbeFacts, tokenizer: Any, max_facts: int, max_candidates: int, max_pieces: int, filtered: bool, seed: int
) -> tuple[list[_Query], int]:
    tails_of: dict[int, list[int]] = defaultdict(list)
    true_tails: dict[tuple[int, int], set[int]] = defaultdict(set)
    for h, r, t in facts.triples:
        tails_of[r].append(t)
        true_tails[(h, r)].add(t)
    piece_cache: dict[int, tuple[int, ...]] = {}

    def pieces(entity: int) -> tuple[int, ...]:
        if entity not in piece_cache:
            piece_cache[entity] = tuple(tokenizer.encode(facts.entity_labels[entity], add_special_tokens=False))
        return piece_cache[entity]

    pools: dict[int, list[int]] = {}

    def pool(relation: int) -> list[int]:
        """The relation's tails with a usable label, one entity per distinct word-piece sequence."""
        if relation not in pools:
            todo = [t for t in dict.fromkeys(tails_of[relation]) if t not in piece_cache]
            if todo:  # one batched tokenizer call per relation
                encoded = tokenizer([facts.entity_labels[t] for t in todo], add_special_tokens=False)["input_ids"]
                piece_cache.update({t: tuple(ids) for t, ids in zip(todo, encoded)})
            seen: set[tuple[int, ...]] = set()
            unique = []
            for tail in dict.fromkeys(tails_of[relation]):
                p = pieces(tail)
                if p and len(p) <= max_pieces and p not in seen:
                    seen.add(p)
                    unique.append(tail)
            pools[relation] = unique
        return pools[relation]

    rng = random.Random(seed)
    queries: list[Any] = []
    skipped = 0
    for fact in facts.held_out:
        if len(queries) >= max_facts:
            break
        h, r, t = fact
        gold = pieces(t)
        if not gold or len(gold) > max_pieces:
            skipped += 1
            continue
        excluded = (true_tails[(h, r)] if filtered else set()) | {t}
        candidates = pool(r)
        wanted = max_candidates - 1
        sampled = len(candidates) > wanted + len(excluded)
        if sampled:  # sample first, then filter the few picked
            candidates = rng.sample(candidates, wanted + len(excluded))
        others = [c for c in candidates if c not in excluded and pieces(c) != gold]
        if len(others) > wanted:
            others = others[:wanted] if sampled else rng.sample(others, wanted)
        if not others:
            skipped += 1  # a single candidate ranks trivially first: not a test
            continue
        left, right, head_at, head_in_right = _template_pieces(facts.templates[r], facts.entity_labels[h], tokenizer)
        chosen = [t] + others
        queries.append(_Query(fact, left, right, head_at, head_in_right, chosen, [list(pieces(c)) for c in chosen]))
    return queries, skipped


@torch.no_grad()
def evaluate_probe(
    model: torch.nn.Module,
    tokenizer: Any,
    facts: ProbeFacts,
    *,
    max_facts: int = 200,
    max_candidates: int = 100,
    max_pieces: int = 6,
    score: Literal["sum", "mean"] = "sum",
    filtered: bool = True,
    seed: int = 0,
    batch_size: int = 32,
    num_examples: int = 10,
    use_entities: bool | None = None,
) -> dict[str, Any]:
    """hits@1/3/10 and MRR of the gold tail among the candidates, overall and per relation.

    The result's ``items`` hold each fact's outcome for `kept compare`'s paired bootstrap:
    ``{"ids": ["head|relation|tail" entity/relation ids of the KG], "reciprocal_rank": [...],
    "hits_at_1": [0/1, ...]}``.
    """
    if tokenizer.mask_token_id is None:
        from kept.errors import KeptError

        raise KeptError("the tokenizer has no [MASK] token", where="tokenizer/", fix="use a masked-LM tokenizer")
    queries, skipped = _queries(facts, tokenizer, max_facts, max_candidates, max_pieces, filtered, seed)
    fusion = uses_fusion(model) if use_entities is None else use_entities
    cls_ids = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
    sep_ids = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []

    # one forward input per (query, candidate length)
    jobs: list[tuple[int, int]] = []  # (query index, k)
    for q, query in enumerate(queries):
        for k in sorted({len(p) for p in query.pieces}):
            jobs.append((q, k))
    log_probs: dict[tuple[int, int], torch.Tensor] = {}  # -> [k, V]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        inputs, entities, offsets = [], [], []
        for q, k in chunk:
            query = queries[q]
            ids = cls_ids + query.left + [tokenizer.mask_token_id] * k + query.right + sep_ids
            ents = [-1] * len(ids)
            if fusion:  # the head mention is linked to the head entity (never the answer)
                head = len(cls_ids) + query.head_at + ((len(query.left) + k) if query.head_in_right else 0)
                ents[head] = query.fact[0]
            inputs.append(ids)
            entities.append(ents)
            offsets.append(len(cls_ids) + len(query.left))
        input_ids = pad(inputs, tokenizer.pad_token_id or 0)
        attention = pad([[1] * len(i) for i in inputs], 0)
        select = torch.zeros_like(input_ids, dtype=torch.bool)
        for i, ((_, k), offset) in enumerate(zip(chunk, offsets)):
            select[i, offset : offset + k] = True
        logits = masked_logits(model, input_ids, attention, select, pad(entities, -1) if fusion else None)
        table = torch.log_softmax(logits, dim=-1).cpu()  # [sum of k, V], row-major
        start_row = 0
        for q, k in chunk:
            log_probs[(q, k)] = table[start_row : start_row + k]
            start_row += k

    ranks: list[float] = []
    per_relation: dict[int, list[float]] = defaultdict(list)
    examples: list[dict[str, Any]] = []
    item_ids: list[str] = []
    for q, query in enumerate(queries):
        scores = [0.0] * len(query.pieces)
        by_length: dict[int, list[int]] = defaultdict(list)
        for j, piece_ids in enumerate(query.pieces):
            by_length[len(piece_ids)].append(j)
        for k, members in by_length.items():
            table = log_probs[(q, k)]  # [k, V]
            index = torch.as_tensor([query.pieces[j] for j in members], dtype=torch.long)  # [n, k]
            picked = table.gather(1, index.T).T  # [n, k]: log p(piece_i of candidate n)
            values = picked.sum(dim=1) if score == "sum" else picked.mean(dim=1)
            for j, value in zip(members, values.tolist()):
                scores[j] = value
        score_t = torch.tensor([scores], dtype=torch.float64)
        rank = float(ranks_from_scores(score_t, torch.tensor([0]))[0])
        ranks.append(rank)
        per_relation[query.fact[1]].append(rank)
        item_ids.append("|".join(str(part) for part in query.fact))
        if len(examples) < num_examples:
            best = max(range(len(scores)), key=lambda j: scores[j])
            h, r, t = query.fact
            examples.append(
                {
                    "head": facts.entity_labels[h],
                    "relation": facts.relation_names[r],
                    "prompt": facts.templates[r].replace("[X]", facts.entity_labels[h]).replace("[Y]", "[MASK]"),
                    "gold": facts.entity_labels[t],
                    "prediction": facts.entity_labels[query.candidates[best]],
                    "rank": rank,
                    "num_candidates": len(query.candidates),
                }
            )
    overall = rank_metrics(ranks)
    result: dict[str, Any] = {
        "mrr": overall["mrr"],
        "hits_at_1": overall["hits_at_1"],
        "hits_at_3": overall["hits_at_3"],
        "hits_at_10": overall["hits_at_10"],
        "mean_rank": overall["mean_rank"],
        "num_facts": len(queries),
        "num_skipped": skipped,
        "mean_candidates": (sum(len(q.candidates) for q in queries) / len(queries)) if queries else math.nan,
        "score": score,
        "filtered": filtered,
        "language": facts.language,
        "per_relation": {
            facts.relation_names[r]: {k: v for k, v in rank_metrics(rs).items() if k in ("mrr", "hits_at_1", "count")}
            for r, rs in sorted(per_relation.items())
        },
        "examples": examples,
        "items": {
            "ids": item_ids,
            "reciprocal_rank": [1.0 / rank for rank in ranks],
            "hits_at_1": [int(rank <= 1) for rank in ranks],
        },
    }
    if facts.note:
        result["note"] = facts.note
    return result


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
