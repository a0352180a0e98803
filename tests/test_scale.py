"""Long runs: gradient accumulation is a larger batch (same parameters, right step counts) and
train.warmup_tokens becomes the right number of optimizer steps."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from kept.config import load_config, load_run_config, validate_config
from kept.errors import KeptError
from kept.scale import resolve_warmup, steps_for_tokens, tokens_per_step


def test_warmup_tokens_convert_to_steps() -> None:
    assert tokens_per_step(16, 4, 128, 2) == 16_384
    assert steps_for_tokens(100_000, 16_384) == 7  # rounded up: never fewer tokens than asked
    assert steps_for_tokens(16_384 * 3, 16_384) == 3
    config = validate_config(
        {
            "encode": {"max_length": 128},
            "train": {
                "max_steps": 1000,
                "batch_size": 16,
                "gradient_accumulation_steps": 4,
                "warmup_tokens": 1_000_000,
            },
        }
    )
    warmup = resolve_warmup(config, processes=2)
    assert warmup.steps == 62  # ceil(1e6 / 16384)
    assert "16,384 tokens per step" in warmup.describe()
    assert resolve_warmup(config, processes=1).steps == 123  # ceil(1e6 / 8192)
    with pytest.raises(KeptError, match="more than train.max_steps"):
        resolve_warmup(config.model_copy(update={"train": config.train.model_copy(update={"max_steps": 10})}), 1)
    plain = validate_config({"train": {"max_steps": 200, "warmup_ratio": 0.1}})
    assert resolve_warmup(plain, 1).steps == 20
    assert resolve_warmup(validate_config({"train": {"warmup_steps": 7}}), 1).steps == 7


@pytest.mark.parametrize("other", ["warmup_steps: 10", "warmup_ratio: 0.1"])
def test_warmup_tokens_refused_with_another_warmup(tmp_path: Path, other: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"name: x\ntrain:\n  {other}\n  warmup_tokens: 50000\n")
    with pytest.raises(KeptError) as error:
        load_config(path)
    assert "train.warmup_tokens" in str(error.value) and ":4" in str(error.value)


def test_warmup_tokens_leave_warmup_ratio_underived() -> None:
    from kept.optim import resolve_train_defaults

    config = validate_config({"train": {"warmup_tokens": 4096}})
    resolved, derived = resolve_train_defaults(config)
    assert resolved.train.warmup_ratio is None and "warmup_ratio" not in {d.key for d in derived}
    validate_config(resolved.to_dict())  # the config.yaml written as run loads again


class _Record:
    """A Trainer callback recording what the Trainer was given and did."""

    def __new__(cls, seen: dict[str, Any]) -> Any:
        from transformers import TrainerCallback

        class Recorder(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
                seen["accumulation"] = args.gradient_accumulation_steps
                seen["warmup_steps"] = args.warmup_steps
                seen["batch_size"] = args.per_device_train_batch_size

            def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
                seen["optimizer_steps"] = seen.get("optimizer_steps", 0) + 1

        return Recorder()


def test_pretrain_passes_accumulation_and_warmup_tokens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """From the run's YAML: accumulation reaches the Trainer, the history counts optimizer steps, and
    warmup_tokens becomes ceil(tokens / (batch x accumulation x max_length)) Trainer warm-up steps."""
    from kept.encode import encode_run
    from kept.pretrain import pretrain_run
    from kept.tiny import make_tiny_run

    run_dir = make_tiny_run(tmp_path / "run", steps=4, save_steps=4)
    config = load_run_config(
        run_dir,
        [
            "train.gradient_accumulation_steps=2",
            "train.warmup_steps=0",
            "train.warmup_tokens=600",
            "train.logging_steps=1",
            "train.max_steps=5",
        ],
    )
    encode_run(run_dir, config)
    seen: dict[str, Any] = {}
    caplog.set_level(logging.INFO, logger="kept")
    result = pretrain_run(run_dir, config, progress=False, extra_callbacks=[_Record(seen)])
    lines = caplog.messages
    assert seen["accumulation"] == 2 and seen["optimizer_steps"] == 5 and result.steps == 5
    assert seen["warmup_steps"] == 3  # ceil(600 / (4 x 2 x 32))
    assert any(line.startswith("warm-up: 3 optimizer steps (train.warmup_tokens 600 / 256 tokens") for line in lines)
    history = json.loads((run_dir / "logs" / "train_history.json").read_text())
    assert history["global_step"] == 5
    train = [entry for entry in history["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in train] == [1, 2, 3, 4, 5]
    rates = [entry["learning_rate"] for entry in train]
    # the rate each step used: 3 warm-up steps from 0 to the peak 1e-3, then linear decay to 0 at step 5
    assert rates == pytest.approx([0.0, 1e-3 / 3, 2e-3 / 3, 1e-3, 0.5e-3])
    assert all("mlm_loss" in entry for entry in train)


def _tiny_model() -> Any:
    from fusion import KeptConfig, KeptForPreTraining

    torch.manual_seed(0)
    config = KeptConfig.from_preset(
        "tiny",
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_knowledge_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        entity_dim=8,
        num_entity_attention_heads=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        dea_weight=0.0,
    )
    return KeptForPreTraining(config)


class _Rows(torch.utils.data.Dataset):
    """16 rows of 12 tokens, every token labelled: each micro-batch's mean loss weighs every row alike."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(1)
        self.ids = torch.randint(5, 50, (16, 12), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def _train(tmp_path: Path, batch_size: int, accumulation: int, calls: list[int]) -> dict[str, torch.Tensor]:
    from transformers import TrainingArguments

    from kept.trainer import KeptTrainer

    def collate(features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        calls.append(len(features))
        ids = torch.stack([f["input_ids"] for f in features])
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": torch.stack([f["labels"] for f in features]),
        }

    model = _tiny_model()
    args = TrainingArguments(
        output_dir=str(tmp_path / f"b{batch_size}a{accumulation}"),
        max_steps=2,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=1e-2,
        warmup_steps=0,
        weight_decay=0.01,
        seed=3,
        data_seed=3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        remove_unused_columns=False,
        dataloader_pin_memory=False,
    )
    trainer = KeptTrainer(model=model, args=args, data_collator=collate, train_dataset=_Rows())
    trainer.train()
    assert trainer.state.global_step == 2
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_accumulation_equals_a_doubled_batch(tmp_path: Path) -> None:
    """batch 4 x accumulation 2 trains the same parameters as batch 8 (same rows per optimizer step)."""
    doubled_calls: list[int] = []
    accumulated_calls: list[int] = []
    doubled = _train(tmp_path, 8, 1, doubled_calls)
    accumulated = _train(tmp_path, 4, 2, accumulated_calls)
    assert doubled_calls == [8, 8] and accumulated_calls == [4, 4, 4, 4]
    start = {name: p for name, p in _tiny_model().named_parameters() if p.requires_grad}
    moved = max(float((doubled[name] - start[name]).abs().max()) for name in doubled)
    assert moved > 1e-3  # training changed the parameters
    for name, value in doubled.items():
        assert torch.allclose(value, accumulated[name], atol=1e-5, rtol=1e-4), name


def test_readme_long_run_and_joint_kg_settings_are_valid() -> None:
    """The README's long-run and joint-KG YAML blocks load, and the warm-up they state is what kept computes."""
    import re

    import yaml

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = {
        name: re.search(r"```yaml\n(.*?)```", readme.split(f"**{name}", 1)[1], flags=re.S).group(1)
        for name in ("Long runs (RoBERTa-style).", "Joint KG learning (KEPLER/DRAGON).")
    }
    long_run = validate_config(yaml.safe_load(blocks["Long runs (RoBERTa-style)."]))
    assert long_run.encode.packing and long_run.train.gradient_accumulation_steps == 8
    assert resolve_warmup(long_run, processes=8).steps == 5723
    joint = validate_config(yaml.safe_load(blocks["Joint KG learning (KEPLER/DRAGON)."]))
    assert joint.model.joint_kg_weight == 1.0 and not joint.model.freeze_entity_table
