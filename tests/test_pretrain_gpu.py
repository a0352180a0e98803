"""Pretraining on a CUDA device: bf16 chosen automatically (skipped without a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_bf16_auto_on_gpu(tmp_path: Path) -> None:
    from kept.config import load_run_config
    from kept.encode import encode_run
    from kept.pretrain import pretrain_run
    from kept.tiny import make_tiny_run

    run_dir = make_tiny_run(tmp_path / "gpu", steps=4, save_steps=2)
    encode_run(run_dir, load_run_config(run_dir))
    result = pretrain_run(run_dir, load_run_config(run_dir), progress=False)
    assert result.metrics["bf16"] is torch.cuda.is_bf16_supported()
    assert result.eval_loss is not None and result.eval_loss == result.eval_loss  # finite, not NaN
