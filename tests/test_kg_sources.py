"""Loading triples, labels and aliases from files (and their bad-input errors), PyKEEN sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from kg import KGError, KnowledgeGraph, apply_aliases, apply_labels, load_pykeen_dataset, load_triples


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_tsv_without_header(tmp_path) -> None:
    path = write(tmp_path / "t.tsv", "a\tr1\tb\nb\tr2\tc\n\n# comment\nc\tr1\ta\n")
    graph = load_triples(path)
    assert graph.entities == ["a", "b", "c"] and graph.relations == ["r1", "r2"] and graph.num_triples == 3
    assert graph.load_report.rows == 3 and graph.load_report.kept == 3 and graph.load_report.num_skipped == 0


def test_csv_with_header_and_quotes(tmp_path) -> None:
    path = write(tmp_path / "t.csv", 'head,relation,tail\n"Smith, John",knows,Jane\nJane,knows,"Smith, John"\n')
    graph = load_triples(path)
    assert graph.entities == ["Smith, John", "Jane"] and graph.num_triples == 2


def test_header_detection_can_be_forced(tmp_path) -> None:
    path = write(tmp_path / "t.tsv", "head\trelation\ttail\na\tr\tb\n")
    assert load_triples(path, header=False).num_triples == 2
    assert load_triples(path).num_triples == 1


def test_duplicates_are_skipped_and_reported(tmp_path) -> None:
    path = write(tmp_path / "t.tsv", "a\tr\tb\na\tr\tb\nb\tr\ta\na\tr\tb\n")
    graph = load_triples(path)
    assert graph.num_triples == 2
    report = graph.load_report
    assert report.skipped == {"duplicate triple": 2} and report.skipped_lines["duplicate triple"] == [2, 4]
    assert "2 skipped (duplicate triple; lines 2, 4)" in report.summary()
    with pytest.raises(KGError, match=r"t.tsv:2: duplicate triple \(a, r, b\) \(first on line 1\)"):
        load_triples(path, strict=True)


@pytest.mark.parametrize(
    "text, message",
    [
        ("a\tr\tb\na\tr\n", r"t.tsv:2: 2 tab-separated columns, expected 3"),
        ("a\tr\tb\tc\n", r"t.tsv:1: 4 tab-separated columns, expected 3"),
        ("a\t\tb\n", r"t.tsv:1: empty field in column 2"),
        ("", r"t.tsv: no triples"),
        ("# only a comment\n\n", r"t.tsv: no triples"),
    ],
)
def test_bad_rows(tmp_path, text: str, message: str) -> None:
    with pytest.raises(KGError, match=message):
        load_triples(write(tmp_path / "t.tsv", text))


def test_undecodable_bytes_name_the_line(tmp_path) -> None:
    path = write(tmp_path / "t.tsv", b"a\tr\tb\nc\tr\t\xff\xfe\n")
    with pytest.raises(KGError, match=r"t.tsv:2: bytes .* are not valid utf-8.*re-save the file"):
        load_triples(path)
    assert load_triples(path, encoding="latin-1").num_triples == 2


def test_missing_file() -> None:
    with pytest.raises(KGError, match="file not found"):
        load_triples("/nonexistent/triples.tsv")


def test_labels_and_aliases(tmp_path) -> None:
    triples = write(tmp_path / "t.tsv", "q1\tcapital\tq2\n")
    labels = write(tmp_path / "labels.tsv", "q1\tBerlin\nq2\tGermany\nq9\tNowhere\n")
    aliases = write(tmp_path / "aliases.tsv", "q2\tDeutschland|FRG\nq2\tFRG\nq7\tGhost\nq1\tBerlin city\n")
    graph = load_triples(triples, labels=labels, aliases=aliases)
    assert graph.entity_labels == ["Berlin", "Germany"]
    assert graph.entity_aliases == [["Berlin city"], ["Deutschland", "FRG"]]
    report = graph.load_report
    assert report.skipped["unknown entity"] == 2
    assert report.skipped["repeated alias"] == 1
    with pytest.raises(KGError, match=r"labels.tsv:3: entity 'q9' is not in the graph"):
        load_triples(triples, labels=labels, strict=True)
    graph = load_triples(triples)
    with pytest.raises(KGError, match=r"aliases.tsv:3: entity 'q7'"):
        apply_aliases(graph, aliases, strict=True)
    with pytest.raises(KGError, match=r"labels.tsv:1: 3 tab-separated columns, expected 2"):
        apply_labels(graph, write(tmp_path / "labels.tsv", "q1\tBerlin\textra\n"))


@pytest.mark.parametrize(
    "name, entities, relations, triples",
    [
        ("nations", 14, 55, 1992),
        ("kinships", 104, 25, 10686),
        ("UMLS", 135, 46, 6529),
    ],
)
def test_pykeen_bundled_sets(name: str, entities: int, relations: int, triples: int) -> None:
    graph = load_pykeen_dataset(name)
    assert (graph.num_entities, graph.num_relations, graph.num_triples) == (entities, relations, triples)
    assert sum(graph.metadata["split_sizes"]) == triples


def test_pykeen_unknown_name() -> None:
    with pytest.raises(KGError, match="unknown PyKEEN bundled dataset 'fb15k'.*nations, kinships, umls"):
        load_pykeen_dataset("fb15k")


def test_pykeen_round_trip(tmp_path) -> None:
    graph = load_pykeen_dataset("nations")
    graph.save(tmp_path)
    loaded = KnowledgeGraph.load(tmp_path)
    assert loaded == graph and loaded.metadata["split_sizes"] == graph.metadata["split_sizes"]
