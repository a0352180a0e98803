"""Issue 14 in real processes: a failing `kept pretrain` prints its one error line last, with no library warning
(torch, transformers) or traceback before it; the catalogue (test_bad_input) runs in-process, where pytest
captures warnings, so this is checked here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["rng_state.pth", "scheduler.pt"])
def test_resume_of_a_damaged_checkpoint_in_a_real_process(tmp_path: Path, damaged: str) -> None:
    from kept.config import load_run_config
    from kept.encode import encode_run
    from kept.tiny import make_tiny_run

    run = make_tiny_run(tmp_path / "run")
    encode_run(run, load_run_config(run))
    checkpoint = run / "checkpoints" / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 5}), encoding="utf-8")
    (checkpoint / damaged).write_bytes(b"\x80\x02 cut off by a full disk")
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("RANK", None)
    done = subprocess.run(
        [sys.executable, "-m", "kept", "pretrain", str(run)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == len(lines) - 1, lines[-5:]
    assert f"{damaged}: damaged checkpoint file" in lines[-1] and "--restart" in lines[-1]
    noise = [line for line in lines if "Warning" in line or "warn(" in line or "Traceback" in line]
    assert not noise, noise
