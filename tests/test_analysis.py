"""Loaders of run directories for notebooks (kept.analysis)."""

from __future__ import annotations

import json

import pytest
from eval_fixtures import ANNOTATION_STATS, ENTITIES, LOG_HISTORY, TRIPLES, fake_run, write_kg

from kept import analysis
from kept.errors import KeptError


def test_load_metrics_and_flatten(tmp_path) -> None:
    run_dir = fake_run(tmp_path, "a", 0.25, 5.0)
    metrics = analysis.load_metrics(run_dir)
    flat = analysis.flatten_metrics(metrics)
    assert flat["cloze.accuracy"] == 0.25 and flat["mlm.token.loss"] == 5.0
    assert "probe.per_relation.r.mrr" not in flat and "relation.skipped" not in flat
    frame = analysis.metrics_frame([run_dir, fake_run(tmp_path, "b", 0.5, 4.0)])
    assert list(frame.index) == ["a", "b"] and frame.loc["b", "cloze.accuracy"] == 0.5


def test_load_metrics_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(KeptError, match="directory not found"):
        analysis.load_metrics(tmp_path / "missing")
    (tmp_path / "run" / "eval").mkdir(parents=True)
    with pytest.raises(KeptError, match=r"run/eval/metrics\.json: metrics file not found"):
        analysis.load_metrics(tmp_path / "run")
    (tmp_path / "run" / "eval" / "metrics.json").write_text('{\n  "format": ')
    with pytest.raises(KeptError, match=r"metrics\.json:2: metrics file is not valid JSON"):
        analysis.load_metrics(tmp_path / "run")
    (tmp_path / "run" / "eval" / "metrics.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(KeptError, match=r"metrics\.json: not a kept\.eval\.metrics file"):
        analysis.load_metrics(tmp_path / "run")


def test_load_log_history_prefers_logs_then_latest_checkpoint(tmp_path) -> None:
    run_dir = tmp_path / "run"
    for step, loss in ((10, 9.0), (30, 3.0), (20, 5.0)):
        folder = run_dir / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": step, "loss": loss}]}))
    assert analysis.load_log_history(run_dir) == [{"step": 30, "loss": 3.0}]
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "train_history.json").write_text(json.dumps(LOG_HISTORY))
    assert analysis.load_log_history(run_dir) == LOG_HISTORY
    (run_dir / "logs" / "train_history.json").write_text(json.dumps({"log_history": "nope"}))
    with pytest.raises(KeptError, match=r"train_history\.json: log history must be a list"):
        analysis.load_log_history(run_dir)
    with pytest.raises(KeptError, match="no training log history"):
        analysis.load_log_history(tmp_path)


def test_load_kg_tables_and_kg_metrics(tmp_path) -> None:
    write_kg(tmp_path / "run" / "kg", {"mrr": 0.5})
    tables = analysis.load_kg_tables(tmp_path / "run")
    assert len(tables["entities"]) == len(ENTITIES) and len(tables["triples"]) == len(TRIPLES)
    assert tables["entities"].loc[12, "aliases"] == ["Curie"] and tables["entities"]["id"].dtype.kind == "i"
    assert analysis.load_kg_metrics(tmp_path / "run") == {"mrr": 0.5}
    (tmp_path / "run" / "kg" / "relations.tsv").write_text("0\tr\tR\n")
    with pytest.raises(KeptError, match=r"relations\.tsv:1: expected a header row"):
        analysis.load_kg_tables(tmp_path / "run")


def test_load_kg_as_knowledge_graph(tmp_path) -> None:
    pytest.importorskip("kg")
    from kg import KnowledgeGraph

    graph = KnowledgeGraph(["a", "b"], ["r"], [(0, 0, 1)], entity_labels=["A", "B"])
    graph.save(tmp_path / "run" / "kg")
    loaded = analysis.load_kg(tmp_path / "run")
    assert loaded.entities == ["a", "b"] and loaded.num_triples == 1
    with pytest.raises(KeptError, match=r"kg/entities\.tsv: KG not found"):
        analysis.load_kg(tmp_path)


def test_annotation_loaders(tmp_path) -> None:
    import datasets

    run_dir = tmp_path / "run"
    (run_dir / "corpus").mkdir(parents=True)
    (run_dir / "corpus" / "annotation_stats.json").write_text(json.dumps(ANNOTATION_STATS))
    assert analysis.load_annotation_stats(run_dir)["linked_fraction"] == 0.9
    spans = [{"start": 0, "end": 5, "kind": "entity", "label": "", "entity_id": 0, "source": "gold"}]
    datasets.Dataset.from_list([{"id": "d0", "title": "", "text": "Paris is nice.", "spans": spans}]).save_to_disk(
        str(run_dir / "corpus" / "annotated")
    )
    assert analysis.load_annotations(run_dir)[0]["spans"][0]["entity_id"] == 0
    (run_dir / "corpus" / "documents.jsonl").write_text('{"id": "d0", "text": "x"}\n\n{"id": \n')
    with pytest.raises(KeptError, match=r"documents\.jsonl:3: invalid JSON"):
        analysis.load_documents(run_dir)
    with pytest.raises(KeptError, match=r"encoded/validation: encoded validation split not found"):
        analysis.load_encoded(run_dir)


def test_examples_frame_joins_runs_on_the_same_items(tmp_path) -> None:
    a, b = fake_run(tmp_path, "a", 0.1, 5.0), fake_run(tmp_path, "b", 0.2, 5.0)
    for run_dir, prediction in ((a, "rome"), (b, "paris")):
        path = run_dir / "eval" / "metrics.json"
        data = json.loads(path.read_text())
        data["examples"]["cloze"] = [
            {
                "doc_id": "d0",
                "position": 3,
                "context": "x [MASK]",
                "gold": "paris",
                "prediction": prediction,
                "correct": prediction == "paris",
            }
        ]
        path.write_text(json.dumps(data))
    frame = analysis.examples_frame({"token": a, "entity": b})
    assert list(frame.columns) == ["doc_id", "position", "context", "gold", "token", "token ok", "entity", "entity ok"]
    assert frame.loc[0, "token"] == "rome" and bool(frame.loc[0, "entity ok"]) is True
    with pytest.raises(KeptError, match="unknown example kind"):
        analysis.examples_frame([a], kind="nope")
