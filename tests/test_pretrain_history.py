"""Training history carries the MLM / dEA loss components; the evaluation after training is capped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kept.config import load_run_config
from kept.encode import encode_run
from kept.pretrain import pretrain_run
from kept.tiny import make_tiny_run


@pytest.fixture(scope="module")
def encoded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_tiny_run(tmp_path_factory.mktemp("history") / "template", steps=6, save_steps=3)
    encode_run(run_dir, load_run_config(run_dir))
    return run_dir


def _history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "logs" / "train_history.json").read_text())["log_history"]


def test_history_logs_mlm_and_dea_losses_and_reuses_the_last_evaluation(encoded_template: Path, tmp_path: Path) -> None:
    from fusion import KeptConfig

    run_dir = shutil.copytree(encoded_template, tmp_path / "fusion")
    result = pretrain_run(run_dir, load_run_config(run_dir), progress=False)
    config = KeptConfig.from_pretrained(str(run_dir / "model"))
    history = _history(run_dir)
    train = [e for e in history if "loss" in e]
    assert len(train) == 6 and all("mlm_loss" in e and "dea_loss" in e and "sop_loss" not in e for e in train)
    for e in train:  # one step per log: the components add up to the Trainer's loss
        assert e["loss"] == pytest.approx(
            config.mlm_weight * e["mlm_loss"] + config.dea_weight * e["dea_loss"], rel=1e-4
        )
    evals = [e for e in history if "eval_loss" in e]
    assert [e["step"] for e in evals] == [3, 6]  # the evaluation of step 6 is not repeated after training
    for e in evals:
        assert e["eval_loss"] == pytest.approx(
            config.mlm_weight * e["eval_mlm_loss"] + config.dea_weight * e["eval_dea_loss"], rel=1e-4
        )
    assert result.eval_loss == evals[-1]["eval_loss"]
    metrics = json.loads((run_dir / "logs" / "pretrain_metrics.json").read_text())
    assert metrics["eval_examples"] > 2


def test_fusion_off_logs_mlm_only_and_final_evaluation_is_capped(encoded_template: Path, tmp_path: Path) -> None:
    run_dir = shutil.copytree(encoded_template, tmp_path / "plain")
    config = load_run_config(
        run_dir,
        [
            "model.fusion=false",
            "masking.strategy=token",
            "train.max_steps=4",
            "train.save_steps=4",
            "train.eval_steps=3",
            "train.final_eval_max_examples=2",
        ],
    )
    result = pretrain_run(run_dir, config, progress=False)
    history = _history(run_dir)
    train = [e for e in history if "loss" in e]
    assert len(train) == 4 and all("mlm_loss" in e and "dea_loss" not in e for e in train)
    assert [e["step"] for e in history if "eval_loss" in e] == [3]  # the curve stays on the whole split
    final = [e for e in history if "final_eval_loss" in e]
    assert len(final) == 1 and final[0]["step"] == 4 and "final_eval_mlm_loss" in final[0]
    assert result.eval_loss == final[0]["final_eval_loss"]
    metrics = json.loads((run_dir / "logs" / "pretrain_metrics.json").read_text())
    assert metrics["eval_examples"] == 2
