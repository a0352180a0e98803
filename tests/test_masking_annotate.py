"""Annotation pipeline: datasets map, caching, shards, num_proc, run directory, CLI, bad input, real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kept.annotation import annotate_run_dir
from kg import AliasIndex, KnowledgeGraph
from masking import AnnotationConfig, MaskingError, annotate, annotation_stats
from masking.annotator import annotate_with_stats
from masking.detectors import load_spacy_pipeline
from masking.documents import documents_from_records, load_documents
from masking.spans import spans_from_token_positions

ENTITIES = ["New York City", "Paris", "Barack Obama", "Microsoft", "Eiffel Tower"]


@pytest.fixture(scope="module")
def graph() -> KnowledgeGraph:
    return KnowledgeGraph(ENTITIES, ["in"], [(4, 0, 1)], entity_aliases=[["NYC"], [], ["Obama"], [], []])


@pytest.fixture(scope="module")
def index(graph) -> AliasIndex:
    return AliasIndex.from_graph(graph)


@pytest.fixture(scope="module")
def nlp():
    return load_spacy_pipeline("en_core_web_sm", ["ner", "parser"])


DOCS = [
    {
        "id": "a",
        "title": "A",
        "text": "Barack Obama saw the Eiffel Tower in Paris.",
        "spans": [{"start": 0, "end": 12, "kind": "entity", "entity_id": 2, "source": "gold"}],
    },
    {"id": "b", "title": "B", "text": "", "spans": []},
    {"id": "c", "title": "C", "text": "Microsoft opened an office in NYC near the big green park.", "spans": []},
    {"id": "d", "title": "D", "text": "Nothing to see here at all.", "spans": []},
]


def write_run(tmp_path: Path, graph: KnowledgeGraph, index: AliasIndex, docs=DOCS) -> Path:
    run = tmp_path / "run"
    (run / "corpus").mkdir(parents=True)
    graph.save(run / "kg")
    index.save(run / "kg" / "aliases.tsv")
    with (run / "corpus" / "documents.jsonl").open("w", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps(doc) + "\n")
    return run


def span_texts(row):
    return [row["text"][s["start"] : s["end"]] for s in row["spans"]]


def test_annotate_resolves_and_links(index, graph, nlp):
    dataset = documents_from_records(DOCS)
    config = AnnotationConfig.from_names("ner,noun_chunk,gazetteer,gold")
    out, stats = annotate_with_stats(dataset, config, index, entity_labels=graph.entity_labels, nlp=nlp)
    assert out.column_names == ["id", "title", "text", "spans"]
    rows = list(out)
    assert span_texts(rows[0])[:3] == ["Barack Obama", "Eiffel Tower", "Paris"]
    assert rows[0]["spans"][0]["source"] == "gold" and rows[0]["spans"][0]["entity_id"] == 2
    assert rows[1]["spans"] == []
    assert "NYC" in span_texts(rows[2]) and "big green park" in span_texts(rows[2])
    for row in rows:  # non-overlapping, in text order
        assert all(a["end"] <= b["start"] for a, b in zip(row["spans"], row["spans"][1:]))
    assert stats["documents"] == 4 and stats["empty_documents"] == 1
    assert stats["spans_by_kind"]["phrase"] >= 1 and stats["linked_fraction"] == 1.0
    assert stats["gold"]["recall_overlap"]["final"] == 1.0
    assert stats["gold"]["recall_exact"]["gazetteer"] == 1.0 and stats["gold"]["link_accuracy"]["gazetteer"] == 1.0
    assert 0 < stats["token_coverage"] < 1
    again = annotation_stats(out, index)
    assert again["spans"] == stats["spans"] and again["linked_entity_spans"] == stats["linked_entity_spans"]


def test_cached_by_content_fingerprint(tmp_path, graph, index):
    run = write_run(tmp_path, graph, index)
    dataset = load_documents(run / "corpus" / "documents.jsonl", cache_dir=tmp_path / "cache")
    config = AnnotationConfig.from_names("gazetteer,gold")
    first, s1 = annotate_with_stats(dataset, config, index)
    second, s2 = annotate_with_stats(dataset, config, index)
    assert s1["fingerprint"] == s2["fingerprint"]
    assert s1["gazetteer_case"]["gazetteer"]["mode"] == "exact"  # a cased KG: auto keeps exact matching
    assert first.cache_files and first.cache_files[0]["filename"] == second.cache_files[0]["filename"]
    assert s1["fingerprint"] in Path(first.cache_files[0]["filename"]).name
    changed = AnnotationConfig.from_names("gazetteer,gold", case_insensitive=True)
    assert annotate_with_stats(dataset, changed, index)[1]["fingerprint"] != s1["fingerprint"]


def test_shards_and_num_proc_give_the_same_spans(tmp_path, graph, index):
    config = AnnotationConfig.from_names("gazetteer,gold")
    dataset = documents_from_records(DOCS * 5)
    whole = annotate(dataset, config, index)["spans"]
    parts = [annotate(dataset, config, index, num_shards=3, shard_index=i)["spans"] for i in range(3)]
    assert [s for part in parts for s in part] == whole
    reported: list[int] = []
    parallel = annotate(
        dataset,
        config.model_copy(update={"num_proc": 2, "map_batch_size": 4}),
        index,
        load_from_cache_file=False,
        progress=reported.append,
    )["spans"]
    assert parallel == whole
    assert sum(reported) == len(dataset) and len(reported) > 1  # progress reaches us from the workers
    empty_shard, empty_stats = annotate_with_stats(
        documents_from_records(DOCS[:1]), config, index, num_shards=2, shard_index=1
    )
    assert len(empty_shard) == 0 and empty_stats["documents"] == 0
    with pytest.raises(MaskingError, match="shard index 3"):
        annotate(dataset, config, index, num_shards=3, shard_index=3)


def test_run_dir_writes_dataset_and_stats_atomically(tmp_path, graph, index):
    from datasets import load_from_disk

    run = write_run(tmp_path, graph, index)
    stats = annotate_run_dir(run, AnnotationConfig.from_names("gazetteer,gold"))
    saved = load_from_disk(str(run / "corpus" / "annotated"))
    assert saved.column_names == ["id", "title", "text", "spans"] and len(saved) == 4
    on_disk = json.loads((run / "corpus" / "annotation_stats.json").read_text())
    assert on_disk["spans"] == stats["spans"] > 0
    assert not [p for p in (run / "corpus").iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    # sharded: the last shard merges
    for i in range(2):
        merged = annotate_run_dir(run, AnnotationConfig.from_names("gazetteer,gold"), num_shards=2, shard_index=i)
    assert merged["shard"]["merged"] and merged["spans"] == stats["spans"]
    assert load_from_disk(str(run / "corpus" / "annotated"))["spans"] == saved["spans"]


def test_cli_annotate(tmp_path, graph, index):
    from typer.testing import CliRunner

    from kept.cli import app

    run = write_run(tmp_path, graph, index)
    result = CliRunner().invoke(app, ["annotate", str(run), "--detectors", "gazetteer,gold"])
    assert result.exit_code == 0, result.output
    assert (run / "corpus" / "annotation_stats.json").exists()
    result = CliRunner().invoke(app, ["annotate", str(run), "--detectors", "gazetteer,nope"])
    assert result.exit_code != 0 and isinstance(result.exception, MaskingError)
    for index_ in range(2):  # shards (as if on two machines), then an explicit merge
        result = CliRunner().invoke(
            app,
            ["annotate", str(run), "--detectors", "gazetteer,gold", "--num-shards", "2", "--shard-index", str(index_)],
        )
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["annotate", str(run), "--merge", "--num-shards", "2"])
    assert result.exit_code == 0 and "merged 2 shards (4 documents)" in result.output
    result = CliRunner().invoke(app, ["annotate", str(run), "--merge", "--num-shards", "3"])
    assert isinstance(result.exception, MaskingError) and "shard 0 of 3 is missing" in str(result.exception)


@pytest.mark.slow  # main() imports every package's error type (fusion pulls in transformers)
def test_cli_main_prints_one_line_error(tmp_path, capsys):
    from kept.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["annotate", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "documents.jsonl" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_corpus_lines_are_named(tmp_path):
    path = tmp_path / "documents.jsonl"
    path.write_bytes(b'{"id": "x", "text": "fine"}\n{"id": "y", "text": "caf\xe9"}\n')
    with pytest.raises(MaskingError, match=r"documents.jsonl:2: line is not UTF-8"):
        load_documents(path, cache_dir=tmp_path / "c")
    assert load_documents(path, cache_dir=tmp_path / "c", undecodable="replace")["text"][1] == "caf\ufffd"
    path.write_text('{"id": "x", "text": "lone \\udc80 surrogate"}\n')
    with pytest.raises(MaskingError, match="surrogates"):
        load_documents(path, cache_dir=tmp_path / "c")
    text = load_documents(path, cache_dir=tmp_path / "c", undecodable="replace")["text"][0]
    assert text == "lone \ufffd surrogate"
    path.write_text('{"id": "x", "text": "abc", "spans": [{"start": 1, "end": 9, "kind": "entity"}]}\n')
    with pytest.raises(MaskingError, match=r"documents.jsonl:1: document 'x' field spans\[0\]: span \[1, 9\)"):
        load_documents(path, cache_dir=tmp_path / "c")
    path.write_text('{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n')
    with pytest.raises(MaskingError, match="duplicate document id 'x'"):
        load_documents(path, cache_dir=tmp_path / "c")
    path.write_text('{"id": "x", "text": "a"\n')
    with pytest.raises(MaskingError, match="invalid JSON"):
        load_documents(path, cache_dir=tmp_path / "c")
    path.write_text("\n\n")
    with pytest.raises(MaskingError, match="no documents"):
        load_documents(path, cache_dir=tmp_path / "c")


def test_invalid_gold_spans_in_a_dataset(index):
    from datasets import Dataset

    bad = Dataset.from_list(
        [
            {
                "id": "q",
                "text": "short",
                "spans": [{"start": 0, "end": 50, "kind": "entity", "label": "", "entity_id": -1, "source": "gold"}],
            }
        ]
    )
    with pytest.raises(MaskingError, match="document 'q'"):
        annotate(bad, AnnotationConfig.from_names("gold"), index)
    out, stats = annotate_with_stats(bad, AnnotationConfig.from_names("gold", invalid_spans="drop"), index)
    assert out["spans"] == [[]] and stats["invalid_input_spans_dropped"] == 1


def test_long_documents_split_or_raise(nlp):
    text = "Barack Obama visited Paris last spring. " * 60  # 2400 characters
    dataset = documents_from_records([{"id": "long", "text": text}])
    config = AnnotationConfig.from_names("ner", max_length=1000)
    nlp.max_length = 1000
    try:
        out, stats = annotate_with_stats(dataset, config, nlp=nlp)
        assert stats["split_documents"] == 1 and stats["counts"]["split_pieces"] >= 2
        assert span_texts(out[0]).count("Barack Obama") >= 55
        strict = config.model_copy(update={"long_documents": "error"})
        with pytest.raises(MaskingError, match=r"document 'long' field text.*max_length 1000"):
            annotate(dataset, strict, nlp=nlp)
    finally:
        nlp.max_length = 1_000_000


def test_missing_text_column_kg_and_aliases(tmp_path, graph):
    from datasets import Dataset

    with pytest.raises(MaskingError, match="no 'text' column"):
        annotate(Dataset.from_list([{"body": "x"}]), AnnotationConfig.from_names("gold"))
    with pytest.raises(MaskingError, match="needs a KG alias index"):
        annotate(documents_from_records(DOCS), AnnotationConfig.from_names("gazetteer"))
    run = write_run(tmp_path, graph, AliasIndex())  # aliases.tsv with a header only
    with pytest.raises(MaskingError, match="no labels or aliases"):
        annotate_run_dir(run, AnnotationConfig.from_names("gazetteer"))
    (run / "kg" / "entities.tsv").unlink()
    with pytest.raises(MaskingError, match="no knowledge graph"):
        annotate_run_dir(run, AnnotationConfig.from_names("gazetteer"))
    stats = annotate_run_dir(run, AnnotationConfig.from_names("gazetteer,gold", missing_kg="skip"))
    assert stats["kg_linked"] is False and stats["documents"] == 4


# ------------------------------------------------------------------------------------------------ real data


def fewrel_documents(fewrel_dir: Path, per_relation: int = 4) -> list[dict]:
    data = json.loads((fewrel_dir / "val_nyt.json").read_text())
    docs = []
    for relation, items in sorted(data.items()):
        for i, item in enumerate(items[:per_relation]):
            text, spans = spans_from_token_positions(
                item["tokens"], [(item["h"][2][0], {"label": item["h"][1]}), (item["t"][2][0], {"label": item["t"][1]})]
            )
            docs.append({"id": f"{relation}-{i}", "title": relation, "text": text, "spans": spans})
    return docs


def test_fewrel_head_tail_recall_of_ner(fewrel_dir, nlp):
    docs = fewrel_documents(fewrel_dir)
    out, stats = annotate_with_stats(documents_from_records(docs), AnnotationConfig.from_names("ner,gold"), nlp=nlp)
    gold = stats["gold"]
    assert gold["gold_entity_spans"] == 2 * len(docs)
    assert gold["recall_overlap"]["final"] == 1.0  # gold spans survive or are covered
    assert gold["recall_overlap"]["ner"] > 0.5, gold


@pytest.mark.slow
def test_wikipedia_gold_links_measure_gazetteer_and_ner_recall(nlp):
    from kg.wikipedia import load_wikipedia_sample

    sample = load_wikipedia_sample(max_documents=3)
    docs = [
        {
            "id": str(d.id),
            "title": d.title,
            "text": d.text[:20000],
            "spans": [
                {"start": link.start, "end": link.end, "kind": "entity", "entity_id": link.entity_id, "source": "gold"}
                for link in d.links
                if link.end <= 20000
            ],
        }
        for d in sample.documents
    ]
    config = AnnotationConfig.from_names("ner,gazetteer,gold")
    _, stats = annotate_with_stats(
        documents_from_records(docs), config, sample.alias_index, entity_labels=sample.graph.entity_labels, nlp=nlp
    )
    gold = stats["gold"]
    assert gold["gold_entity_spans"] > 300
    assert gold["recall_exact"]["gazetteer"] > 0.9 and gold["link_accuracy"]["gazetteer"] > 0.9, gold
    assert gold["recall_overlap"]["ner"] > 0.2, gold  # many links are common nouns, not named entities
    assert stats["linked_fraction"] > 0.5 and stats["ambiguous_mentions"] >= 0


def test_cli_config_file_with_terms_regex_and_npmi(tmp_path, graph, index):
    from datasets import load_from_disk
    from typer.testing import CliRunner

    from kept.cli import app

    fillers = ["red", "big", "old", "new", "tall", "dark", "cold", "warm", "wet", "dry", "odd", "shy"]
    docs = [
        {
            "id": str(i),
            "title": "",
            "spans": [],
            "text": f"A {fillers[i]} hot dog, stand {i}; {fillers[(i * 5) % 12]} man sold to Obama in Paris.",
        }
        for i in range(12)
    ]
    run = write_run(tmp_path, graph, index, docs)
    (tmp_path / "annotation.yaml").write_text(
        "annotation:\n"
        "  detectors:\n"
        "    - {type: gazetteer}\n"
        "    - {type: terms, terms: {sold: VERB}, kind: phrase}\n"
        "    - {type: regex, patterns: ['\\d+'], label: NUM}\n"
        "    - {type: npmi, min_count: 3, threshold: 0.3}\n"
    )
    result = CliRunner().invoke(app, ["annotate", str(run), "--config", str(tmp_path / "annotation.yaml")])
    assert result.exit_code == 0, result.output
    row = load_from_disk(str(run / "corpus" / "annotated"))[3]
    assert {(row["text"][s["start"] : s["end"]], s["source"]) for s in row["spans"]} >= {
        ("hot dog", "npmi"),
        ("sold", "terms"),
        ("3", "regex"),
        ("Obama", "gazetteer"),
        ("Paris", "gazetteer"),
    }
    stats = json.loads((run / "corpus" / "annotation_stats.json").read_text())
    assert stats["config"]["detectors"][3]["type"] == "npmi" and stats["spans_by_source"]["npmi"] >= 12
    (tmp_path / "bad.yaml").write_text("annotation:\n  detectors: [{type: gazetteer, colour: red}]\n")
    result = CliRunner().invoke(app, ["annotate", str(run), "--config", str(tmp_path / "bad.yaml")])
    assert isinstance(result.exception, MaskingError) and "colour" in str(result.exception)


def test_gold_overlap_counts_equal_the_pairwise_definition() -> None:
    """gold_matches counts a gold span as hit when any found span overlaps it; found spans may overlap each
    other (raw detector candidates). Checked against the pairwise definition on random spans."""
    import random

    from masking.stats import gold_matches

    rng = random.Random(0)

    def spans() -> list[dict[str, int]]:
        out = []
        for _ in range(rng.randrange(0, 9)):
            start = rng.randrange(60)
            out.append({"start": start, "end": start + rng.randrange(1, 9), "entity_id": rng.randrange(-1, 3)})
        return out

    for _ in range(2000):
        gold, found = spans(), spans()
        pairwise = sum(any(f["start"] < g["end"] and g["start"] < f["end"] for f in found) for g in gold)
        assert gold_matches(gold, found)["overlap"] == pairwise
