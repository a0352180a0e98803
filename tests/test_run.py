"""`kept run`: stages in order, skipping what is done and current; CLI flags; one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kept.cli import app
from kept.config import load_run_config
from kept.datasources import verbalize_graph
from kept.errors import KeptError
from kept.rundir import read_stamp
from kept.runner import run_pipeline
from kept.tiny import make_tiny_run

runner = CliRunner()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_tiny_run(tmp_path / "run", steps=4, save_steps=2)


def test_stages_run_once_then_skip_until_their_section_changes(tiny: Path) -> None:
    config = load_run_config(tiny)
    first = run_pipeline(config, tiny, stages=["encode", "pretrain"], progress=False)
    assert first.ran() == ["encode", "pretrain"]
    assert read_stamp(tiny, "pretrain")["fingerprint"]
    assert (tiny / "model" / "config.json").exists()

    again = run_pipeline(config, tiny, stages=["encode", "pretrain"], progress=False)
    assert again.skipped() == ["encode", "pretrain"] and again.ran() == []

    # a bookkeeping change of train does not invalidate pretraining
    logging_only = load_run_config(tiny, ["train.logging_steps=2"])
    assert run_pipeline(logging_only, tiny, stages=["encode", "pretrain"], progress=False).ran() == []

    # a training change: pretraining is stale, and resuming its checkpoints is refused with the keys named
    changed = load_run_config(tiny, ["train.learning_rate=0.01"])
    with pytest.raises(KeptError, match=r"train\.learning_rate"):
        run_pipeline(changed, tiny, stages=["encode", "pretrain"], progress=False)
    redone = run_pipeline(changed, tiny, stages=["encode", "pretrain"], restart_pretrain=True, progress=False)
    assert redone.skipped() == ["encode"] and redone.ran() == ["pretrain"]

    # an encode change re-runs encode and everything after it
    assert run_pipeline(
        load_run_config(tiny, ["train.learning_rate=0.01", "encode.max_length=24"]),
        tiny,
        stages=["encode", "pretrain"],
        restart_pretrain=True,
        progress=False,
    ).ran() == ["encode", "pretrain"]
    saved = load_run_config(tiny)
    assert saved.encode.max_length == 24  # the resolved configuration is saved in the run directory


def test_force_and_unknown_stage(tiny: Path) -> None:
    config = load_run_config(tiny)
    run_pipeline(config, tiny, stages=["encode"], progress=False)
    assert run_pipeline(config, tiny, stages=["encode"], force=["encode"], progress=False).ran() == ["encode"]
    with pytest.raises(KeptError, match="unknown stage"):
        run_pipeline(config, tiny, stages=["train"], progress=False)


def test_fusion_without_a_kg_is_refused_before_anything_runs(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("Some text.\n")
    config = load_run_config(tmp_path / "r", ["data.source=files", f"data.corpus={corpus}"])
    with pytest.raises(KeptError, match="fusion is on but the run has no knowledge graph"):
        run_pipeline(config, tmp_path / "r", progress=False)
    no_fusion = load_run_config(tmp_path / "r", ["data.source=files", f"data.corpus={corpus}", "model.fusion=false"])
    with pytest.raises(KeptError, match="gazetteer"):
        run_pipeline(no_fusion, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "corpus").exists()


def test_lock_refuses_a_second_writer(tiny: Path) -> None:
    from kept.rundir import RunLock

    with RunLock(tiny, "other command"):
        with pytest.raises(KeptError, match="in use by `other command`"):
            run_pipeline(load_run_config(tiny), tiny, stages=["encode"], progress=False)
    assert run_pipeline(load_run_config(tiny), tiny, stages=["encode"], progress=False).ran() == ["encode"]


def test_verbalized_kg_corpus_spans_point_at_entity_labels() -> None:
    from kg import KnowledgeGraph

    graph = KnowledgeGraph.from_triples([("Paris", "capital_of", "France"), ("Rome", "capital_of", "Italy")])
    (document,) = verbalize_graph(graph)
    assert document["text"] == "Paris capital of France . Rome capital of Italy ."
    assert [document["text"][s["start"] : s["end"]] for s in document["spans"]] == ["Paris", "France", "Rome", "Italy"]
    assert [s["entity_id"] for s in document["spans"]] == [
        graph.entity_id(n) for n in ("Paris", "France", "Rome", "Italy")
    ]


def test_cli_encode_flags_override_and_are_saved(tiny: Path) -> None:
    result = runner.invoke(app, ["encode", str(tiny), "--max-length", "24", "--set", "encode.seed=3"])
    assert result.exit_code == 0, result.output
    saved = load_run_config(tiny)
    assert saved.encode.max_length == 24 and saved.encode.seed == 3
    stats = json.loads((tiny / "encoded" / "stats.json").read_text())
    assert stats["max_length"] == 24


def test_cli_errors_are_one_line_with_exit_code_2(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kept.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_stepz: 3\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(bad)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "train.max_stepz" in err and f"{bad}:2" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "kept encode" in capsys.readouterr().err


@pytest.mark.slow
def test_kept_run_every_stage_from_source_files(tmp_path: Path) -> None:
    template = make_tiny_run(tmp_path / "template", steps=4, save_steps=2)
    run_dir = tmp_path / "fresh"
    run_dir.mkdir()
    shutil.copytree(template / "source", run_dir / "source")
    config_text = (
        (template / "config.yaml")
        .read_text()
        .replace(str((template / "source").resolve()), str((run_dir / "source").resolve()))
    )
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(config_text + "eval: {relation: {enabled: false}, probe: {max_facts: 5}}\n")
    result = runner.invoke(app, ["run", str(config_file), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    for path in (
        "corpus/documents.jsonl",
        "kg/embeddings.safetensors",
        "kg/kg_metrics.json",
        "corpus/annotated",
        "tokenizer/tokenizer.json",
        "encoded/train",
        "model/model.safetensors",
        "eval/metrics.json",
        "eval/report.md",
        "config.yaml",
    ):
        assert (run_dir / path).exists(), path
    stamps = {p.stem for p in (run_dir / "stamps").glob("*.json")}
    assert stamps == {"data", "kg", "annotate", "encode", "pretrain", "evaluate", "report"}
    again = run_pipeline(load_run_config(run_dir), run_dir, progress=False)
    assert again.ran() == [] and len(again.skipped()) == 7


def test_stages_chain_through_init_from_run_name(tmp_path: Path) -> None:
    """general → domain: the second stage starts from run:general's model and reuses its tokenizer."""
    runs = tmp_path / "runs"
    general = make_tiny_run(runs / "general", name="general", steps=2, save_steps=2)
    config = load_run_config(general, [f"runs_dir={runs}"])
    run_pipeline(config, general, stages=["encode", "pretrain"], progress=False)

    domain = make_tiny_run(runs / "domain", name="domain", steps=2, save_steps=2, seed=1)
    shutil.rmtree(domain / "tokenizer", ignore_errors=True)
    stage2 = load_run_config(domain, [f"runs_dir={runs}", "model.init_from=run:general"])
    assert run_pipeline(stage2, domain, stages=["encode", "pretrain"], progress=False).ran() == ["encode", "pretrain"]
    assert json.loads((domain / "encoded" / "stats.json").read_text())["tokenizer"].startswith("init_from:")
    assert (domain / "tokenizer" / "tokenizer.json").read_text() == (general / "model" / "tokenizer.json").read_text()
    with pytest.raises(KeptError, match="has no final model"):
        run_pipeline(
            load_run_config(domain, [f"runs_dir={runs}", "model.init_from=run:absent"]),
            domain,
            stages=["encode"],
            progress=False,
        )


def test_stage_table_fingerprints_the_same_configuration_parts_as_before(tiny: Path) -> None:
    """Run directories made before the stage table count their stages as done: the stamps fingerprint the
    same configuration parts (changing one re-runs every existing run's stage)."""
    from kept.runner import STAGE_TABLE, STAGES, annotation_config

    config = load_run_config(tiny)
    values = config.to_dict()
    parts = {row.name: row.config(config) for row in STAGE_TABLE}
    assert STAGES == ("data", "kg", "annotate", "encode", "pretrain", "evaluate", "report")
    assert parts["data"] == values["data"] and parts["kg"] == values["kg"] and parts["evaluate"] == values["eval"]
    assert parts["annotate"] == annotation_config(config).model_dump(mode="json")
    assert parts["encode"] == {
        "tokenizer": values["tokenizer"],
        "encode": values["encode"],
        "init_from": config.model.init_from,
    }
    assert parts["report"] == {} and "train.max_steps" in parts["pretrain"]
    assert [
        row.name
        for row in STAGE_TABLE
        if not row.needed(load_run_config(tiny, ["data.source=files", "data.kg_triples=null"]))
    ] == ["kg"]
