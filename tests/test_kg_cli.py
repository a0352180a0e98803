"""`kept data ...` and `kept kg ...` through typer's CliRunner, and the reusable functions behind them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kept.cli import app, main
from kg import KGError, KnowledgeGraph, load_embeddings

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def nations_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nations")
    result = invoke("data", "pykeen", "nations", "--out", str(out))
    assert result.exit_code == 0
    return out


def test_data_pykeen(nations_run: Path) -> None:
    for name in ("entities.tsv", "relations.tsv", "triples.tsv", "aliases.tsv", "stats.json", "metadata.json"):
        assert (nations_run / "kg" / name).exists(), name
    graph = KnowledgeGraph.load(nations_run)
    assert graph.num_triples == 1992 and graph.metadata["split_sizes"] == [1592, 199, 201]


def test_kg_stats_on_run_dir_kg_dir_and_file(nations_run: Path, tmp_path: Path) -> None:
    result = invoke("kg", "stats", str(nations_run))
    assert result.exit_code == 0
    assert "entities" in result.output and "1,992" in result.output and "embassy" in result.output
    assert "1,992" in invoke("kg", "stats", str(nations_run / "kg")).output
    triples = tmp_path / "t.csv"
    triples.write_text("head,relation,tail\na,r,b\nb,r,c\n")
    data = json.loads(invoke("kg", "stats", str(triples), "--json").output)
    assert data["num_entities"] == 3 and data["num_triples"] == 2


def test_kg_embed(nations_run: Path) -> None:
    result = invoke("kg", "embed", str(nations_run), "--dim", "8", "--epochs", "1", "--seed", "3", "--dtype", "float16")
    assert result.exit_code == 0, result.output
    assert "mrr" in result.output and "hits_at_10" in result.output
    metrics = json.loads((nations_run / "kg" / "kg_metrics.json").read_text())
    assert metrics["model"] == "TransE" and metrics["dim"] == 8 and metrics["dtype"] == "float16"
    for key in ("mrr", "hits_at_1", "hits_at_3", "hits_at_10"):
        assert 0 <= metrics[key] <= 1
    loaded = load_embeddings(nations_run / "kg" / "embeddings.safetensors")
    assert loaded.entity_embeddings.shape == (14, 8) and str(loaded.entity_embeddings.dtype) == "torch.float16"
    loaded.check_vocabulary(KnowledgeGraph.load(nations_run))


def test_embed_run_dir_function(nations_run: Path) -> None:
    from kept.graphs import embed_run_dir

    metrics = embed_run_dir(nations_run, {"model": "DistMult", "dim": 4, "epochs": 1})
    assert metrics["model"] == "DistMult" and metrics["dtype"] == "float32"
    with pytest.raises(KGError, match=r"kg\.dimension: unknown key"):
        embed_run_dir(nations_run, {"dimension": 4})


def test_unknown_model_is_one_line_exit_2(nations_run: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["kg", "embed", str(nations_run), "--model", "NoSuchModel", "--epochs", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "PyKEEN has no model named 'NoSuchModel'" in err and "known models" in err


def test_kg_stats_missing_path_exit_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["kg", "stats", str(tmp_path / "nothing")])
    assert exit_info.value.code == 2
    assert "not found" in capsys.readouterr().err


def test_data_triples_reports_and_strict(tmp_path: Path, capsys) -> None:
    triples = tmp_path / "t.tsv"
    triples.write_text("a\tr\tb\na\tr\tb\nb\tr\tc\n")
    aliases = tmp_path / "aliases.tsv"
    aliases.write_text("a\tAy\nzz\tGhost\n")
    result = invoke("data", "triples", str(triples), "--aliases", str(aliases), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0
    assert "skipped 1 rows (duplicate triple; first lines: 2)" in result.output
    assert "skipped 1 rows (unknown entity; first lines: 2)" in result.output
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "triples", str(triples), "--strict", "--out", str(tmp_path / "run2")])
    assert exit_info.value.code == 2
    assert "t.tsv:2: duplicate triple" in capsys.readouterr().err


def test_neighbours_and_lookup(nations_run: Path) -> None:
    result = invoke("kg", "neighbours", str(nations_run), "usa", "--limit", "3")
    assert result.exit_code == 0 and "within 1 hop(s) of 'usa'" in result.output
    assert len(result.output.strip().splitlines()) == 4
    result = invoke("kg", "lookup", str(nations_run), "USA")
    assert result.exit_code == 0 and "usa" in result.output and "1.000" in result.output


def test_data_wikipedia_sample_small(tmp_path: Path) -> None:
    result = invoke("data", "wikipedia-sample", "--out", str(tmp_path), "--max-documents", "2")
    assert result.exit_code == 0, result.output
    assert "documents" in result.output and "entities" in result.output
    lines = (tmp_path / "corpus" / "documents.jsonl").read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert record["title"] == "Anarchism" and record["spans"]
    span = record["spans"][0]
    assert span == {
        "start": span["start"],
        "end": span["end"],
        "kind": "entity",
        "label": "WIKI_LINK",
        "entity_id": span["entity_id"],
        "source": "gold",
    }
    graph = KnowledgeGraph.load(tmp_path)
    assert graph.entities[span["entity_id"]] == "Political philosophy"
    assert (tmp_path / "kg" / "aliases.tsv").exists() and (tmp_path / "kg" / "wikipedia_stats.json").exists()


@pytest.mark.slow
def test_build_wikipedia_sample_then_embed(tmp_path: Path) -> None:
    from kept.datasources import build_wikipedia_sample
    from kept.graphs import embed_run_dir

    numbers = build_wikipedia_sample(tmp_path)
    assert numbers["documents"] == 106 and numbers["entities"] > 15_000
    metrics = embed_run_dir(tmp_path, {"dim": 8, "epochs": 1})
    assert metrics["num_entities"] == numbers["entities"] and metrics["split"] == "random"
    assert metrics["split_method"] == "coverage-greedy" and metrics["num_testing"] >= 0.09 * metrics["num_training"]
    assert (tmp_path / "kg" / "test_triples.tsv").is_file()
    assert load_embeddings(tmp_path / "kg" / "embeddings.safetensors").num_entities == numbers["entities"]
