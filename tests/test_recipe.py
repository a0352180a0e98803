"""The pieces of the pretraining recipe and the one configuration base (no training here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from kept.errors import KeptError


def test_report_to_default_and_a_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.integrations import is_tensorboard_available

    from kept.train_setup import reporting

    report_to, callbacks = reporting(None, tmp_path / "tb")
    assert report_to == ["none"]  # TensorBoard goes through kept's own callback (its directory set)
    assert [getattr(c, "logging_dir", None) for c in callbacks] == (
        [str(tmp_path / "tb")] if is_tensorboard_available() else []
    )
    assert reporting([], tmp_path) == (["none"], [])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(KeptError, match="train.report_to: train.report_to names wandb, which is not installed"):
        reporting(["wandb"], tmp_path)


def test_row_index_column_counts_from_zero_after_a_selection() -> None:
    from datasets import Dataset

    from kept.pretrain import INDEX_KEY, with_index

    data = Dataset.from_dict({"input_ids": [[1], [2], [3]], "other": [0, 0, 0]}).select([2, 0])
    indexed = with_index(data, ["input_ids", "token_type_ids"])
    assert indexed.column_names == ["input_ids", INDEX_KEY]
    assert indexed[1] == {"input_ids": [1], INDEX_KEY: 1}


def test_config_models_say_the_field_in_one_line() -> None:
    from kg import EmbeddingConfig, KGError
    from masking import MaskingConfig, MaskingError

    with pytest.raises(
        MaskingError,
        match=r"^masking\.random_replace_prob: mask_replace_prob \+ random_replace_prob "
        r"exceeds 1",
    ) as info:
        MaskingConfig(mask_replace_prob=0.9, random_replace_prob=0.2)
    assert "\n" not in str(info.value)
    with pytest.raises(MaskingError, match=r"masking\.dea: expected a number|masking\.seed: expected a number"):
        MaskingConfig(seed=True)
    with pytest.raises(KGError, match=r"^kg\.epochz: unknown key"):
        EmbeddingConfig(epochz=3)
    assert MaskingConfig(ernie_stages=[["token", 1]]).ernie_stages == (("token", 1.0),)
