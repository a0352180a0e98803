"""FewRel-format loader: corpus with gold spans, KG triples, relation-classification examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kept.errors import KeptError
from kept.fewrel import (
    ENTITY_MARKERS,
    fewrel_documents,
    fewrel_entities,
    fewrel_triples,
    load_fewrel,
    relation_examples,
)


def test_nyt_set_loads_with_relations_and_names(fewrel_dir: Path) -> None:
    dataset = load_fewrel(fewrel_dir / "val_nyt.json")
    assert len(dataset) == 2500 and len(dataset.relations) == 25
    assert dataset.relation_names.get("P413")  # pid2name.json beside the file
    example = dataset.examples[0]
    start, end = example.char_span(example.head)
    assert example.text[start:end] == " ".join(example.tokens[i] for i in example.head.positions[0])


def test_documents_carry_gold_spans_matching_the_entity_tokens(fewrel_dir: Path) -> None:
    dataset = load_fewrel(fewrel_dir / "val_pubmed.json")
    entities = fewrel_entities(dataset)
    index = {kb: i for i, (kb, _) in enumerate(entities)}
    documents = fewrel_documents(dataset, index)
    assert len(documents) == len(dataset) == 1000
    for document, example in zip(documents[:200], dataset.examples[:200]):
        assert document["spans"], document
        for span in document["spans"]:
            assert span["kind"] == "entity" and span["source"] == "gold" and span["entity_id"] >= 0
            assert entities[span["entity_id"]][0] == span["label"]
        spans = sorted(document["spans"], key=lambda s: s["start"])
        assert all(a["end"] <= b["start"] for a, b in zip(spans, spans[1:]))  # no overlaps
        surface = {document["text"][s["start"] : s["end"]] for s in spans}
        expected = {
            " ".join(example.tokens[i] for i in occ) for e in (example.head, example.tail) for occ in e.positions
        }
        assert surface <= expected
    triples = fewrel_triples(dataset)
    assert len({r for _, r, _ in triples}) == 10


def test_unlabelled_set_is_a_corpus_but_not_a_task(fewrel_dir: Path) -> None:
    dataset = load_fewrel(fewrel_dir / "pubmed_unsupervised.json")
    assert len(dataset) == 2500 and dataset.relations == []
    assert fewrel_triples(dataset) == []
    with pytest.raises(KeptError, match="no relation labels"):
        relation_examples(dataset)


def test_relation_examples_have_markers_at_the_reported_offsets(fewrel_dir: Path) -> None:
    dataset = load_fewrel(fewrel_dir / "val_nyt.json", max_per_relation=4)
    examples, names = relation_examples(dataset)
    assert len(examples) == 100 and len(names) == 25
    for example in examples:
        assert example.text[example.head_marker :].startswith(ENTITY_MARKERS[0])
        assert example.text[example.tail_marker :].startswith(ENTITY_MARKERS[2])
        assert example.words[example.head_word] == ENTITY_MARKERS[0]
        assert example.words[example.tail_word] == ENTITY_MARKERS[2]
        assert names[example.label] == example.relation
        for marker in ENTITY_MARKERS:
            assert example.words.count(marker) == 1


def test_directory_loads_every_file(fewrel_dir: Path) -> None:
    dataset = load_fewrel(fewrel_dir)
    assert len(dataset) == 2500 + 1000 + 2500


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ('{"P1": [{"tokens": ["a"], "h": ["a", "Q1", [[0]]]}]}', "lacks 'tokens', 'h' or 't'"),
        ('{"P1": [{"tokens": ["a"], "h": ["a", "Q1", [[0]]], "t": ["b", "Q2", [[5]]]}]}', "points past"),
        ('{"P1": [{"tokens": ["a"], "h": ["a", "Q1", []], "t": ["a", "Q2", [[0]]]}]}', "FewRel format"),
        ('"text"', "expected a JSON object"),
    ],
)
def test_malformed_files_are_clear_errors(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(KeptError, match=match):
        load_fewrel(path)


def test_small_synthetic_file(tmp_path: Path) -> None:
    data = {
        "P17": [
            {
                "tokens": ["Paris", "is", "in", "France", "."],
                "h": ["Paris", "Q90", [[0]]],
                "t": ["France", "Q142", [[3]]],
            }
        ]
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    dataset = load_fewrel(path)
    (document,) = fewrel_documents(dataset)
    assert document["text"] == "Paris is in France ."
    assert [(s["start"], s["end"], s["entity_id"]) for s in document["spans"]] == [(0, 5, -1), (12, 18, -1)]
    (example,), names = relation_examples(dataset)
    assert example.text == "[E1] Paris [/E1] is in [E2] France [/E2] ."
    assert names == ["P17"]
    with pytest.raises(KeptError, match="not found"):
        load_fewrel(tmp_path / "absent.json")
