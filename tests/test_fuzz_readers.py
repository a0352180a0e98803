"""Readers of user files, fuzzed: they succeed or raise our error type, never anything else.

Each reader gets arbitrary bytes and structure-aware near-misses (TSV rows with odd columns,
JSON lines of any shape, YAML documents of any shape, FewRel records with wrong fields, spans
with any values). A reader that raises e.g. ``KeyError``/``TypeError``/``UnicodeDecodeError``
would print a traceback in the CLI instead of a one-line message.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

json_scalars = (
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=True) | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10)
tsv_rows = st.lists(st.lists(cell, min_size=0, max_size=5), min_size=0, max_size=8)
raw_bytes = st.binary(max_size=300)


def tsv_text(rows: list[list[str]], delimiter: str = "\t") -> bytes:
    return "\n".join(delimiter.join(row) for row in rows).encode("utf-8", "surrogatepass")


def span_like() -> st.SearchStrategy[Any]:
    fields = st.fixed_dictionaries(
        {},
        optional={
            "start": st.integers(-5, 40) | json_scalars,
            "end": st.integers(-5, 40) | json_scalars,
            "kind": st.sampled_from(["entity", "phrase", "other"]) | json_scalars,
            "label": json_scalars,
            "entity_id": st.integers(-3, 10) | json_scalars,
            "source": json_scalars,
        },
    )
    return fields | json_values


documents = st.lists(
    st.fixed_dictionaries(
        {"text": st.text(max_size=30) | json_scalars},
        optional={"id": json_scalars, "title": json_scalars, "spans": st.lists(span_like(), max_size=3) | json_values},
    ),
    max_size=4,
)


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
    from kept.corpus import read_corpus
    from masking.documents import iter_documents

    path = write(data, ".jsonl")
    check_ours_or_success(lambda: read_corpus(path))
    check_ours_or_success(lambda: list(iter_documents(path)))
    check_ours_or_success(lambda: read_corpus(write(data, ".txt")))


@FUZZ
@given(
    data=raw_bytes
    | json_values.map(lambda v: yaml.safe_dump(v).encode())
    | st.dictionaries(
        st.sampled_from(
            [
                "name",
                "train",
                "encode",
                "model",
                "data",
                "masking",
                "kg",
                "eval",
                "annotation",
                "tokenizer",
                "runs_dir",
                "other",
            ]
        ),
        json_values,
        max_size=4,
    ).map(lambda v: yaml.safe_dump(v).encode())
)
def test_yaml_run_config_loader(data: bytes) -> None:
    from kept.config import load_config

    check_ours_or_success(lambda: load_config(write(data, ".yaml")))


#: Pieces of YAML syntax (structure, scalars of every YAML type, tags, anchors, aliases, merge keys,
#: directives) and real keys, put together in any order: text that is nearly a configuration.
YAML_PIECES = [
    "\n",
    "  ",
    "    ",
    "\t",
    "- ",
    ": ",
    ":",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "? ",
    "| ",
    "> ",
    "'",
    '"',
    "#",
    "&a ",
    "*a",
    "<<: ",
    "!!str ",
    "!!int ",
    "!!binary ",
    "!!python/object:os.system ",
    "!!set ",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "~",
    "null",
    "true",
    "no",
    "1",
    "-1",
    "0x1F",
    "1e5",
    "1.0e-5",
    ".inf",
    ".nan",
    "2001-12-14",
    "12:30:45",
    "x" * 300,
    "\u00e9",
    "\ufeff",
    "name",
    "train",
    "model",
    "overrides",
    "hidden_size",
    "hiden_size",
    "max_steps",
    "encode",
    "max_length",
    "masking",
    "eval",
    "kg",
    "dim",
    "data",
    "source",
    "runs_dir",
    "init_from",
]
yaml_ish = st.lists(st.sampled_from(YAML_PIECES), max_size=40).map(lambda pieces: "".join(pieces).encode("utf-8"))


def _section_fields() -> dict[str, list[str]]:
    """Every section of a run configuration and its real field names (model.overrides: KeptConfig's)."""
    from pydantic import BaseModel

    from kept.config import RunConfig, kept_config_fields

    fields: dict[str, list[str]] = {}
    for name, info in RunConfig.model_fields.items():
        cls = info.annotation
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            fields[name] = list(cls.model_fields)
        else:
            fields[name] = []
    fields["overrides"] = list(kept_config_fields())
    return fields


odd_values = json_values | st.sampled_from(
    [
        "",
        "many",
        "1e-5",
        "run:x",
        "/nonexistent",
        0,
        -1,
        10**30,
        0.5,
        1.5,
        -0.0,
        float("inf"),
        True,
        False,
        None,
        [],
        {},
        [1, "a"],
        {"a": 1},
    ]
)


def _config_of(fields: dict[str, list[str]]) -> st.SearchStrategy[dict[str, Any]]:
    def section(name: str) -> st.SearchStrategy[Any]:
        keys = st.sampled_from(fields[name] + ["unknown_key"]) if fields[name] else st.text(max_size=8)
        body = st.dictionaries(keys, odd_values, max_size=4)
        if name == "model":
            overrides = st.dictionaries(
                st.sampled_from(fields["overrides"] + ["hiden_size"]) | st.text(max_size=6), odd_values, max_size=4
            )
            body = st.builds(lambda b, o: {**b, "overrides": o}, body, overrides) | body
        return body | odd_values

    names = [name for name in fields if name != "overrides"]
    return st.lists(st.sampled_from(names + ["other"]), unique=True, max_size=4).flatmap(
        lambda chosen: st.fixed_dictionaries({name: section(name) if name in fields else odd_values for name in chosen})
    )


field_aware_configs = st.deferred(lambda: _config_of(_section_fields()))


@FUZZ
@given(data=yaml_ish)
def test_yaml_ish_text_is_a_config_or_our_error(data: bytes) -> None:
    from kept.config import load_config

    check_ours_or_success(lambda: load_config(write(data, ".yaml")))


@FUZZ
@given(config=field_aware_configs)
def test_field_aware_configs_validate_or_give_our_error(config: dict[str, Any]) -> None:
    """Real section and field names (model.overrides: KeptConfig's) with values of any type."""
    from kept.config import read_yaml, validate_config

    check_ours_or_success(lambda: validate_config(config))
    text = yaml.safe_dump(config, allow_unicode=True).encode("utf-8")
    path = write(text, ".yaml")
    check_ours_or_success(lambda: validate_config(read_yaml(path)[0], source=path, text=text.decode("utf-8")))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 3000,
        "train: {max_steps: " + "[" * 200 + "]" * 200 + "}",
        "model:\n  overrides:\n" + "".join("  " * (i + 2) + f"k{i}:\n" for i in range(80)),
    ],
)
def test_deeply_nested_yaml_is_refused(text: str) -> None:
    """PyYAML composes nested nodes recursively: very deep nesting was a RecursionError traceback."""
    from kept.config import MAX_YAML_DEPTH, load_config

    with pytest.raises(KeptError, match=f"nested more than {MAX_YAML_DEPTH} levels deep") as info:
        load_config(write(text.encode("utf-8"), ".yaml"))
    assert info.value.line is not None


