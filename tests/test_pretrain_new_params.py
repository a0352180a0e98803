"""New parameters vs loaded ones: the warm-up that trains only the new ones, their own learning rate,
the loading report, and the training defaults derived from the model (kept.optim)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from stop_at_step import StopAtStep

from kept.config import load_run_config
from kept.encode import encode_run
from kept.optim import (
    OptimizerPlan,
    delayed,
    group_multipliers,
    resolve_train_defaults,
    schedule_multiplier,
)
from kept.pretrain import LOADING_REPORT, build_model_and_origins, pretrain_run
from kept.tiny import make_tiny_run
from kept.tokenizer import load_run_tokenizer

# the tiny run's model sizes (kept.tiny.TINY_CONFIG): a BERT of these sizes fills T 1 + K 1 layers
TINY_BERT = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An encoded tiny run and, beside it, a BERT checkpoint of its sizes without an MLM head."""
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("newparams")
    run_dir = make_tiny_run(root / "template", steps=6, save_steps=3)
    encode_run(run_dir, load_run_config(run_dir))
    torch.manual_seed(0)
    vocab = len(load_run_tokenizer(run_dir / "tokenizer"))
    BertModel(BertConfig(vocab_size=vocab, **TINY_BERT)).save_pretrained(str(root / "bert"))
    return run_dir


def _copy(template: Path, target: Path) -> Path:
    return shutil.copytree(template, target)


def _bert_overrides(template: Path, *extra: str) -> list[str]:
    return [f"model.init_from={template.parent / 'bert'}", *extra]


def _checkpoint(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / f"checkpoint-{step}" / "model.safetensors"))


