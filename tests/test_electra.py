"""ELECTRA (model.objective: electra): RTD labels, the generator/discriminator pair, a tiny run from YAML whose
history has the generator MLM and RTD figures, a model/ that is the discriminator, evaluate and compare."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fusion import KeptConfig, KeptForPreTraining
from fusion.electra import KeptElectraForPreTraining, electra_flops_per_token, generator_config, rtd_labels
from kept.config import load_run_config
from kept.encode import encode_run
from kept.errors import KeptError
from kept.tiny import make_tiny_run

ELECTRA = ["model.objective=electra", "model.generator_fraction=0.5", "model.rtd_weight=50"]


def test_rtd_labels_count_a_sampled_original_as_not_replaced() -> None:
    original = torch.tensor([[2, 10, 11, 12, 3, 0]])
    filled = torch.tensor([[2, 10, 99, 12, 3, 0]])  # position 3 was masked and the generator drew the original
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    assert rtd_labels(original, filled, mask).tolist() == [[0.0, 0.0, 1.0, 0.0, 0.0, -100.0]]


def test_generator_is_a_fraction_of_the_discriminator() -> None:
    config = KeptConfig.from_preset("tiny", vocab_size=50)
    gen = generator_config(config, 0.25)
    assert gen.hidden_size == config.hidden_size // 4 and gen.num_knowledge_layers == 0
    assert gen.num_hidden_layers == config.num_total_layers and gen.intermediate_size == config.intermediate_size // 4
    flops = electra_flops_per_token(config, 0.25, 32)
    assert flops["electra"] > flops["mlm"] and flops["ratio"] == flops["electra"] / flops["mlm"]
    with pytest.raises(Exception, match="generator_fraction"):
        generator_config(config, 0.0)


def test_pair_shares_embeddings_and_labels_replacements() -> None:
    torch.manual_seed(0)
    config = KeptConfig.from_preset("tiny", vocab_size=40)
    pair = KeptElectraForPreTraining(config, generator_fraction=0.25, rtd_weight=50.0)
    ids = torch.randint(5, 40, (3, 10))
    labels = torch.full_like(ids, -100)
    labels[:, 2:5] = ids[:, 2:5]
    inputs = ids.masked_fill(labels != -100, 4)
    out = pair(input_ids=inputs, attention_mask=torch.ones_like(ids), labels=labels)
    assert out.replaced.shape == ids.shape and not out.replaced[labels == -100].any()  # only masked ones replaced
    assert torch.isclose(out.loss, out.generator_mlm_loss + 50.0 * out.rtd_loss)
    out.loss.backward()
    shared = pair.discriminator.get_input_embeddings().weight
    assert pair.get_input_embeddings() is pair.discriminator.get_input_embeddings()
    assert shared.grad is not None and pair.generator_input.weight.grad is not None  # the generator reads the table
    assert not any(
        n.startswith("generator.embeddings.word_embeddings") for n, p in pair.named_parameters() if p.requires_grad
    )


@pytest.fixture(scope="module")
def electra_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_tiny_run(tmp_path_factory.mktemp("electra") / "template", n_docs=60, steps=4, save_steps=4)
    encode_run(run_dir, load_run_config(run_dir))
    return run_dir


def test_electra_run_from_yaml_trains_and_saves_the_discriminator(electra_template: Path, tmp_path: Path) -> None:
    from kept.evaluate import evaluate_run_dir
    from kept.pretrain import pretrain_run

    run_dir = tmp_path / "run"
    shutil.copytree(electra_template, run_dir)
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(
        text.replace("  fusion: true\n", "  fusion: true\n  objective: electra\n  generator_fraction: 0.5\n")
    )
    config = load_run_config(run_dir)
    assert config.model.objective == "electra" and config.model.generator_fraction == 0.5
    pretrain_run(run_dir, config, progress=False)
    history = json.loads((run_dir / "logs" / "train_history.json").read_text())["log_history"]
    train = [e for e in history if "loss" in e]
    assert len(train) == 4
    assert all(e["generator_mlm_loss"] > 0 and e["rtd_loss"] > 0 and 0 <= e["rtd_accuracy"] <= 1 for e in train)
    assert all("mlm_loss" not in e for e in train)  # the discriminator's MLM head gets no targets
    assert any("eval_rtd_loss" in e and "eval_rtd_accuracy" in e for e in history)
    assert any("dea_loss" in e for e in train)  # fusion stays on in the discriminator
    model = KeptForPreTraining.from_pretrained(str(run_dir / "model"))  # model/ is the discriminator, as usual
    assert model.config.hidden_size == config.model.overrides["hidden_size"]
    recorded = json.loads((run_dir / "logs" / "pretrain_metrics.json").read_text())
    assert recorded["objective"] == "electra" and recorded["random_mlm_head"]
    result = evaluate_run_dir(
        run_dir, {"relation": {"enabled": False}, "probe": {"enabled": False}, "batch_size": 8, "num_examples": 2}
    )
    assert "ELECTRA discriminator" in result["metrics"]["mlm"]["skipped"]
    assert "ELECTRA discriminator" in result["metrics"]["cloze"]["skipped"]
    objectives = result["metrics"]["objectives"]
    assert set(objectives) == {"generator_mlm_loss", "rtd_loss", "rtd_accuracy"}

    from kept.compare import compare_runs

    table = compare_runs({"electra": [run_dir]})
    assert "objectives.rtd_accuracy" in table.shown_metrics()
    assert "objectives.rtd_accuracy" in table.to_markdown()


def test_objective_is_validated(electra_template: Path) -> None:
    with pytest.raises(KeptError, match="model.objective"):
        load_run_config(electra_template, ["model.objective=gan"])
    with pytest.raises(KeptError, match="generator_fraction"):
        load_run_config(electra_template, ["model.generator_fraction=2"])
    assert load_run_config(electra_template, ELECTRA).model.rtd_weight == 50


def test_electra_resumes_exactly(electra_template: Path, tmp_path: Path) -> None:
    """A run stopped at step 2 and resumed ends with the same discriminator as one that was never stopped
    (the generator, its sampling RNG and the RTD head come back from the checkpoint)."""
    from safetensors.torch import load_file
    from stop_at_step import StopAtStep

    from kept.pretrain import pretrain_run

    finals = []
    for stop in (None, 2):
        run_dir = tmp_path / f"run{stop}"
        shutil.copytree(electra_template, run_dir)
        config = load_run_config(run_dir, ELECTRA + ["train.save_steps=2", "model.fusion=false"])
        if stop:
            pretrain_run(run_dir, config, progress=False, extra_callbacks=[StopAtStep(stop)])
            assert not (run_dir / "model").exists()
        result = pretrain_run(run_dir, config, progress=False)
        assert result.steps == 4 and bool(result.resumed_from) == bool(stop)
        finals.append(load_file(str(run_dir / "model" / "model.safetensors")))
    assert finals[0].keys() == finals[1].keys() and not any(k.startswith("generator") for k in finals[0])
    for name in finals[0]:
        assert torch.allclose(finals[0][name], finals[1][name], atol=1e-5), name
