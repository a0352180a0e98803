"""KnowledgeGraph: vocabulary, tensors, networkx view, stats, neighbourhood, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kg import KGError, KnowledgeGraph


@pytest.fixture()
def small() -> KnowledgeGraph:
    graph = KnowledgeGraph.from_triples(
        [
            ("Berlin", "capital_of", "Germany"),
            ("Paris", "capital_of", "France"),
            ("Germany", "borders", "France"),
            ("France", "borders", "Germany"),
            ("Berlin", "capital_of", "Germany"),
        ],
        entities=["Lonely"],
    )
    graph.entity_aliases[graph.entity_id("Germany")] = ["Deutschland", "FRG"]
    graph.entity_labels[graph.entity_id("Berlin")] = "Berlin, capital"
    return graph


def test_vocabulary_and_ids(small: KnowledgeGraph) -> None:
    assert small.entities == ["Lonely", "Berlin", "Germany", "Paris", "France"]
    assert small.relations == ["capital_of", "borders"]
    assert small.num_entities == 5 and small.num_relations == 2 and small.num_triples == 4  # duplicate dropped
    assert small.triples.dtype == torch.long and small.triples.shape == (4, 3)
    assert small.entity_id("Germany") == 2 and small.relation_id("borders") == 1
    assert small.triple_names()[0] == ("Berlin", "capital_of", "Germany")
    with pytest.raises(KGError, match="unknown entity 'Atlantis'"):
        small.entity_id("Atlantis")
    with pytest.raises(KGError, match="unknown relation"):
        small.relation_id("likes")


def test_invalid_construction() -> None:
    with pytest.raises(KGError, match="occurs twice"):
        KnowledgeGraph(["a", "a"], ["r"])
    with pytest.raises(KGError, match="outside"):
        KnowledgeGraph(["a"], ["r"], [[0, 0, 3]])
    with pytest.raises(KGError, match=r"shape \[n, 3\]"):
        KnowledgeGraph(["a"], ["r"], [[0, 0]])
    with pytest.raises(KGError, match="empty name"):
        KnowledgeGraph(["a", " "], ["r"])


def test_networkx_view(small: KnowledgeGraph) -> None:
    view = small.to_networkx()
    assert view.number_of_nodes() == 5 and view.number_of_edges() == 4
    assert view.nodes[1]["name"] == "Berlin" and view.nodes[1]["label"] == "Berlin, capital"
    assert view.has_edge(2, 4, key="borders") and view.has_edge(4, 2, key="borders")
    assert view.edges[1, 2, "capital_of"]["relation_id"] == 0


def test_stats(small: KnowledgeGraph) -> None:
    stats = small.stats()
    assert (stats.num_entities, stats.num_relations, stats.num_triples) == (5, 2, 4)
    assert stats.num_isolated_entities == 1
    assert stats.degree_max == 3 and stats.degree_min == 0
    assert stats.relation_frequencies == {"capital_of": 2, "borders": 2}
    assert stats.num_components == 2 and stats.largest_component_size == 4  # Lonely is its own component
    assert stats.degree_histogram == {"0": 1, "1": 2, "2-3": 2}
    assert sum(stats.degree_histogram.values()) == 5
    json.dumps(stats.to_dict())


def test_neighbourhood(small: KnowledgeGraph) -> None:
    hood = small.neighbourhood("Berlin")
    assert hood.names(small) == ["Berlin", "Germany"]
    assert hood.triple_names(small) == [("Berlin", "capital_of", "Germany")]
    two = small.neighbourhood("Berlin", hops=2)
    assert set(two.names(small)) == {"Berlin", "Germany", "France"}
    assert two.distances[small.entity_id("France")] == 2
    assert ("Germany", "borders", "France") in two.triple_names(small)
    incoming = small.neighbourhood("Germany", direction="in")
    assert set(incoming.names(small)) == {"Germany", "Berlin", "France"}
    assert small.neighbourhood("Lonely", hops=3).entities == [0]
    assert small.neighbourhood(2).center == 2
    with pytest.raises(KGError):
        small.neighbourhood("Berlin", direction="sideways")


def test_save_load_round_trip(small: KnowledgeGraph, tmp_path) -> None:
    small.metadata["source"] = "unit test"
    small.save(tmp_path / "kg")
    files = sorted(p.name for p in (tmp_path / "kg").iterdir())
    assert files == ["entities.tsv", "metadata.json", "relations.tsv", "stats.json", "triples.tsv"]
    header = (tmp_path / "kg" / "entities.tsv").read_text().splitlines()[0]
    assert header == "id\tname\tlabel\taliases"
    assert "2\tGermany\tGermany\tDeutschland|FRG" in (tmp_path / "kg" / "entities.tsv").read_text()
    loaded = KnowledgeGraph.load(tmp_path / "kg")
    assert loaded == small and loaded.metadata == {"source": "unit test"}
    assert KnowledgeGraph.load(tmp_path) == small  # a run directory works too
    assert json.loads((tmp_path / "kg" / "stats.json").read_text())["num_triples"] == 4
    assert not list((tmp_path / "kg").glob("*.tmp-*"))


def test_load_rejects_edited_files(small: KnowledgeGraph, tmp_path) -> None:
    small.save(tmp_path)
    triples = tmp_path / "triples.tsv"
    triples.write_text(triples.read_text() + "Berlin\tcapital_of\tAtlantis\n")
    with pytest.raises(KGError, match=r"triples.tsv:6: name 'Atlantis'"):
        KnowledgeGraph.load(tmp_path)
    triples.write_text("head\trelation\ttail\nBerlin\tcapital_of\n")
    with pytest.raises(KGError, match=r"triples.tsv:2: 2 tab-separated columns"):
        KnowledgeGraph.load(tmp_path)
    (tmp_path / "entities.tsv").write_text("id\tname\tlabel\taliases\n1\tBerlin\tBerlin\t\n")
    with pytest.raises(KGError, match=r"entities.tsv:2: id '1' where 0"):
        KnowledgeGraph.load(tmp_path)
    with pytest.raises(KGError, match="missing entities.tsv"):
        KnowledgeGraph.load(tmp_path / "nowhere")


def test_empty_graph_is_valid_but_has_zero_stats() -> None:
    graph = KnowledgeGraph([], [])
    stats = graph.stats()
    assert stats.num_entities == 0 and stats.num_components == 0


_name = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=12).filter(
    lambda s: s.strip() != "" and s.strip() == s
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(_name, min_size=1, max_size=8, unique=True),
    relations=st.lists(_name, min_size=1, max_size=3, unique=True),
    data=st.data(),
)
def test_save_load_round_trip_property(tmp_path, names, relations, data) -> None:
    rows = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, len(names) - 1), st.integers(0, len(relations) - 1), st.integers(0, len(names) - 1)
            ),
            max_size=20,
        )
    )
    aliases = [data.draw(st.lists(_name.filter(lambda s: "|" not in s), max_size=2)) for _ in names]
    graph = KnowledgeGraph(names, relations, rows, entity_aliases=aliases)
    directory = tmp_path / f"kg{abs(hash((tuple(names), tuple(rows))))}"
    graph.save(directory)
    assert KnowledgeGraph.load(directory) == graph
