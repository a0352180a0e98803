"""`kept pretrain`: tiny model, fusion on/off, resume checks, init_from, artifacts."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from stop_at_step import StopAtStep

from kept.config import load_run_config
from kept.encode import encode_run
from kept.errors import KeptError
from kept.pretrain import (
    BatchSeededCollator,
    complete_checkpoints,
    pretrain_run,
    remove_incomplete_checkpoints,
)
from kept.tiny import make_tiny_run


@pytest.fixture(scope="module")
def encoded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_tiny_run(tmp_path_factory.mktemp("pre") / "template", steps=6, save_steps=3)
    encode_run(run_dir, load_run_config(run_dir))
    return run_dir


@pytest.fixture
def run_dir(encoded_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(encoded_template, target)
    return target


def test_pretrain_writes_model_logs_and_checkpoints(run_dir: Path) -> None:
    from fusion import KeptForPreTraining

    result = pretrain_run(run_dir, load_run_config(run_dir), progress=False)
    assert result.steps == 6 and result.eval_loss is not None and result.train_loss is not None
    model = KeptForPreTraining.from_pretrained(str(run_dir / "model"))
    assert model.entity_table is not None and model.entity_table.num_entities == 22
    assert (run_dir / "model" / "tokenizer.json").exists()
    history = json.loads((run_dir / "logs" / "train_history.json").read_text())["log_history"]
    assert any("loss" in e for e in history) and any("eval_loss" in e for e in history)
    assert list((run_dir / "logs" / "tensorboard").rglob("events.out.tfevents*"))
    metrics = json.loads((run_dir / "logs" / "pretrain_metrics.json").read_text())
    assert metrics["fusion"] is True and metrics["global_step"] == 6
    assert [p.name for p in complete_checkpoints(run_dir / "checkpoints")] == ["checkpoint-3", "checkpoint-6"]
    assert not (run_dir / "model.partial").exists()


def test_fusion_off_trains_without_entity_inputs(run_dir: Path) -> None:
    from fusion import KeptForPreTraining

    config = load_run_config(run_dir, ["model.fusion=false", "masking.strategy=token"])
    result = pretrain_run(run_dir, config, progress=False)
    model = KeptForPreTraining.from_pretrained(str(run_dir / "model"))
    assert model.config.dea_weight == 0 and model.entity_table is None
    assert result.metrics["fusion"] is False


def test_resume_with_changed_training_config_is_refused(run_dir: Path) -> None:
    pretrain_run(run_dir, load_run_config(run_dir), progress=False, extra_callbacks=[StopAtStep(3)])
    assert not (run_dir / "model").exists()  # stopped early: no final model
    changed = load_run_config(run_dir, ["train.learning_rate=0.5", "masking.strategy=token"])
    with pytest.raises(KeptError, match=r"masking\.strategy.*train\.learning_rate") as info:
        pretrain_run(run_dir, changed, progress=False)
    assert "--restart" in str(info.value)
    # bookkeeping keys may change; the run resumes and finishes
    harmless = load_run_config(run_dir, ["train.logging_steps=2"])
    result = pretrain_run(run_dir, harmless, progress=False)
    assert result.resumed_from and result.resumed_from.endswith("checkpoint-3") and result.steps == 6
    # --restart starts over
    restarted = pretrain_run(run_dir, changed, restart=True, progress=False)
    assert restarted.resumed_from is None and restarted.steps == 6


def test_incomplete_checkpoint_is_removed_before_resuming(run_dir: Path) -> None:
    broken = run_dir / "checkpoints" / "checkpoint-9"
    broken.mkdir(parents=True)
    (broken / "model.safetensors").write_bytes(b"half")
    assert complete_checkpoints(run_dir / "checkpoints") == []
    assert remove_incomplete_checkpoints(run_dir / "checkpoints") == [broken]
    assert not broken.exists()


def test_init_from_previous_stage_and_incompatible_checkpoints(run_dir: Path, tmp_path: Path) -> None:
    pretrain_run(run_dir, load_run_config(run_dir), progress=False)
    stage2 = tmp_path / "stage2"
    shutil.copytree(run_dir, stage2, ignore=shutil.ignore_patterns("checkpoints", "model", "logs"))
    config = load_run_config(stage2, [f"model.init_from={run_dir / 'model'}", "train.max_steps=2"])
    result = pretrain_run(stage2, config, progress=False)
    assert result.steps == 2
    # a tokenizer with another vocabulary cannot continue that checkpoint
    from kept.tokenizer import save_tokenizer, train_wordpiece

    save_tokenizer(
        train_wordpiece(["completely different words here"] * 5, vocab_size=120, min_frequency=1), stage2 / "tokenizer"
    )
    with pytest.raises(KeptError, match="vocabulary"):
        pretrain_run(stage2, config, restart=True, progress=False)
    with pytest.raises(KeptError, match="not a model checkpoint"):
        pretrain_run(stage2, load_run_config(stage2, [f"model.init_from={stage2 / 'tokenizer'}"]), progress=False)


def test_missing_inputs_are_clear_errors(run_dir: Path, tmp_path: Path) -> None:
    (run_dir / "kg" / "embeddings.safetensors").unlink()
    with pytest.raises(KeptError, match="kg/embeddings.safetensors"):
        pretrain_run(run_dir, load_run_config(run_dir), progress=False)
    with pytest.raises(KeptError, match="tokenizer not found"):
        pretrain_run(tmp_path / "nothing", load_run_config(tmp_path / "nothing"), progress=False)


def test_batch_seeded_collator_is_a_function_of_the_batch(run_dir: Path) -> None:
    from kept.encode import load_encoded
    from kept.tokenizer import load_run_tokenizer
    from masking import KnowledgeMaskingCollator

    tokenizer = load_run_tokenizer(run_dir / "tokenizer")
    data = load_encoded(run_dir, "train")
    features = [
        {**{k: data[i][k] for k in ("input_ids", "unit_ids", "unit_kind", "entity_ids", "word_ids")}, "__index__": i}
        for i in range(4)
    ]
    collate = BatchSeededCollator(KnowledgeMaskingCollator(tokenizer, strategy="token", mlm_probability=0.5), seed=1)
    first = collate(features)
    collate(list(reversed(features)))  # another batch in between changes nothing for the next one
    again = collate(features)
    assert (first["labels"] == again["labels"]).all() and (first["input_ids"] == again["input_ids"]).all()
    other = BatchSeededCollator(collate.collator, seed=2)(features)
    assert not (other["labels"] == first["labels"]).all()


@pytest.mark.slow
def test_init_from_a_pretrained_bert_checkpoint(
    encoded_template: Path, tmp_path: Path, minilm_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Domain-adaptive pretraining from real BERT weights (MiniLM-L6) with its own tokenizer."""
    bert_dir = minilm_dir
    run_dir = tmp_path / "dapt"
    shutil.copytree(encoded_template, run_dir, ignore=shutil.ignore_patterns("tokenizer", "encoded"))
    config = load_run_config(
        run_dir,
        [
            f"model.init_from={bert_dir}",
            "model.overrides={}",
            "train.max_steps=2",
            "train.batch_size=2",
            "train.save_steps=2",
            "train.eval_steps=2",
            "model.preset=base",
        ],
    )
    result = encode_run(run_dir, config)
    assert result.tokenizer_source.startswith("init_from:") and result.vocab_size == 30522
    caplog.set_level(logging.INFO, logger="kept")
    trained = pretrain_run(run_dir, config, progress=False)
    said = caplog.messages
    assert trained.steps == 2 and trained.eval_loss is not None
    assert any("model.preset base ignored: the init_from checkpoint gives the sizes" in line for line in said)
    assert json.loads((run_dir / "model" / "config.json").read_text())["hidden_size"] == 384


