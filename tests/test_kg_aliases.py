"""AliasIndex: exact and normalised look-ups, priors, ambiguity, save/load."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kg import AliasIndex, KGError, KnowledgeGraph, normalize_mention


@pytest.fixture()
def index() -> AliasIndex:
    graph = KnowledgeGraph(
        ["Paris", "Paris, Texas", "Paris Hilton"], [], entity_aliases=[["City of Light"], [], ["Hilton"]]
    )
    counts = {"Paris": {0: 8, 1: 1, 2: 1}, "paris": {0: 2}}
    return AliasIndex.from_graph(graph, counts=counts)


def test_normalize_mention() -> None:
    assert normalize_mention("  The U.S.-Army ") == "the us army"
    assert normalize_mention("ROCK\u00a0'n' roll!") == "rock n roll"
    assert normalize_mention("Ｐａｒｉｓ") == "paris"  # NFKC folds full-width letters


def test_ambiguous_lookup_has_priors(index: AliasIndex) -> None:
    candidates = index.lookup("PARIS!")
    assert [c.entity_id for c in candidates] == [0, 1, 2]
    assert candidates[0].prior == pytest.approx(10 / 12)
    assert sum(c.prior for c in candidates) == pytest.approx(1.0)
    assert candidates[0].alias == "Paris"
    assert index.best("paris") == 0


def test_exact_lookup(index: AliasIndex) -> None:
    assert [c.entity_id for c in index.lookup("paris", exact=True)] == [0]
    assert index.lookup("PARIS", exact=True) == []
    assert [c.entity_id for c in index.lookup("city of light")] == [0]
    assert index.lookup("Atlantis") == [] and index.best("Atlantis") == -1
    assert "city of light!" in index


def test_surface_forms(index: AliasIndex) -> None:
    forms = dict(index.surface_forms())
    assert forms["Paris"] == [0, 1, 2] and forms["Hilton"] == [2] and forms["Paris, Texas"] == [1]


def test_save_load(index: AliasIndex, tmp_path) -> None:
    path = index.save(tmp_path / "aliases.tsv")
    assert path.read_text().splitlines()[0] == "alias\tentity_id\tcount"
    loaded = AliasIndex.load(path, num_entities=3)
    assert list(loaded.entries()) == list(index.entries())
    assert loaded.lookup("paris") == index.lookup("paris")


def test_load_skips_unknown_entities(tmp_path) -> None:
    path = tmp_path / "aliases.tsv"
    path.write_text("alias\tentity_id\tcount\nParis\t0\t3\nGhost\t9\t1\nParis\t1\t1\n")
    loaded = AliasIndex.load(path, num_entities=2)
    assert loaded.load_report.skipped == {"unknown entity": 1} and loaded.load_report.skipped_lines[
        "unknown entity"
    ] == [3]
    assert len(loaded.lookup("paris")) == 2
    with pytest.raises(KGError, match=r"aliases.tsv:3: entity id 9 is not in the graph"):
        AliasIndex.load(path, num_entities=2, strict=True)


@pytest.mark.parametrize(
    "row, message",
    [
        ("Paris\t0\n", "2 tab-separated columns"),
        ("Paris\tzero\t1\n", "must be integers"),
        ("\t0\t1\n", "empty alias"),
    ],
)
def test_load_bad_rows(tmp_path, row: str, message: str) -> None:
    path = tmp_path / "aliases.tsv"
    path.write_text("alias\tentity_id\tcount\n" + row)
    with pytest.raises(KGError, match=rf"aliases.tsv:2: .*{message}"):
        AliasIndex.load(path)


@given(st.text(max_size=30))
def test_normalisation_is_idempotent(text: str) -> None:
    once = normalize_mention(text)
    assert normalize_mention(once) == once


def test_contains_agrees_with_lookup_for_punctuation_only_aliases() -> None:
    index = AliasIndex()
    index.add("++", 0)
    assert index.lookup("  ++ ") and "  ++ " in index
    assert not index.lookup("--") and "--" not in index
