"""Reliability of `kept pretrain`: SIGKILL at a random step, resume, same final metrics; torchrun DDP on CPU."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kept.config import load_run_config
from kept.encode import encode_run
from kept.pretrain import complete_checkpoints
from kept.tiny import make_tiny_run

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def _encoded(tmp_path: Path, steps: int, save_steps: int) -> Path:
    run_dir = make_tiny_run(tmp_path / "template", n_docs=40, steps=steps, save_steps=save_steps)
    encode_run(run_dir, load_run_config(run_dir))
    return run_dir


def _copy(template: Path, target: Path) -> Path:
    shutil.copytree(template, target)
    return target


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "logs" / "pretrain_metrics.json").read_text())


def _pretrain(run_dir: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kept", "pretrain", str(run_dir), *extra],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_gives_the_same_final_metrics(tmp_path: Path) -> None:
    template = _encoded(tmp_path, steps=40, save_steps=5)
    reference = _copy(template, tmp_path / "reference")
    done = _pretrain(reference)
    assert done.returncode == 0, done.stderr[-3000:]

    rng = random.Random()
    for attempt in range(3):  # a fast machine may finish before the kill lands: try again on a fresh copy
        interrupted = _copy(template, tmp_path / f"interrupted-{attempt}")
        target = rng.choice([5, 10, 15, 20, 25])  # a random checkpoint of the 40 steps, then kill at once
        process = subprocess.Popen(
            [sys.executable, "-m", "kept", "pretrain", str(interrupted)],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            steps = [int(p.name.split("-")[1]) for p in complete_checkpoints(interrupted / "checkpoints")]
            if steps and max(steps) >= target:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere in the steps after that checkpoint
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.returncode == -signal.SIGKILL and not (interrupted / "model").exists():
            break
    assert process.returncode == -signal.SIGKILL, "training finished before it could be killed (3 tries)"
    assert not (interrupted / "model").exists()
    last = complete_checkpoints(interrupted / "checkpoints")[-1]

    resumed = _pretrain(interrupted)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    a, b = _metrics(reference), _metrics(interrupted)
    assert b["resumed_from"] is not None and Path(b["resumed_from"]).name.startswith("checkpoint-")
    assert int(Path(b["resumed_from"]).name.split("-")[1]) >= int(last.name.split("-")[1])
    assert b["global_step"] == a["global_step"] == 40
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-6)
    assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-5, abs=1e-6)
    assert not list(interrupted.rglob("*.tmp-*"))


@pytest.mark.slow
def test_ctrl_c_exits_130_with_the_step_and_keeps_the_checkpoints(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) during `kept pretrain`: exit code 130, one line naming the step, checkpoints kept."""
    run_dir = _encoded(tmp_path, steps=100_000, save_steps=5)  # far more steps than the test waits for
    process = subprocess.Popen(
        [sys.executable, "-m", "kept", "pretrain", str(run_dir)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell without job control starts background jobs with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not complete_checkpoints(run_dir / "checkpoints"):
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[1][-3000:]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"interrupted at step \d+; re-run to resume", last), stderr[-3000:]
    assert int(last.split()[3].rstrip(";")) >= 5
    assert complete_checkpoints(run_dir / "checkpoints") and not (run_dir / "model").exists()


def test_ctrl_c_outside_training_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A KeyboardInterrupt anywhere in a command (here before training) is exit 130 and one line, not 0."""
    import kept.pretrain
    from kept.cli import main

    run_dir = make_tiny_run(tmp_path / "run", steps=2)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(kept.pretrain, "pretrain_run", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", str(run_dir)])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted; re-run to resume"


@pytest.mark.slow
def test_torchrun_two_processes_train_checkpoint_and_resume(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    template = _encoded(tmp_path, steps=6, save_steps=3)
    run_dir = _copy(template, tmp_path / "ddp")
    command = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "kept",
        "pretrain",
        str(run_dir),
        "--set",
        "train.use_cpu=true",
    ]
    first = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-4000:]
    metrics = _metrics(run_dir)
    assert metrics["world_size"] == 2 and metrics["global_step"] == 6
    assert [p.name for p in complete_checkpoints(run_dir / "checkpoints")] == ["checkpoint-3", "checkpoint-6"]
    assert (run_dir / "model" / "model.safetensors").exists()

    # lose the last checkpoint and the model: the second launch resumes from checkpoint-3
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-6")
    shutil.rmtree(run_dir / "model")
    second = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert second.returncode == 0, second.stderr[-4000:]
    resumed = _metrics(run_dir)
    assert resumed["resumed_from"].endswith("checkpoint-3") and resumed["global_step"] == 6
    assert resumed["train_loss"] == pytest.approx(metrics["train_loss"], rel=1e-5)
    assert resumed["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)
