"""Readers of user files, fuzzed: they succeed or raise our error type, never anything else.

Each reader gets arbitrary bytes and structure-aware near-misses (TSV rows with odd columns,
JSON lines of any shape, YAML documents of any shape, FewRel records with wrong fields, spans
with any values). A reader that raises e.g. ``KeyError``/``TypeError``/``UnicodeDecodeError``
would print a traceback in the CLI instead of a one-line message.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusion.errors import FusionError
from kept.errors import KeptError
from kg.errors import KGError
from masking.errors import MaskingError

OUR_ERRORS = (KeptError, KGError, MaskingError, FusionError)
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------------------ strategies

json_scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10)
tsv_rows = st.lists(st.lists(cell, min_size=0, max_size=5), min_size=0, max_size=8)
raw_bytes = st.binary(max_size=300)


def tsv_text(rows: list[list[str]], delimiter: str = "\t") -> bytes:
    return "\n".join(delimiter.join(row) for row in rows).encode("utf-8", "surrogatepass")


def span_like() -> st.SearchStrategy[Any]:
    fields = st.fixed_dictionaries({}, optional={
        "start": st.integers(-5, 40) | json_scalars, "end": st.integers(-5, 40) | json_scalars,
        "kind": st.sampled_from(["entity", "phrase", "other"]) | json_scalars,
        "label": json_scalars, "entity_id": st.integers(-3, 10) | json_scalars, "source": json_scalars})
    return fields | json_values


documents = st.lists(st.fixed_dictionaries({"text": st.text(max_size=30) | json_scalars},
                                           optional={"id": json_scalars, "title": json_scalars,
                                                     "spans": st.lists(span_like(), max_size=3) | json_values}),
                     max_size=4)


def write(data: bytes, suffix: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="kept-fuzz-"))
    path = directory / f"input{suffix}"
    path.write_bytes(data)
    return path


def check_ours_or_success(call: Callable[[], Any]) -> None:
    try:
        call()
    except OUR_ERRORS as error:
        assert "\n" not in str(error), str(error)


# ------------------------------------------------------------------------------------------ kg readers

@FUZZ
@given(data=raw_bytes | tsv_rows.map(tsv_text) | tsv_rows.map(lambda r: tsv_text(r, ",")))
def test_triples_reader(data: bytes) -> None:
    from kg import load_triples

    check_ours_or_success(lambda: load_triples(write(data, ".tsv")))
    check_ours_or_success(lambda: load_triples(write(data, ".csv"), strict=True))


@FUZZ
@given(data=raw_bytes | tsv_rows.map(tsv_text), strict=st.booleans())
def test_label_and_alias_readers(data: bytes, strict: bool) -> None:
    from kg import AliasIndex, load_triples
    from kg.sources import apply_aliases, apply_labels

    triples = write(b"head\trelation\ttail\nParis\tcapital_of\tFrance\nRome\tcapital_of\tItaly\n", ".tsv")
    check_ours_or_success(lambda: load_triples(triples, labels=write(data, ".tsv"), strict=strict))
    check_ours_or_success(lambda: load_triples(triples, aliases=write(data, ".tsv"), strict=strict))
    graph = load_triples(triples)
    check_ours_or_success(lambda: apply_labels(graph, write(data, ".tsv"), strict=strict))
    check_ours_or_success(lambda: apply_aliases(graph, write(data, ".tsv"), strict=strict))
    check_ours_or_success(lambda: AliasIndex.load(write(data, ".tsv"), num_entities=graph.num_entities, strict=strict))


# ------------------------------------------------------------------------------------------ corpus readers

def jsonl(records: list[Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


@FUZZ
@given(data=raw_bytes | documents.map(jsonl) | st.lists(json_values, max_size=4).map(jsonl))
def test_documents_jsonl_readers(data: bytes) -> None:
    from kept.corpus import load_documents, read_documents
    from masking.annotate import iter_documents

    path = write(data, ".jsonl")
    check_ours_or_success(lambda: load_documents(path))
    check_ours_or_success(lambda: read_documents(path))
    check_ours_or_success(lambda: list(iter_documents(path)))
    check_ours_or_success(lambda: load_documents(write(data, ".txt")))


@FUZZ
@given(data=raw_bytes | json_values.map(lambda v: yaml.safe_dump(v).encode())
       | st.dictionaries(st.sampled_from(["name", "train", "encode", "model", "data", "masking", "kg", "eval",
                                          "annotation", "tokenizer", "runs_dir", "other"]),
                         json_values, max_size=4).map(lambda v: yaml.safe_dump(v).encode()))
def test_yaml_run_config_loader(data: bytes) -> None:
    from kept.config import load_config

    check_ours_or_success(lambda: load_config(write(data, ".yaml")))


fewrel_example = st.fixed_dictionaries({}, optional={
    "tokens": st.lists(st.text(max_size=5), max_size=5) | json_values,
    "h": st.tuples(st.text(max_size=5), st.text(max_size=4),
                   st.lists(st.lists(st.integers(-2, 8), max_size=3), max_size=2)).map(list) | json_values,
    "t": st.tuples(st.text(max_size=5), st.text(max_size=4),
                   st.lists(st.lists(st.integers(-2, 8), max_size=3), max_size=2)).map(list) | json_values,
    "relation": json_scalars})


@FUZZ
@given(data=raw_bytes
       | st.dictionaries(st.text(max_size=5), st.lists(fewrel_example, max_size=3) | json_values, max_size=3)
       .map(lambda v: json.dumps(v).encode())
       | st.lists(fewrel_example, max_size=3).map(lambda v: json.dumps(v).encode()))
def test_fewrel_loader(data: bytes) -> None:
    from kept.fewrel import fewrel_documents, load_fewrel

    def load_and_use() -> None:
        dataset = load_fewrel(write(data, ".json"))
        fewrel_documents(dataset)

    check_ours_or_success(load_and_use)


# ------------------------------------------------------------------------------------------ span checking

@FUZZ
@given(text=st.text(max_size=30), spans=st.lists(span_like(), max_size=4) | json_values)
def test_span_checking(text: str, spans: Any) -> None:
    from kept.corpus import make_document
    from masking.spans import check_spans

    check_ours_or_success(lambda: check_spans(text, spans if isinstance(spans, list) else [spans]))
    check_ours_or_success(lambda: check_spans(text, spans if isinstance(spans, list) else [spans], on_invalid="drop"))
    check_ours_or_success(lambda: make_document({"text": text, "spans": spans}, 0, where="fuzz"))


@pytest.mark.parametrize("bad", [{"start": 0}, {"start": "a", "end": 2}, {"start": 0, "end": 99},
                                 {"start": 0, "end": 1, "entity_id": "Q5"}, {"start": 0, "end": 1, "kind": "verb"}])
def test_span_checking_refuses(bad: dict[str, Any]) -> None:
    """The fuzzers above would pass a reader that accepted everything: these must be refused."""
    from kept.corpus import make_document
    from masking.spans import check_spans

    with pytest.raises(MaskingError):
        check_spans("Paris", [bad])
    with pytest.raises(KeptError):
        make_document({"text": "Paris", "spans": [bad]}, 0, where="doc")
