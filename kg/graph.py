"""``KnowledgeGraph``: entity/relation vocabularies with stable ids, labels, aliases and id triples."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kg.errors import KGError
from kg.graph_files import (  # re-exported: the file format's names stay importable from here
    ALIAS_SEPARATOR,
    ENTITIES_FILE,
    METADATA_FILE,
    RELATIONS_FILE,
    STATS_FILE,
    TRIPLES_FILE,
    read_graph_files,
    read_triple_rows,
    save_graph,
    split_aliases,
)
from kg.report import LoadReport

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx

__all__ = [
    "ALIAS_SEPARATOR",
    "ENTITIES_FILE",
    "METADATA_FILE",
    "RELATIONS_FILE",
    "STATS_FILE",
    "TRIPLES_FILE",
    "KGStats",
    "KnowledgeGraph",
    "Neighbourhood",
    "read_triple_rows",
    "split_aliases",
]


@dataclass
class KGStats:
    """Summary numbers of a graph (``to_dict()`` is what ``kg/stats.json`` holds)."""

    num_entities: int
    num_relations: int
    num_triples: int
    num_isolated_entities: int
    num_self_loops: int
    degree_min: int
    degree_max: int
    degree_mean: float
    degree_median: float
    degree_histogram: dict[str, int]  # bucket ("0", "1", "2-3", "4-7", ...) -> number of entities
    relation_frequencies: dict[str, int]  # relation name -> number of triples, most frequent first
    num_components: int  # weakly connected components (isolated entities count as one each)
    largest_component_size: int
    top_entities_by_degree: list[tuple[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["top_entities_by_degree"] = [list(item) for item in self.top_entities_by_degree]
        return data


@dataclass
class Neighbourhood:
    """Entities within ``hops`` of ``center`` (either direction) and the triples among the walk."""

    center: int
    hops: int
    entities: list[int]  # ordered by distance, then id; includes the center
    distances: dict[int, int]
    triples: torch.Tensor  # [n, 3] (head, relation, tail) ids of the edges traversed

    def names(self, graph: KnowledgeGraph) -> list[str]:
        return [graph.entities[i] for i in self.entities]

    def triple_names(self, graph: KnowledgeGraph) -> list[tuple[str, str, str]]:
        return [(graph.entities[h], graph.relations[r], graph.entities[t]) for h, r, t in self.triples.tolist()]


def _degree_bucket(degree: int) -> str:
    if degree <= 1:
        return str(degree)
    low = 1 << (degree.bit_length() - 1)
    return f"{low}-{2 * low - 1}"


class KnowledgeGraph:
    """Entities and relations with ids == list index, and triples as a ``LongTensor [n, 3]``.

    Names are unique strings (the keys of the vocabulary); labels are display names; aliases are
    other surface forms of an entity. ``metadata`` is free-form JSON (source, predefined split sizes).
    """

    def __init__(
        self,
        entities: Sequence[str],
        relations: Sequence[str],
        triples: torch.Tensor | Sequence[Sequence[int]] | None = None,
        *,
        entity_labels: Sequence[str] | None = None,
        entity_aliases: Sequence[Sequence[str]] | None = None,
        relation_labels: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.entities: list[str] = [str(e) for e in entities]
        self.relations: list[str] = [str(r) for r in relations]
        self._entity_index = self._index(self.entities, "entity")
        self._relation_index = self._index(self.relations, "relation")
        n, m = len(self.entities), len(self.relations)
        self.entity_labels: list[str] = list(entity_labels) if entity_labels is not None else list(self.entities)
        self.entity_aliases: list[list[str]] = (
            [list(a) for a in entity_aliases] if entity_aliases is not None else [[] for _ in range(n)]
        )
        self.relation_labels: list[str] = list(relation_labels) if relation_labels is not None else list(self.relations)
        for what, values, size in (
            ("entity_labels", self.entity_labels, n),
            ("entity_aliases", self.entity_aliases, n),
            ("relation_labels", self.relation_labels, m),
        ):
            if len(values) != size:
                raise KGError(
                    f"{what} has {len(values)} items for {size} names",
                    where=what,
                    fix="give one item per entity/relation, in id order",
                )
        if triples is None:
            triples = torch.empty((0, 3), dtype=torch.long)
        triples = torch.as_tensor(triples, dtype=torch.long)
        if triples.numel() == 0:
            triples = triples.reshape(0, 3)
        if triples.ndim != 2 or triples.shape[1] != 3:
            raise KGError(
                f"triples must have shape [n, 3], got {list(triples.shape)}",
                where="triples",
                fix="pass (head id, relation id, tail id) rows",
            )
        if len(triples):
            for column, size, what in ((0, n, "head"), (1, m, "relation"), (2, n, "tail")):
                ids = triples[:, column]
                if int(ids.min()) < 0 or int(ids.max()) >= size:
                    bad = int(((ids < 0) | (ids >= size)).nonzero()[0, 0])
                    raise KGError(
                        f"{what} id {int(ids[bad])} of triple {bad} is outside 0..{size - 1}",
                        where="triples",
                        fix="use ids of the given vocabularies",
                    )
        self.triples: torch.Tensor = triples.contiguous()
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.load_report: LoadReport | None = None

    @staticmethod
    def _index(names: list[str], what: str) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, name in enumerate(names):
            if not name.strip():
                raise KGError(f"{what} {i} has an empty name", where=f"{what} names", fix="give every entry a name")
            if name in index:
                raise KGError(
                    f"{what} name {name!r} occurs twice (ids {index[name]} and {i})",
                    where=f"{what} names",
                    fix="names must be unique",
                )
            index[name] = i
        return index

    # construction ---------------------------------------------------------------------------
    @classmethod
    def from_triples(
        cls,
        triples: Iterable[tuple[str, str, str]],
        *,
        entities: Sequence[str] = (),
        relations: Sequence[str] = (),
        dedupe: bool = True,
        **kwargs: Any,
    ) -> KnowledgeGraph:
        """Build from (head, relation, tail) names; ids follow ``entities``/``relations`` then first appearance."""
        entity_index: dict[str, int] = {}
        relation_index: dict[str, int] = {}
        for name in entities:
            entity_index.setdefault(name, len(entity_index))
        for name in relations:
            relation_index.setdefault(name, len(relation_index))
        rows: list[tuple[int, int, int]] = []
        seen: set[tuple[int, int, int]] = set()
        for head, relation, tail in triples:
            row = (
                entity_index.setdefault(head, len(entity_index)),
                relation_index.setdefault(relation, len(relation_index)),
                entity_index.setdefault(tail, len(entity_index)),
            )
            if dedupe:
                if row in seen:
                    continue
                seen.add(row)
            rows.append(row)
        tensor = torch.tensor(rows, dtype=torch.long) if rows else torch.empty((0, 3), dtype=torch.long)
        return cls(list(entity_index), list(relation_index), tensor, **kwargs)

    # vocabulary -------------------------------------------------------------------------------
    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def num_triples(self) -> int:
        return int(self.triples.shape[0])

    @property
    def entity_to_id(self) -> dict[str, int]:
        return dict(self._entity_index)

    @property
    def relation_to_id(self) -> dict[str, int]:
        return dict(self._relation_index)

    def has_entity(self, name: str) -> bool:
        return name in self._entity_index

    def entity_id(self, name: str) -> int:
        try:
            return self._entity_index[name]
        except KeyError:
            raise KGError(
                f"unknown entity {name!r}",
                where="entity",
                fix="use a name from entities.tsv (AliasIndex.lookup finds entities by surface form)",
            ) from None

    def relation_id(self, name: str) -> int:
        try:
            return self._relation_index[name]
        except KeyError:
            raise KGError(
                f"unknown relation {name!r}",
                where="relation",
                fix=f"use one of {', '.join(self.relations[:10])}{' ...' if self.num_relations > 10 else ''}",
            ) from None

    def _resolve(self, entity: str | int) -> int:
        if isinstance(entity, (int,)) and not isinstance(entity, bool):
            if not 0 <= entity < self.num_entities:
                raise KGError(f"entity id {entity} is outside 0..{self.num_entities - 1}", where="entity")
            return int(entity)
        return self.entity_id(str(entity))

    def triple_names(self, limit: int | None = None) -> list[tuple[str, str, str]]:
        rows = self.triples if limit is None else self.triples[:limit]
        return [(self.entities[h], self.relations[r], self.entities[t]) for h, r, t in rows.tolist()]

    # views ----------------------------------------------------------------------------------
    def to_networkx(self) -> nx.MultiDiGraph:
        """Nodes are entity ids (attributes name, label); edges carry key/relation name and relation_id."""
        import networkx as nx

        graph = nx.MultiDiGraph()
        graph.add_nodes_from(
            (i, {"name": name, "label": label})
            for i, (name, label) in enumerate(zip(self.entities, self.entity_labels))
        )
        graph.add_edges_from(
            (h, t, self.relations[r], {"relation": self.relations[r], "relation_id": r})
            for h, r, t in self.triples.tolist()
        )
        return graph

    def degrees(self) -> torch.Tensor:
        """Total (in + out) degree of every entity, ``LongTensor [num_entities]``."""
        degree = torch.zeros(self.num_entities, dtype=torch.long)
        if self.num_triples:
            degree += torch.bincount(self.triples[:, 0], minlength=self.num_entities)
            degree += torch.bincount(self.triples[:, 2], minlength=self.num_entities)
        return degree

    def _components(self) -> tuple[int, int]:
        if self.num_entities == 0:
            return 0, 0
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        heads, tails = self.triples[:, 0].numpy(), self.triples[:, 2].numpy()
        matrix = coo_matrix(([1] * len(heads), (heads, tails)), shape=(self.num_entities, self.num_entities))
        count, labels = connected_components(matrix, directed=True, connection="weak")
        sizes = Counter(labels.tolist())
        return int(count), int(max(sizes.values()))

    def stats(self, top: int = 10) -> KGStats:
        degree = self.degrees()
        histogram: Counter[str] = Counter(_degree_bucket(int(d)) for d in degree.tolist())
        ordered_buckets = sorted(histogram, key=lambda b: int(b.split("-")[0]))
        rel_counts = (
            torch.bincount(self.triples[:, 1], minlength=self.num_relations).tolist()
            if self.num_triples
            else [0] * self.num_relations
        )
        frequencies = {self.relations[i]: int(c) for i, c in sorted(enumerate(rel_counts), key=lambda x: (-x[1], x[0]))}
        components, largest = self._components()
        order = torch.argsort(degree, descending=True, stable=True)[:top].tolist() if self.num_entities else []
        as_float = degree.double()
        return KGStats(
            num_entities=self.num_entities,
            num_relations=self.num_relations,
            num_triples=self.num_triples,
            num_isolated_entities=int((degree == 0).sum()),
            num_self_loops=int((self.triples[:, 0] == self.triples[:, 2]).sum()) if self.num_triples else 0,
            degree_min=int(degree.min()) if self.num_entities else 0,
            degree_max=int(degree.max()) if self.num_entities else 0,
            degree_mean=round(float(as_float.mean()), 4) if self.num_entities else 0.0,
            degree_median=float(as_float.median()) if self.num_entities else 0.0,
            degree_histogram={b: histogram[b] for b in ordered_buckets},
            relation_frequencies=frequencies,
            num_components=components,
            largest_component_size=largest,
            top_entities_by_degree=[(self.entities[i], int(degree[i])) for i in order],
        )

    def neighbourhood(
        self, entity: str | int, hops: int = 1, *, direction: str = "both", max_entities: int | None = None
    ) -> Neighbourhood:
        """Breadth-first walk of ``hops`` steps from ``entity`` along out-, in- or both-direction edges."""
        if hops < 0:
            raise KGError(f"hops must be >= 0, got {hops}", where="hops")
        if direction not in ("both", "out", "in"):
            raise KGError(f"direction must be 'both', 'out' or 'in', got {direction!r}", where="direction")
        center = self._resolve(entity)
        adjacency = self._adjacency()
        distances = {center: 0}
        edges: list[int] = []
        frontier = deque([center])
        while frontier:
            node = frontier.popleft()
            if distances[node] >= hops:
                continue
            for edge_index, other, outgoing in adjacency.get(node, ()):
                if (direction == "out" and not outgoing) or (direction == "in" and outgoing):
                    continue
                if other not in distances and (max_entities is None or len(distances) < max_entities):
                    distances[other] = distances[node] + 1
                    frontier.append(other)
                if other in distances:  # final: an entity left out by max_entities never joins later
                    edges.append(edge_index)
        unique_edges = sorted(set(edges))
        triples = self.triples[unique_edges] if unique_edges else torch.empty((0, 3), dtype=torch.long)
        entities = sorted(distances, key=lambda i: (distances[i], i))
        return Neighbourhood(center=center, hops=hops, entities=entities, distances=distances, triples=triples)

    def _adjacency(self) -> dict[int, list[tuple[int, int, bool]]]:
        cached = getattr(self, "_adjacency_cache", None)
        if cached is not None and cached[0] == self.num_triples:
            return cached[1]
        adjacency: dict[int, list[tuple[int, int, bool]]] = {}
        for index, (head, _, tail) in enumerate(self.triples.tolist()):
            adjacency.setdefault(head, []).append((index, tail, True))
            if tail != head:
                adjacency.setdefault(tail, []).append((index, head, False))
        self._adjacency_cache = (self.num_triples, adjacency)
        return adjacency

    # persistence (the file format: kg.graph_files) -------------------------------------------
    def save(self, directory: str | Path, *, write_stats: bool = True) -> Path:
        """Write entities.tsv, relations.tsv, triples.tsv (+ stats.json, metadata.json) atomically."""
        return save_graph(self, directory, write_stats=write_stats)

    @classmethod
    def load(cls, directory: str | Path) -> KnowledgeGraph:
        """Read a ``kg/`` directory (or a run directory holding ``kg/``) written by :meth:`save`."""
        tables = read_graph_files(directory)
        return cls(tables.pop("entities"), tables.pop("relations"), tables.pop("triples"), **tables)

    def __repr__(self) -> str:
        return (
            f"KnowledgeGraph(entities={self.num_entities}, relations={self.num_relations}, triples={self.num_triples})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KnowledgeGraph):
            return NotImplemented
        return (
            self.entities == other.entities
            and self.relations == other.relations
            and self.entity_labels == other.entity_labels
            and self.entity_aliases == other.entity_aliases
            and self.relation_labels == other.relation_labels
            and torch.equal(self.triples, other.triples)
        )

    __hash__ = None  # type: ignore[assignment]
