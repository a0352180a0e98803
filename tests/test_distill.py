"""`kept distill`: the losses, the layer map, the student presets and directories, and the command end to end
(a tiny fusion teacher → a narrower, shallower BERT student that `kept evaluate` and `kept export` take)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from kept.cli import app
from kept.config import load_run_config
from kept.distill import attention_loss, distill_run, hidden_loss, kd_loss, layer_map
from kept.distill.student import Student, build_student, load_teacher
from kept.encode import encode_run
from kept.errors import KeptError
from kept.pretrain import pretrain_run
from kept.rundir import run_paths
from kept.tiny import make_tiny_run

QUICK = [
    "train.logging_steps=1",
    "train.eval_steps=3",
    "train.save_steps=3",
    "distill.speed_batches=2",
    "distill.learning_rate=0.002",
]


# ------------------------------------------------------------------ losses


def test_kd_loss_is_zero_for_equal_logits_and_follows_the_formula() -> None:
    torch.manual_seed(0)
    teacher, student = torch.randn(5, 11), torch.randn(5, 11)
    assert kd_loss(teacher.clone(), teacher, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    t = 2.0
    p = torch.softmax(teacher / t, -1)
    expected = (p * (torch.log_softmax(teacher / t, -1) - torch.log_softmax(student / t, -1))).sum(-1).mean() * t * t
    assert kd_loss(student, teacher, t).item() == pytest.approx(expected.item(), rel=1e-5)
    assert kd_loss(torch.zeros(0, 11), torch.zeros(0, 11), t).item() == 0.0  # no masked position in the batch


def test_hidden_loss_projects_and_ignores_padding() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert hidden_loss(teacher.clone(), teacher, mask).item() == pytest.approx(0.0)
    student = teacher.clone()
    student[0, 3] += 100.0  # a padding position: not compared
    assert hidden_loss(student, teacher, mask).item() == pytest.approx(0.0)
    student[0, 0] += 1.0
    assert hidden_loss(student, teacher, mask).item() == pytest.approx(6 / (5 * 6))  # one token, 6 units off by 1
    narrow = torch.randn(2, 4, 3)
    projection = torch.nn.Linear(3, 6)
    assert hidden_loss(narrow, teacher, mask, projection).item() > 0
    with pytest.raises(ValueError, match="projection"):
        hidden_loss(narrow, teacher, mask)


def test_attention_loss_averages_heads_when_the_counts_differ() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0]])
    scores = torch.randn(1, 2, 4, 4).masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    teacher = torch.softmax(scores, -1)  # [1, 2 heads, 4, 4]
    student = teacher.mean(dim=1, keepdim=True)  # one head = the teacher's heads averaged
    for kind in ("kl", "mse"):
        assert attention_loss(student, teacher, mask, kind).item() == pytest.approx(0.0, abs=1e-6)
        assert attention_loss(teacher, teacher, mask, kind).item() == pytest.approx(0.0, abs=1e-6)
        other = torch.softmax(torch.randn(1, 1, 4, 4).masked_fill(~mask.bool()[:, None, None, :], float("-inf")), -1)
        assert attention_loss(other, teacher, mask, kind).item() > 1e-4
    swapped = teacher.flip(1)  # same head count: head h is compared with head h
    assert attention_loss(swapped, teacher, mask).item() > 1e-4
    with pytest.raises(ValueError, match="unknown attention loss"):
        attention_loss(student, teacher, mask, "cosine")


def test_layer_map_rules_and_lists() -> None:
    assert layer_map("uniform", 2, 4) == [2, 4]
    assert layer_map("uniform", 3, 12) == [4, 8, 12]
    assert layer_map("uniform", 1, 2) == [2]
    assert layer_map("last", 2, 4) == [3, 4]
    assert layer_map([1, 3], 2, 4) == [1, 3]
    for bad in ([1], [3, 2], [0, 4], [1, 5]):
        with pytest.raises(KeptError, match="distill.layer_map"):
            layer_map(bad, 2, 4)
    with pytest.raises(KeptError, match="unknown layer map"):
        layer_map("every_other", 2, 4)


# ------------------------------------------------------------------ a tiny teacher


def student_of(
    spec: str, teacher: Any, tokenizer: Any, *, attentions: bool = False, overrides: dict[str, Any] | None = None
) -> Student:
    """``build_student`` with the settings every test here shares (uniform layer map, started from the teacher)."""
    return build_student(
        spec,
        teacher,
        tokenizer,
        overrides=overrides or {},
        rule="uniform",
        init_from_teacher=True,
        attentions=attentions,
        seed=0,
        max_length=32,
    )


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_tiny_run(tmp_path_factory.mktemp("distill") / "teacher", steps=2, save_steps=2)
    encode_run(run_dir, load_run_config(run_dir))
    pretrain_run(run_dir, load_run_config(run_dir), progress=False)
    return run_dir


@pytest.fixture(scope="module")
def student_run(teacher_run: Path) -> Path:
    out = teacher_run.parent / "student"
    sets = [arg for item in QUICK for arg in ("--set", item)]
    result = CliRunner().invoke(
        app, ["distill", str(teacher_run), "--student", "small", "--out", str(out), "--max-steps", "6", *sets]
    )
    assert result.exit_code == 0, result.output
    return out


def test_distill_logs_every_loss_and_they_decrease(student_run: Path) -> None:
    history = json.loads((student_run / "logs" / "train_history.json").read_text())["log_history"]
    train = [entry for entry in history if "loss" in entry]
    assert len(train) == 6
    for name in ("kd_loss", "hidden_loss", "attention_loss"):
        assert all(name in entry for entry in train), name
        assert all(f"eval_{name}" in entry for entry in history if "eval_loss" in entry)
    assert "mlm_loss" not in train[0]  # weight 0 by default: not computed
    first, last = sum(e["loss"] for e in train[:2]), sum(e["loss"] for e in train[-2:])
    assert last < first
    assert train[-1]["hidden_loss"] < train[0]["hidden_loss"]
    metrics = json.loads((student_run / "distill_metrics.json").read_text())
    assert metrics["student"]["shape"] == "1 x 16" and metrics["teacher"]["shape"] == "2 x 32"
    assert metrics["student"]["parameters_m"] < metrics["teacher"]["parameters_m"]
    for side in ("teacher", "student"):
        assert 0.0 <= metrics[side]["mlm_accuracy"] <= 1.0 and metrics[side]["sequences_per_s"] > 0
        assert "skipped" in metrics[side]["relation"]  # the tiny run has no FewRel data
    record = json.loads((student_run / "model" / "kept_distill.json").read_text())
    assert record["layer_map"] == [2] and record["fusion_teacher"] is True and record["global_step"] == 6
    config = load_run_config(student_run)
    assert config.model.fusion is False and config.distill.student == "small"


def test_the_student_loads_with_plain_transformers(student_run: Path) -> None:
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForMaskedLM, AutoTokenizer\n"
        f"path = {str(student_run / 'model')!r}\n"
        "model = AutoModelForMaskedLM.from_pretrained(path).eval()\n"
        "tokenizer = AutoTokenizer.from_pretrained(path)\n"
        "batch = tokenizer(['Paris is the capital city of France .'], return_tensors='pt')\n"
        "logits = model(**batch).logits\n"
        "assert type(model).__name__ == 'BertForMaskedLM' and logits.shape[-1] == len(tokenizer)\n"
        "assert not any(name.split('.')[0] in ('kept', 'fusion', 'masking', 'kg') for name in sys.modules)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_kept_evaluate_scores_and_kept_export_writes_the_student(student_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(student_run), "--set", "eval.probe.enabled=false"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((student_run / "eval" / "metrics.json").read_text())
    assert metrics["model"]["fusion"] is False
    assert 0.0 <= metrics["metrics"]["mlm"]["token"]["accuracy"] <= 1.0
    out = tmp_path / "bert"
    result = CliRunner().invoke(app, ["export", str(student_run), "--to", "bert", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    assert json.loads((out / "kept_export.json").read_text())["dropped"] == []
    from transformers import AutoModelForMaskedLM

    exported = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
    original = AutoModelForMaskedLM.from_pretrained(str(student_run / "model")).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        assert torch.allclose(exported(input_ids=ids).logits, original(input_ids=ids).logits)


def test_distill_resumes_and_refuses_changed_settings(teacher_run: Path, student_run: Path, tmp_path: Path) -> None:
    out = shutil.copytree(student_run, tmp_path / "student", symlinks=True)
    shutil.rmtree(out / "model")
    config = load_run_config(teacher_run, [*QUICK, "distill.student=small", "distill.max_steps=6"])
    result = distill_run(teacher_run, config, out)
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-6")
    assert result.steps == 6  # finished: loaded, not trained one step further
    from transformers import AutoModelForMaskedLM

    again = AutoModelForMaskedLM.from_pretrained(str(out / "model")).state_dict()
    first = AutoModelForMaskedLM.from_pretrained(str(student_run / "model")).state_dict()
    assert all(torch.equal(again[name], first[name]) for name in first)
    shutil.rmtree(out / "checkpoints" / "checkpoint-6")  # resume from step 3: trains steps 4-6 again
    result = distill_run(teacher_run, config, out)
    assert result.resumed_from.endswith("checkpoint-3") and result.steps == 6
    resumed = AutoModelForMaskedLM.from_pretrained(str(out / "model")).state_dict()
    assert all(torch.allclose(resumed[name], first[name], atol=1e-6) for name in first)  # an exact resume
    changed = load_run_config(
        teacher_run, [*QUICK, "distill.student=small", "distill.max_steps=6", "distill.temperature=4"]
    )
    with pytest.raises(KeptError, match="distill.temperature"):
        distill_run(teacher_run, changed, out)


def test_a_half_student_starts_from_the_teachers_text_layers(teacher_run: Path) -> None:
    from fusion.export import to_bert_for_masked_lm
    from kept.tokenizer import load_run_tokenizer

    paths = run_paths(teacher_run)
    teacher = load_teacher(paths, fusion=True, attentions=True)
    tokenizer = load_run_tokenizer(paths.tokenizer)
    student = student_of("half", teacher, tokenizer, attentions=True)
    assert student.from_teacher == [2] and student.new == []
    text = to_bert_for_masked_lm(teacher).model.state_dict()
    own = student.model.state_dict()
    assert torch.equal(
        own["bert.encoder.layer.0.attention.self.query.weight"],
        text["bert.encoder.layer.1.attention.self.query.weight"],
    )  # teacher layer 2 (the K layer)
    assert torch.equal(own["bert.embeddings.word_embeddings.weight"], text["bert.embeddings.word_embeddings.weight"])
    tiny = student_of("tiny", teacher, tokenizer)
    assert tiny.model.config.hidden_size == 64 and tiny.from_teacher == []
    with pytest.raises(KeptError, match="distill.student"):
        student_of("huge", teacher, tokenizer)
    with pytest.raises(KeptError, match="student_overrides"):
        student_of("small", teacher, tokenizer, overrides={"hiden_size": 8})


def test_a_bert_directory_student(teacher_run: Path, tmp_path: Path) -> None:
    from kept.export import export_run
    from kept.tokenizer import load_run_tokenizer

    paths = run_paths(teacher_run)
    bert_dir = export_run(teacher_run, tmp_path / "bert", text_only=True).out  # the run's vocabulary
    teacher = load_teacher(paths, fusion=True, attentions=False)
    tokenizer = load_run_tokenizer(paths.tokenizer)
    student = student_of(str(bert_dir), teacher, tokenizer)
    assert student.new == [] and student.model.config.num_hidden_layers == 2


def test_minilm_student_gets_a_new_mlm_head_and_needs_the_runs_vocabulary(minilm_dir: Path, teacher_run: Path) -> None:
    from transformers import AutoTokenizer

    from kept.tokenizer import load_run_tokenizer

    own_tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    student = student_of(str(minilm_dir), None, own_tokenizer)
    assert student.new and all(name.startswith("cls.predictions") for name in student.new)
    decoder = student.model.get_output_embeddings().weight
    assert decoder.data_ptr() == student.model.bert.embeddings.word_embeddings.weight.data_ptr()  # tied
    with pytest.raises(KeptError, match="distill.student"):
        student_of(str(minilm_dir), None, load_run_tokenizer(run_paths(teacher_run).tokenizer))


def test_bad_distill_settings_are_one_line_errors(teacher_run: Path) -> None:
    with pytest.raises(KeptError, match="distill.temprature"):
        load_run_config(teacher_run, ["distill.temprature=2"])
    with pytest.raises(KeptError, match="distill.temperature"):
        load_run_config(teacher_run, ["distill.temperature=0"])
    zero = load_run_config(
        teacher_run,
        ["distill.student=small", "distill.kd_weight=0", "distill.hidden_weight=0", "distill.attention_weight=0"],
    )
    with pytest.raises(KeptError, match="every loss weight is 0"):
        distill_run(teacher_run, zero, teacher_run.parent / "never")
    result = CliRunner().invoke(app, ["distill", str(teacher_run)])
    assert result.exit_code != 0 and "--student" in str(result.exception or result.output)
    kept_dir = load_run_config(teacher_run, [f"distill.student={teacher_run / 'model'}"])
    with pytest.raises(KeptError, match="'kept' model; a student is a BERT checkpoint"):
        distill_run(teacher_run, kept_dir, teacher_run.parent / "never")
    untrained = shutil.copytree(
        teacher_run,
        teacher_run.parent / "untrained",
        symlinks=True,
        ignore=shutil.ignore_patterns("model", "checkpoints"),
    )
    with pytest.raises(KeptError, match="pretrain the teacher run first"):
        distill_run(untrained, load_run_config(untrained, ["distill.student=small"]), teacher_run.parent / "never")
    assert not (teacher_run.parent / "never").exists()  # refused before anything is written
    # a teacher whose MLM head was never trained (an ELECTRA discriminator, an untrained reference): no KD
    electra = shutil.copytree(
        teacher_run, teacher_run.parent / "electra", symlinks=True, ignore=shutil.ignore_patterns("checkpoints")
    )
    metrics = electra / "logs" / "pretrain_metrics.json"
    metrics.parent.mkdir(exist_ok=True)
    metrics.write_text(json.dumps({"objective": "electra", "global_step": 2}), encoding="utf-8")
    with pytest.raises(KeptError, match=r"distill\.kd_weight.*MLM logits cannot be distilled.*ELECTRA"):
        distill_run(electra, load_run_config(electra, ["distill.student=small"]), teacher_run.parent / "never")
    assert not (teacher_run.parent / "never").exists()