class _GroupRates:
    """Records (group kind, learning rate) of every optimizer group after each step."""

    def __new__(cls, rates: list[list[tuple[str, float]]]) -> Any:
        from transformers import TrainerCallback

        class _Record(TrainerCallback):
            def on_step_end(self, args, state, control, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
                rates.append([(g.get("kept_params"), float(g["lr"])) for g in optimizer.param_groups])

        return _Record()


# ------------------------------------------------------------------ derived defaults


def _fake_bert(path: Path, hidden: int, layers: int, with_head: bool) -> Path:
    """A BERT directory whose config has the given sizes (weights: one tensor, enough for the checks)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "hidden_size": hidden,
                "num_hidden_layers": layers,
                "num_attention_heads": 12,
                "intermediate_size": 4 * hidden,
                "vocab_size": 30522,
                "max_position_embeddings": 512,
            }
        )
    )
    name = "cls.predictions.bias" if with_head else "bert.embeddings.word_embeddings.weight"
    save_file({name: torch.zeros(2)}, str(path / "model.safetensors"))
    return path


def test_defaults_are_derived_from_the_model_and_explicit_values_stay(tmp_path: Path) -> None:
    def resolved(*overrides: str) -> tuple[Any, dict[str, Any]]:
        config, derived = resolve_train_defaults(load_run_config(tmp_path / "run", list(overrides)))
        return config.train, {d.key: d.value for d in derived}

    train, derived = resolved()  # the tiny preset from scratch: the values it always had
    assert derived == {"learning_rate": 5e-4, "warmup_ratio": 0.06, "new_params_warmup_steps": 0}
    assert train.learning_rate == 5e-4 and train.warmup_ratio == 0.06 and train.new_params_warmup_steps == 0
    assert resolved("model.preset=base")[0].learning_rate == 1e-4
    assert resolved("model.preset=base")[0].warmup_ratio == 0.1
    assert resolved("model.preset=large")[0].learning_rate == 5e-5
    train, derived = resolved("train.learning_rate=0.003", "train.warmup_ratio=0.2", "train.new_params_warmup_steps=7")
    assert derived == {} and (train.learning_rate, train.warmup_ratio, train.new_params_warmup_steps) == (0.003, 0.2, 7)

    minilm_like = _fake_bert(tmp_path / "minilm", hidden=384, layers=6, with_head=False)
    train, derived = resolved(f"model.init_from={minilm_like}", "train.max_steps=200")
    assert train.learning_rate == 1e-4 and train.warmup_ratio == 0.06 and train.new_params_warmup_steps == 20
    assert train.new_params_learning_rate == 1e-3
    train, _ = resolved(f"model.init_from={minilm_like}", "train.new_params_learning_rate=0.0002")
    assert train.new_params_learning_rate == 0.0002
    base_with_head = _fake_bert(tmp_path / "base", hidden=768, layers=12, with_head=True)
    train, _ = resolved(f"model.init_from={base_with_head}", "model.fusion=false", "train.max_steps=200")
    assert train.learning_rate == 5e-5 and train.new_params_warmup_steps == 0  # nothing new that trains
    assert train.new_params_learning_rate == pytest.approx(5e-4)
    train, _ = resolved(f"model.init_from={base_with_head}", "train.max_steps=200")
    assert train.new_params_warmup_steps == 20  # fusion parts are new
    config = load_run_config(tmp_path / "run", [f"model.init_from={minilm_like}"])
    once, _ = resolve_train_defaults(config)
    assert resolve_train_defaults(once) == (once, [])  # idempotent


def test_loaded_groups_wait_then_follow_the_schedule_on_their_own_clock() -> None:
    linear = schedule_multiplier("linear", warmup_steps=2, training_steps=10)
    assert [round(linear(s), 3) for s in range(4)] == [0.0, 0.5, 1.0, 0.875]
    plan = OptimizerPlan(frozenset({"head"}), 1e-4, 1e-3, new_params_warmup_steps=4)
    loaded, new = group_multipliers(["loaded", "new"], plan, "linear", warmup_steps=2, training_steps=10)
    assert [loaded(s) for s in range(4)] == [0.0] * 4
    later = schedule_multiplier("linear", warmup_steps=2, training_steps=6)
    assert [loaded(s) for s in range(4, 10)] == [later(s) for s in range(6)]
    assert [new(s) for s in range(10)] == [linear(s) for s in range(10)]
    assert delayed(linear, 0)(3) == linear(3)


# ------------------------------------------------------------------ the warm-up in a real run


def test_warmup_holds_loaded_weights_bitwise_still_then_trains_them_and_resumes_exactly(
    template: Path, tmp_path: Path
) -> None:
    overrides = _bert_overrides(template, "train.new_params_warmup_steps=3", "train.learning_rate=0.001")
    whole = _copy(template, tmp_path / "whole")
    config = load_run_config(whole, overrides)
    reference = pretrain_run(whole, config, progress=False)

    initial, origins = build_model_and_origins(
        resolve_train_defaults(config)[0], whole, load_run_tokenizer(whole / "tokenizer")
    )
    start = {name: p.detach().clone() for name, p in initial.named_parameters()}
    after_warmup, final = _checkpoint(whole, 3), _checkpoint(whole, 6)
    assert origins.loaded and all(torch.equal(after_warmup[n], start[n]) for n in origins.loaded)
    moved = [n for n in origins.new if not torch.equal(after_warmup[n], start[n])]
    assert "cls.predictions.transform.dense.weight" in moved and len(moved) >= len(origins.new) // 2
    trained = [n for n in origins.loaded if not torch.equal(final[n], start[n])]
    assert "kept.encoder.layer.0.attention.self.query.weight" in trained and len(trained) > len(origins.loaded) // 2

    # interrupted inside the warm-up, resumed: the same run
    parts = _copy(template, tmp_path / "parts")
    pretrain_run(parts, load_run_config(parts, overrides), progress=False, extra_callbacks=[StopAtStep(2)])
    resumed = pretrain_run(parts, load_run_config(parts, overrides), progress=False)
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-2")
    history = [json.loads((d / "logs" / "train_history.json").read_text())["log_history"] for d in (whole, parts)]
    losses = [[e["loss"] for e in h if "loss" in e] for h in history]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    assert resumed.eval_loss == reference.eval_loss
    assert all(torch.equal(a, b) for a, b in zip(_checkpoint(parts, 6).values(), final.values()))


def test_new_parameters_get_their_own_learning_rate_and_the_report_lists_them(template: Path, tmp_path: Path) -> None:
    run_dir = _copy(template, tmp_path / "lr")
    rates: list[list[tuple[str, float]]] = []
    config = load_run_config(
        run_dir,
        _bert_overrides(
            template,
            "train.max_steps=3",
            "train.learning_rate=0.001",
            "train.new_params_learning_rate=0.01",
            "train.new_params_warmup_steps=0",
        ),
    )
    pretrain_run(run_dir, config, progress=False, extra_callbacks=[_GroupRates(rates)])
    assert len(rates) == 3 and {kind for kind, _ in rates[0]} == {"loaded", "new"}
    for step in rates:
        loaded = {lr for kind, lr in step if kind == "loaded"}
        new = {lr for kind, lr in step if kind == "new"}
        assert len(loaded) == len(new) == 1 and new.pop() == pytest.approx(10 * loaded.pop())
    history = json.loads((run_dir / "logs" / "train_history.json").read_text())["log_history"]
    logged = [e for e in history if "learning_rate_new" in e]
    assert logged and all(e["learning_rate_new"] == pytest.approx(10 * e["learning_rate"]) for e in logged)

    report = json.loads((run_dir / "logs" / LOADING_REPORT).read_text())
    assert report["source"] == "bert" and report["init_from"].endswith("bert")
    assert "cls.predictions.transform.dense.weight" in report["new"]["names"]  # the checkpoint has no MLM head
    assert "entity_head.dense.weight" in report["new"]["names"]
    assert "kept.embeddings.word_embeddings.weight" in report["loaded"]["names"]
    assert report["new"]["tensors"] == len(report["new"]["names"]) > 0
    assert report["new"]["parameters"] > 0 and report["loaded"]["parameters"] > report["new"]["parameters"]
    assert report["optimizer"] == {
        "learning_rate": 0.001,
        "new_params_learning_rate": 0.01,
        "new_params_warmup_steps": 0,
        "active": True,
    }
    assert report["train_defaults"]["warmup_ratio"]["value"] == 0.06  # the one value left to derive

    # continuing that stage: nothing is new, so a warm-up has nothing to hold still
    stage2 = load_run_config(run_dir, [f"model.init_from={run_dir / 'model'}", "train.new_params_warmup_steps=5"])
    _, origins = build_model_and_origins(stage2, run_dir, load_run_tokenizer(run_dir / "tokenizer"))
    assert origins.source == "kept" and origins.new == [] and origins.loaded
    assert OptimizerPlan.from_config(resolve_train_defaults(stage2)[0], origins).active is False


def test_derived_values_are_logged_written_to_config_yaml_and_resume_compares_them(
    template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import yaml

    run_dir = _copy(template, tmp_path / "derived")
    caplog.set_level(logging.INFO, logger="kept")
    config = load_run_config(
        run_dir,
        _bert_overrides(
            template, "train.learning_rate=null", "train.max_steps=4", "train.save_steps=2", "train.eval_steps=2"
        ),
    )
    pretrain_run(run_dir, config, progress=False, extra_callbacks=[StopAtStep(2)])
    lines = caplog.messages
    derived_line = next(line for line in lines if line.startswith("train defaults:"))
    assert "learning_rate 0.0001" in derived_line and "new_params_warmup_steps 0" in derived_line
    assert any(line.startswith("parameters:") and " new tensors " in line for line in lines)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]
    assert saved["learning_rate"] == 1e-4 and saved["new_params_warmup_steps"] == 0  # round(10% of 4)
    assert saved["new_params_learning_rate"] == pytest.approx(1e-3)
    # the saved (resolved) config and the original (null) one both resume the checkpoint
    resumed = pretrain_run(run_dir, config, progress=False)
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-2") and resumed.steps == 4


# ------------------------------------------------------------------ a real checkpoint without MLM head


@pytest.mark.slow
def test_minilm_learns_mlm_faster_with_the_new_params_defaults(tmp_path: Path, minilm_dir: Path) -> None:
    """MiniLM ships no MLM head: the derived defaults (new parameters first, at 10x the rate) get the MLM
    loss down faster than training everything at once at the encoder's learning rate."""
    bert_dir = minilm_dir
    template = make_tiny_run(tmp_path / "template", n_docs=60, steps=30, save_steps=30)
    common = [
        f"model.init_from={bert_dir}",
        "model.overrides={}",
        "model.fusion=false",
        "masking.strategy=token",
        "train.learning_rate=null",
        "train.batch_size=8",
        "train.eval_steps=30",
        "train.save_steps=30",
        "train.logging_steps=30",
        "train.max_steps=30",
    ]
    encode_run(template, load_run_config(template, common))
    losses = {}
    for name, extra in (
        ("plain", ["train.new_params_warmup_steps=0", "train.new_params_learning_rate=0.0001"]),
        ("defaults", []),
    ):  # 3 steps of new parameters only, at 1e-3
        run_dir = _copy(template, tmp_path / name)
        losses[name] = pretrain_run(run_dir, load_run_config(run_dir, common + extra), progress=False).eval_loss
    assert losses["defaults"] < losses["plain"] - 0.1, losses
