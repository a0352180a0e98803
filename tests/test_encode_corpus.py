"""Corpus loading: txt / jsonl / parquet / HF dataset dir → documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kept.corpus import documents_to_dataset, read_corpus, write_documents
from kept.errors import KeptError
from masking.documents import iter_documents

DOCS = [
    {
        "id": "a",
        "title": "A",
        "text": "Paris is in France.",
        "spans": [{"start": 0, "end": 5, "kind": "entity", "label": "LOC", "entity_id": 3, "source": "gold"}],
    },
    {"id": "b", "title": "B", "text": "Rome is old.", "spans": []},
]


def test_txt_file_blocks_and_directory_files(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("First doc\nstill first.\n\nSecond doc.\n\n\n")
    documents = read_corpus(path)
    assert [d["text"] for d in documents] == ["First doc\nstill first.", "Second doc."]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "x.txt").write_text("one")
    (folder / "y.txt").write_text("two")
    assert [d["text"] for d in read_corpus(folder)] == ["one", "two"]


def test_jsonl_keeps_gold_spans_and_field_names(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({**d, "body": d["text"]}) + "\n" for d in DOCS))
    documents = read_corpus(path)
    assert documents == DOCS
    assert [d["text"] for d in read_corpus(path, text_field="body", max_documents=1)] == [DOCS[0]["text"]]


def test_parquet_and_hf_dataset_dir(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": d["id"], "text": d["text"]} for d in DOCS]), tmp_path / "c.parquet")
    assert [d["id"] for d in read_corpus(tmp_path / "c.parquet")] == ["a", "b"]
    documents_to_dataset(DOCS).save_to_disk(str(tmp_path / "hf"))
    assert read_corpus(tmp_path / "hf") == DOCS


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "corpus" / "documents.jsonl"
    assert write_documents(DOCS, path) == 2
    assert list(iter_documents(path)) == DOCS  # masking's reader of documents.jsonl reads what kept writes
    assert not list(path.parent.glob("*.tmp-*"))


@pytest.mark.parametrize(
    "line, match",
    [
        ("{bad json", "not valid JSON"),
        ('{"title": "no text"}', "has no 'text' field"),
        ('{"text": "abc", "spans": [{"start": 1, "end": 9}]}', "outside the text"),
        (
            '{"text": "abc", "spans": [{"start": 0, "end": 2, "kind": "word"}]}',
            r"kind 'word' is not one of \['entity', 'phrase'\]",
        ),
        ("[1, 2]", "JSON object"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(KeptError, match=match) as info:
        read_corpus(path)
    assert str(path) in str(info.value) and ":2" in str(info.value)


def test_missing_unsupported_and_empty(tmp_path: Path) -> None:
    with pytest.raises(KeptError, match="corpus not found"):
        read_corpus(tmp_path / "absent.txt")
    (tmp_path / "c.csv").write_text("a,b\n")
    with pytest.raises(KeptError, match="unsupported corpus format"):
        read_corpus(tmp_path / "c.csv")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(KeptError, match="no documents"):
        read_corpus(tmp_path / "empty.txt")