@pytest.mark.parametrize(
    "text, what",
    [
        ("!!int ", "the value '' cannot be read as a YAML int (IndexError)"),
        ("train:\n  max_steps: !!float many\n", "YAML float (ValueError)"),
        ("!!set ---\n", "expected a mapping node"),
    ],
)
def test_odd_tagged_values_are_refused(text: str, what: str) -> None:
    """Found by the fuzzing above: PyYAML's constructors raised IndexError/ValueError on these."""
    from kept.config import load_config

    with pytest.raises(KeptError, match="not valid YAML|cannot be read") as info:
        load_config(write(text.encode("utf-8"), ".yaml"))
    assert what in str(info.value) and info.value.line == text.count("\n", 0, text.find("!!")) + 1


fewrel_example = st.fixed_dictionaries(
    {},
    optional={
        "tokens": st.lists(st.text(max_size=5), max_size=5) | json_values,
        "h": st.tuples(
            st.text(max_size=5), st.text(max_size=4), st.lists(st.lists(st.integers(-2, 8), max_size=3), max_size=2)
        ).map(list)
        | json_values,
        "t": st.tuples(
            st.text(max_size=5), st.text(max_size=4), st.lists(st.lists(st.integers(-2, 8), max_size=3), max_size=2)
        ).map(list)
        | json_values,
        "relation": json_scalars,
    },
)


@FUZZ
@given(
    data=raw_bytes
    | st.dictionaries(st.text(max_size=5), st.lists(fewrel_example, max_size=3) | json_values, max_size=3).map(
        lambda v: json.dumps(v).encode()
    )
    | st.lists(fewrel_example, max_size=3).map(lambda v: json.dumps(v).encode())
)
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


@pytest.mark.parametrize(
    "bad",
    [
        {"start": 0},
        {"start": "a", "end": 2},
        {"start": 0, "end": 99},
        {"start": 0, "end": 1, "entity_id": "Q5"},
        {"start": 0, "end": 1, "kind": "verb"},
    ],
)
def test_span_checking_refuses(bad: dict[str, Any]) -> None:
    """The fuzzers above would pass a reader that accepted everything: these must be refused."""
    from kept.corpus import make_document
    from masking.spans import check_spans

    with pytest.raises(MaskingError):
        check_spans("Paris", [bad])
    with pytest.raises(KeptError):
        make_document({"text": "Paris", "spans": [bad]}, 0, where="doc")
