"""One seeded split of a KG's triples into training, test and validation, made before anything is embedded.

Held-out triples must not teach the embedding their own answer, and every entity of a held-out
triple must still occur in training (otherwise its embedding is random and the test meaningless).
PyKEEN's coverage split fails on graphs with many degree-1 entities (Wikipedia links) and its
cleanup fallback moved most of the test set back into training (15 of 9k triples in one case).
:func:`split_triples` instead walks the triples in a seeded order and holds a triple out only while
both its entities (and its relation) keep another training triple, until the requested share is
reached; the triples it had to keep for coverage are counted and reported.

Saved in a ``kg/`` directory as ``train_triples.tsv``, ``test_triples.tsv`` and
``validation_triples.tsv`` (the format of ``triples.tsv``: head, relation, tail names) plus
``split.json`` (sizes, seed, ratios, coverage counts); :func:`load_split` reads them back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kg._io import atomic_write_json, read_text, write_tsv
from kg.errors import KGError
from kg.graph import KnowledgeGraph, read_triple_rows

SPLIT_FILES = {"train": "train_triples.tsv", "test": "test_triples.tsv", "validation": "validation_triples.tsv"}
SPLIT_INFO_FILE = "split.json"


@dataclass
class TripleSplit:
    """Row indices into ``graph.triples`` of each part, and how the split was made."""

    train: torch.Tensor  # [n_train] long
    test: torch.Tensor  # [n_test] long
    validation: torch.Tensor  # [n_validation] long
    info: dict[str, Any] = field(default_factory=dict)

    def triples(self, graph: KnowledgeGraph, part: str) -> torch.Tensor:
        """[n, 3] (head, relation, tail) ids of one part."""
        return graph.triples[getattr(self, part)]


def split_triples(
    graph: KnowledgeGraph,
    *,
    test_fraction: float = 0.1,
    validation_fraction: float = 0.0,
    seed: int = 42,
    min_test_triples: int = 200,
) -> TripleSplit:
    """Hold out ``test_fraction`` (then ``validation_fraction``) of the triples, keeping every entity and
    relation of a held-out triple in training.

    The requested test size is ``max(round(test_fraction * n), min(min_test_triples, n // 10))``, so a
    small graph still gets a usable test set. Where coverage makes that impossible the test set is smaller
    and ``info["test_shortfall"]`` says by how much.
    """
    if not 0 < test_fraction < 1 or not 0 <= validation_fraction < 1 or test_fraction + validation_fraction >= 1:
        raise KGError(
            f"test/validation fractions must be in (0, 1) and sum below 1, got {test_fraction}, {validation_fraction}",
            where="ratios",
            fix="e.g. ratios (0.8, 0.1, 0.1)",
        )
    n = graph.num_triples
    if n < 2:
        raise KGError(
            f"cannot split {n} triple(s)", where="graph", fix="load a graph with more triples, or split='none'"
        )
    wanted_test = min(max(round(test_fraction * n), min(min_test_triples, n // 10)), n - 1)
    wanted_validation = round(validation_fraction * n)
    rows = graph.triples.tolist()
    copies: dict[tuple[int, int, int], int] = {}
    for row in rows:
        copies[tuple(row)] = copies.get(tuple(row), 0) + 1
    # how many training triples mention each entity / use each relation (a self loop counts once)
    entity_uses = [0] * graph.num_entities
    relation_uses = [0] * graph.num_relations
    for h, r, t in rows:
        entity_uses[h] += 1
        if t != h:
            entity_uses[t] += 1
        relation_uses[r] += 1
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held: dict[str, list[int]] = {"test": [], "validation": []}
    kept_for_coverage = 0
    wanted = {"test": wanted_test, "validation": wanted_validation}
    for index in order:
        part = "test" if len(held["test"]) < wanted["test"] else "validation"
        if len(held[part]) >= wanted[part]:
            break
        h, r, t = rows[index]
        if copies[(h, r, t)] > 1:
            kept_for_coverage += 1  # a copy would stay in training and give the answer away
            continue
        if entity_uses[h] < 2 or entity_uses[t] < 2 or relation_uses[r] < 2:
            kept_for_coverage += 1  # holding it out would remove an entity or relation from training
            continue
        entity_uses[h] -= 1
        if t != h:
            entity_uses[t] -= 1
        relation_uses[r] -= 1
        held[part].append(index)
    in_held = torch.zeros(n, dtype=torch.bool)
    test = torch.tensor(sorted(held["test"]), dtype=torch.long)
    validation = torch.tensor(sorted(held["validation"]), dtype=torch.long)
    in_held[test] = True
    in_held[validation] = True
    train = torch.nonzero(~in_held).flatten()
    info: dict[str, Any] = {
        "split": "random",
        "split_method": "coverage-greedy",
        "split_seed": seed,
        "ratios": [round(1 - test_fraction - validation_fraction, 6), test_fraction, validation_fraction],
        "num_training": int(train.numel()),
        "num_testing": int(test.numel()),
        "num_validation": int(validation.numel()),
        "requested_testing": wanted_test,
        "kept_for_coverage": kept_for_coverage,
    }
    shortfall = wanted_test - int(test.numel())
    if shortfall > 0:
        info["test_shortfall"] = shortfall
        info["split_note"] = (
            f"only {test.numel()} of {wanted_test} requested test triples could be held out "
            "without removing an entity or relation from training"
        )
    return TripleSplit(train, test, validation, info)


def predefined_split(graph: KnowledgeGraph) -> TripleSplit:
    """The split a graph came with (``metadata['split_sizes']``: training, validation, test rows in order)."""
    sizes = graph.metadata.get("split_sizes")
    if not sizes or sum(sizes) != graph.num_triples:
        raise KGError(
            "the graph has no predefined split (metadata['split_sizes'])",
            where="split",
            fix="use split='random' (or 'auto')",
        )
    n_train, n_valid, _ = (int(s) for s in sizes)
    rows = torch.arange(graph.num_triples)
    info = {
        "split": "predefined",
        "split_sizes": list(sizes),
        "num_training": n_train,
        "num_validation": n_valid,
        "num_testing": graph.num_triples - n_train - n_valid,
    }
    return TripleSplit(rows[:n_train], rows[n_train + n_valid :], rows[n_train : n_train + n_valid], info)


def save_split(split: TripleSplit, graph: KnowledgeGraph, directory: str | Path) -> Path:
    """Write the three triple files and split.json into ``directory`` (a kg/ directory), atomically each."""
    directory = Path(directory)
    names = graph.triple_names()
    for part, file_name in SPLIT_FILES.items():
        write_tsv(
            directory / file_name, ("head", "relation", "tail"), (names[i] for i in getattr(split, part).tolist())
        )
    atomic_write_json(directory / SPLIT_INFO_FILE, split.info)
    return directory


def has_split(directory: str | Path) -> bool:
    directory = Path(directory)
    return all((directory / name).is_file() for name in (SPLIT_FILES["train"], SPLIT_FILES["test"]))


def load_split(graph: KnowledgeGraph, directory: str | Path) -> TripleSplit:
    """Read a split written by :func:`save_split` back as row indices of ``graph.triples``.

    A triple of a split file that is not in the graph is an error naming the file and line (the split
    belongs to another graph: re-run the kg step).
    """
    import json

    directory = Path(directory)
    position: dict[tuple[str, str, str], list[int]] = {}
    for i, triple in enumerate(graph.triple_names()):
        position.setdefault(triple, []).append(i)
    parts: dict[str, torch.Tensor] = {}
    for part, file_name in SPLIT_FILES.items():
        path = directory / file_name
        indices: list[int] = []
        if path.is_file():
            for line_no, triple in read_triple_rows(path):
                if triple not in position:
                    raise KGError(
                        f"triple {triple} is not in triples.tsv",
                        where=path,
                        line=line_no,
                        fix="the split belongs to another graph: re-run the kg step (`kept kg embed`)",
                    )
                rows = position[triple]
                indices.append(rows.pop(0) if len(rows) > 1 else rows[0])  # duplicates: one row each
        parts[part] = torch.tensor(indices, dtype=torch.long)
    info_path = directory / SPLIT_INFO_FILE
    info = json.loads(read_text(info_path)) if info_path.is_file() else {}
    return TripleSplit(parts["train"], parts["test"], parts["validation"], info)


def train_triples(graph: KnowledgeGraph, directory: str | Path) -> torch.Tensor:
    """[n, 3] the triples training may see: the train part of the split in ``directory``, or all of ``graph``'s
    when it holds none (held-out triples feed only the probe and link prediction)."""
    return load_split(graph, directory).triples(graph, "train") if has_split(directory) else graph.triples


def describe(split: TripleSplit) -> str:
    """One line: sizes and what coverage cost."""
    info = split.info
    text = (
        f"{info.get('num_training', split.train.numel())} training / {split.test.numel()} test / "
        f"{split.validation.numel()} validation triples"
    )
    if info.get("kept_for_coverage"):
        text += f"; {info['kept_for_coverage']} candidates kept in training for coverage"
    if info.get("test_shortfall"):
        text += f"; test set {info['test_shortfall']} short of the {info.get('requested_testing')} requested"
    return text