def test_staged_ernie_resumes_exactly_across_a_stage_boundary(encoded_template: Path, tmp_path: Path) -> None:
    """The stage switches at half of training, exactly where the interrupted run resumes."""
    overrides = [
        "masking.strategy=ernie",
        "masking.ernie_stages=[[token, 0.5], [entity, 0.5]]",
        "train.max_steps=8",
        "train.save_steps=4",
        "train.eval_steps=4",
    ]
    whole = shutil.copytree(encoded_template, tmp_path / "whole")
    reference = pretrain_run(whole, load_run_config(whole, overrides), progress=False)
    parts = shutil.copytree(encoded_template, tmp_path / "parts")
    pretrain_run(parts, load_run_config(parts, overrides), progress=False, extra_callbacks=[StopAtStep(4)])
    resumed = pretrain_run(parts, load_run_config(parts, overrides), progress=False)
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-4")
    history = [json.loads((d / "logs" / "train_history.json").read_text())["log_history"] for d in (whole, parts)]
    losses = [[e["loss"] for e in h if "loss" in e] for h in history]
    assert losses[0] == losses[1] and len(losses[0]) == 8
    assert resumed.eval_loss == reference.eval_loss


def test_zero_steps_saves_the_starting_checkpoint_untrained(
    encoded_template: Path, tmp_path: Path, minilm_dir: Path
) -> None:
    """`train.max_steps: 0` (compare's `reference` variant): the BERT checkpoint as loaded, through model/."""
    bert_dir = minilm_dir
    run_dir = tmp_path / "reference"
    shutil.copytree(encoded_template, run_dir, ignore=shutil.ignore_patterns("tokenizer", "encoded"))
    config = load_run_config(
        run_dir, [f"model.init_from={bert_dir}", "model.overrides={}", "train.max_steps=0", "model.fusion=false"]
    )
    encode_run(run_dir, config)
    result = pretrain_run(run_dir, config, progress=False)
    assert result.steps == 0 and result.train_loss is None
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").glob("checkpoint-*"))
    import torch
    from safetensors.torch import load_file
    from transformers import BertModel

    saved = load_file(str(run_dir / "model" / "model.safetensors"))
    bert_model = BertModel.from_pretrained(str(bert_dir))
    word = bert_model.embeddings.word_embeddings.weight
    key = next(k for k in saved if k.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(saved[key], word.detach())  # untouched BERT weights
    # MiniLM has no MLM head: the figures read through the random one are skipped, not reported
    assert json.loads((run_dir / "logs" / "pretrain_metrics.json").read_text())["random_mlm_head"] is True
    from kept.evaluate import evaluate_run_dir

    metrics = evaluate_run_dir(run_dir, {"relation": {"enabled": False}, "batch_size": 8})["metrics"]
    for name in ("mlm", "cloze", "probe"):
        assert "MLM head was never trained" in metrics[name]["skipped"]


def _training_losses(run_dir: Path) -> list[tuple[int, float]]:
    history = json.loads((run_dir / "logs" / "train_history.json").read_text())["log_history"]
    return [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]


def test_eval_steps_do_not_change_training(encoded_template: Path, tmp_path: Path) -> None:
    """Evaluation draws from its own RNG (dEA negatives, the dataloader's seed): runs that differ only in
    train.eval_steps train identically (eval_steps is a non-training key, allowed to change on resume)."""
    losses = []
    for eval_steps in (3, 5):
        run_dir = tmp_path / f"eval{eval_steps}"
        shutil.copytree(encoded_template, run_dir)
        config = load_run_config(run_dir, [f"train.eval_steps={eval_steps}", "train.save_steps=6"])
        pretrain_run(run_dir, config, progress=False)
        losses.append(_training_losses(run_dir))
    assert len(losses[0]) == 6 and losses[0] == losses[1]
