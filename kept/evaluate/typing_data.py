"""Entity-typing data: types from the KG, items derived from a run's entity links, and the
train/dev/test splits (see :mod:`kept.evaluate.typing` for the task, :mod:`kept.evaluate.typing_items`
for the items and their file format)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from kept.errors import KeptError
from kept.evaluate.typing_items import TypingData, TypingItem, read_typing_file
from kg.type_relations import TYPE_RELATION_KEYS, is_type_relation, relation_key

#: Relations whose tails are the types of their heads (names or labels, compared case- and separator-free).
TYPE_RELATIONS = TYPE_RELATION_KEYS
#: Relations that say nothing about the type of either end.
UNTYPED_RELATIONS = frozenset({"linksto", "relatedto", "seealso"})


# ------------------------------------------------------------------ types from the KG, items from the corpus


def _relation_type(label: str) -> str:
    """Readable type from a relation (infobox field) name: ``leader_name1`` -> ``leader name``."""
    text = re.sub(r"[_\s]+", " ", label).strip().lower()
    return re.sub(r"\s*\d+$", "", text) or text


def kg_entity_types(
    entity_labels: Mapping[str, str], relation_labels: Mapping[str, str], triples: Iterable[tuple[str, str, str]]
) -> tuple[dict[str, frozenset[str]], str]:
    """Types of the KG's entities (by name) and where they come from.

    With an ``instance of`` relation (:data:`TYPE_RELATIONS`, by name or label): the labels of its
    tails. Otherwise the entity's roles in the facts: object of relation R -> ``R``, subject ->
    ``has R`` (R's label, separators as spaces, trailing digits dropped); :data:`UNTYPED_RELATIONS` skipped.
    """
    triples = list(triples)
    type_relations = {name for name, label in relation_labels.items() if is_type_relation(name, label)}
    types: dict[str, set[str]] = {}
    if any(relation in type_relations for _, relation, _ in triples):
        for head, relation, tail in triples:
            if relation in type_relations:
                types.setdefault(head, set()).add((entity_labels.get(tail) or tail).strip().lower())
        used = sorted(type_relations & {relation for _, relation, _ in triples})
        return {k: frozenset(v) for k, v in types.items()}, f"instance-of relation ({', '.join(used)})"
    for head, relation, tail in triples:
        label = relation_labels.get(relation) or relation
        if relation_key(relation) in UNTYPED_RELATIONS or relation_key(label) in UNTYPED_RELATIONS:
            continue
        name = _relation_type(label)
        types.setdefault(tail, set()).add(name)
        types.setdefault(head, set()).add(f"has {name}")
    return {k: frozenset(v) for k, v in types.items()}, "roles in the KG's facts (object: R, subject: has R)"


def _window(text: str, start: int, end: int, context_chars: int) -> tuple[int, int]:
    """Character window around ``text[start:end]``, cut at whitespace."""
    lo, hi = max(0, start - context_chars), min(len(text), end + context_chars)
    if lo > 0:
        space = text.find(" ", lo, start)
        lo = space + 1 if space >= 0 else lo
    if hi < len(text):
        space = text.rfind(" ", end, hi)
        hi = space if space >= 0 else hi
    return lo, hi


def derive_typing_items(
    documents: Iterable[Mapping[str, Any]],
    entity_types: Mapping[int, frozenset[str]],
    *,
    context_chars: int = 200,
    gold_only: bool = True,
    max_per_entity: int | None = None,
) -> list[TypingItem]:
    """One item per linked mention (``spans`` with ``entity_id`` >= 0; ``source`` "gold" when
    ``gold_only``) whose entity has types; the sentence is a window of ``context_chars`` around it, and
    the other linked mentions inside the window come along as entities. Document order; at most
    ``max_per_entity`` mentions of one entity (the first ones)."""
    items: list[TypingItem] = []
    per_entity: dict[int, int] = {}
    for document in documents:
        text, doc_id = document["text"], str(document["id"])
        linked = [
            s
            for s in (document.get("spans") or [])
            if s.get("entity_id") is not None
            and s["entity_id"] >= 0
            and s["end"] > s["start"]
            and (not gold_only or s.get("source") == "gold")
        ]
        for span in linked:
            entity = int(span["entity_id"])
            labels = entity_types.get(entity)
            if not labels or not text[span["start"] : span["end"]].strip():
                continue
            if max_per_entity is not None and per_entity.get(entity, 0) >= max_per_entity:
                continue
            per_entity[entity] = per_entity.get(entity, 0) + 1
            lo, hi = _window(text, span["start"], span["end"], context_chars)
            entities = tuple(
                (s["start"] - lo, s["end"] - lo, int(s["entity_id"]))
                for s in linked
                if s["start"] >= lo and s["end"] <= hi
            )
            items.append(
                TypingItem(
                    id=f"{doc_id}:{span['start']}-{span['end']}",
                    sent=text[lo:hi],
                    start=span["start"] - lo,
                    end=span["end"] - lo,
                    labels=tuple(sorted(labels)),
                    entities=entities,
                    doc_id=doc_id,
                )
            )
    return items


def type_vocabulary(items: Sequence[TypingItem], *, min_count: int = 1, max_types: int | None = None) -> list[str]:
    """Types with at least ``min_count`` items, most frequent first (ties by name), at most ``max_types``."""
    counts: dict[str, int] = {}
    for item in items:
        for label in item.labels:
            counts[label] = counts.get(label, 0) + 1
    kept = sorted((label for label, count in counts.items() if count >= min_count), key=lambda t: (-counts[t], t))
    return kept[:max_types] if max_types is not None else kept


def type_frequency(items: Sequence[TypingItem], types: Sequence[str]) -> torch.Tensor:
    """Share of the items that carry each type [T] (0 for an empty list)."""
    column = {t: i for i, t in enumerate(types)}
    counts = torch.zeros(len(types))
    for item in items:
        for label in item.labels:
            if label in column:
                counts[column[label]] += 1
    return counts / max(1, len(items))


def restrict_types(items: Sequence[TypingItem], types: Sequence[str]) -> list[TypingItem]:
    """Items with their labels cut to ``types``; items left without a label are dropped."""
    allowed = set(types)
    out = []
    for item in items:
        labels = tuple(label for label in item.labels if label in allowed)
        if labels:
            out.append(replace(item, labels=labels))
    return out


def _sample(items: Sequence[TypingItem], limit: int, rng: random.Random) -> list[TypingItem]:
    """At most ``limit`` items, a seeded choice kept in the original order."""
    if len(items) <= limit:
        return list(items)
    chosen = sorted(rng.sample(range(len(items)), limit))
    return [items[i] for i in chosen]


def split_by_document(
    items: Sequence[TypingItem], fraction: float, seed: int
) -> tuple[list[TypingItem], list[TypingItem]]:
    """(rest, held) where ``held`` holds the items of a seeded ``fraction`` of the documents
    (items without a document count as their own document)."""
    docs = sorted({item.doc_id or item.id for item in items})
    if len(docs) < 2 or fraction <= 0:
        return list(items), []
    count = min(len(docs) - 1, max(1, int(round(fraction * len(docs)))))
    held_docs = set(random.Random(seed).sample(docs, count))
    held = [item for item in items if (item.doc_id or item.id) in held_docs]
    return [item for item in items if (item.doc_id or item.id) not in held_docs], held


# ------------------------------------------------------------------ data of a run


def held_out_documents(run_dir: Path, doc_ids: Sequence[str], validation_fraction: float, seed: int) -> set[str]:
    """The documents that the encode step held out for validation (the same seeded split as
    :func:`kept.encode.split_documents`); KeptError when the encoded training split contradicts it."""
    from kept.encode import split_documents
    from kept.rundir import run_paths

    _, validation = split_documents(list(doc_ids), validation_fraction, seed)
    train_path = run_paths(run_dir).encoded_train
    if validation and train_path.exists():
        import datasets

        encoded = datasets.load_from_disk(str(train_path))
        if "doc_id" in encoded.column_names:
            leaked = validation & {str(d) for d in encoded.unique("doc_id")}
            if leaked:
                raise KeptError(
                    f"document {sorted(leaked)[0]!r} is in the encoded training split but the encode "
                    "settings hold it out",
                    where=train_path,
                    fix="re-run the encode step (`kept run CONFIG --force encode`)",
                )
    return validation


def run_typing_data(
    run_dir: str | Path,
    tables: Mapping[str, Any],
    *,
    validation_fraction: float,
    split_seed: int,
    config: Any,
    seed: int,
) -> TypingData | str:
    """Typing items derived from the run (see the module doc), or the reason why there are none.

    ``tables``: :func:`kept.analysis.load_kg_tables` of the run; ``validation_fraction``/``split_seed``:
    the run's ``encode`` settings; ``config``: :class:`~kept.evaluate.config.TypingEvalConfig`."""
    from kept.encode import load_annotated
    from kept.rundir import run_paths

    run_dir = Path(run_dir)
    if not run_paths(run_dir).annotated.exists():
        return "no annotated corpus (corpus/annotated) to take entity links from; set eval.typing.data"
    entities, relations = tables["entities"], tables["relations"]
    labels = dict(zip(entities["name"], entities["label"]))
    by_name, source = kg_entity_types(
        labels, dict(zip(relations["name"], relations["label"])), tables["triples"].itertuples(index=False, name=None)
    )
    ids = dict(zip(entities["name"], entities["id"].astype(int)))
    entity_types = {int(ids[name]): types for name, types in by_name.items() if name in ids}
    if not entity_types:
        return "the run's KG gives no entity types (no instance-of relation and no typed facts)"
    documents = load_annotated(run_dir)
    validation = held_out_documents(run_dir, [str(d) for d in documents["id"]], validation_fraction, split_seed)
    if not validation:
        return "no held-out documents (encode.validation_fraction is 0): test mentions must not be pretraining text"
    common = dict(
        entity_types=entity_types,
        context_chars=config.context_chars,
        gold_only=config.gold_only,
        max_per_entity=config.max_per_entity,
    )
    pool = derive_typing_items((d for d in documents if str(d["id"]) not in validation), **common)
    test = derive_typing_items((d for d in documents if str(d["id"]) in validation), **common)
    info = {
        "data": "derived from the run's entity links",
        "type_source": source,
        "test_documents": len({item.doc_id for item in test}),
    }
    return _finish(pool, test, config, seed, info, dev_by_document=True)


def file_typing_data(
    data: str | Path, *, entity_index: Mapping[str, int] | None, config: Any, seed: int
) -> TypingData | str:
    """Typing items of ``eval.typing.data``: a file (split seeded into train/dev/test) or an
    ERNIE-THU directory with ``train.json``, ``test.json`` and optionally ``dev.json``."""
    data = Path(data)
    if not data.exists():
        return f"typing data not available: {data} does not exist"
    read = dict(entity_index=entity_index, link_threshold=config.link_threshold)
    info: dict[str, Any] = {"data": str(data)}
    if data.is_dir():
        if not (data / "train.json").is_file() or not (data / "test.json").is_file():
            return f"{data} holds no train.json and test.json (the OpenEntity/FIGER layout of ERNIE-THU)"
        pool, test = read_typing_file(data / "train.json", **read), read_typing_file(data / "test.json", **read)
        if (data / "dev.json").is_file():
            dev = read_typing_file(data / "dev.json", **read)
            return _finish(pool, test, config, seed, info, dev=dev)
        return _finish(pool, test, config, seed, info)
    items = read_typing_file(data, **read)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_test = min(len(items) - 1, max(1, int(round(config.test_fraction * len(items)))))
    held = set(order[:n_test])
    test = [item for i, item in enumerate(items) if i in held]
    pool = [item for i, item in enumerate(items) if i not in held]
    return _finish(pool, test, config, seed, info)


def typing_data(
    run_dir: str | Path, config: Any, *, tables: Callable[[], Mapping[str, Any]], encode: Any, seed: int
) -> TypingData | str:
    """The typing items of a run's evaluation, or the reason there are none: ``config.data`` when set
    (KG entity names link its mentions), else items derived from the run (:func:`run_typing_data`).
    ``tables``: returns the run's KG tables (read once by the caller); ``encode``: the run's ``encode`` section."""
    has_kg = (Path(run_dir) / "kg" / "entities.tsv").is_file()
    entities = tables()["entities"] if has_kg else None
    if config.data is not None:
        index = dict(zip(entities["name"], entities["id"].astype(int))) if entities is not None else None
        return file_typing_data(config.data, entity_index=index, config=config, seed=seed)
    if not has_kg:
        return "no typing data: set eval.typing.data, or give the run a KG to type its entity links"
    return run_typing_data(
        run_dir,
        tables(),
        validation_fraction=encode.validation_fraction,
        split_seed=encode.seed,
        config=config,
        seed=seed,
    )


def _finish(
    pool: list[TypingItem],
    test: list[TypingItem],
    config: Any,
    seed: int,
    info: dict[str, Any],
    *,
    dev: list[TypingItem] | None = None,
    dev_by_document: bool = False,
) -> TypingData | str:
    """Dev split, caps, the type vocabulary (from the training items) and its restriction."""
    rng = random.Random(seed)
    if dev is None:
        if dev_by_document:
            pool, dev = split_by_document(pool, config.dev_fraction, seed)
        else:
            order = list(range(len(pool)))
            rng.shuffle(order)
            n_dev = int(round(config.dev_fraction * len(pool))) if len(pool) >= 2 else 0
            held = set(order[:n_dev])
            pool, dev = [x for i, x in enumerate(pool) if i not in held], [x for i, x in enumerate(pool) if i in held]
    train = _sample(pool, config.max_train_items, rng)
    types = type_vocabulary(train, min_count=config.min_type_count, max_types=config.max_types)
    if not types:
        return f"no type has {config.min_type_count}+ training mentions ({len(train)} training items)"
    train = restrict_types(train, types)
    dev = restrict_types(_sample(dev, max(1, config.max_train_items // 4), rng), types)
    test = restrict_types(_sample(test, config.max_test_items, rng), types)
    if not train or not test:
        return f"too few typed mentions: {len(train)} for training, {len(test)} for testing"
    train_entities = {e[2] for item in train for e in item.entities if (e[0], e[1]) == (item.start, item.end)}
    test_entities = [
        next((e[2] for e in item.entities if (e[0], e[1]) == (item.start, item.end)), None) for item in test
    ]
    linked = [e for e in test_entities if e is not None]
    info["test_entities_seen_in_training"] = sum(e in train_entities for e in linked) / len(linked) if linked else None
    return TypingData(train=train, dev=dev, test=test, types=types, info=info)
