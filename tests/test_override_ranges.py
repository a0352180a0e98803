"""model.overrides range checks (issue 14): one line naming the field, at config time, not in the Trainer."""

from __future__ import annotations

from pathlib import Path

import pytest

from kept.config import load_config
from kept.errors import KeptError


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ("{hidden_size: 0}", "hidden_size", "greater than 0"),
        ("{hidden_size: -64}", "hidden_size", "greater than 0"),
        ("{num_hidden_layers: -1}", "num_hidden_layers", "at least 0"),
        ("{intermediate_size: 0}", "intermediate_size", "greater than 0"),
        ("{hidden_dropout_prob: 1.5}", "hidden_dropout_prob", "between 0 and 1"),
        ("{attention_probs_dropout_prob: -0.1}", "attention_probs_dropout_prob", "at least 0"),
        ("{classifier_dropout: 2}", "classifier_dropout", "between 0 and 1"),
        ("{layer_norm_eps: 0}", "layer_norm_eps", "greater than 0"),
        ("{initializer_range: .nan}", "initializer_range", "not a finite number"),
        ("{num_attention_heads: 5}", "num_attention_heads", "does not divide hidden_size 64 (preset tiny)"),
        ("{hidden_size: 90}", "hidden_size", "num_attention_heads 4 does not divide hidden_size 90"),
        ("{hidden_size: 96, num_attention_heads: 5}", "num_attention_heads", "does not divide hidden_size 96"),
        ("{entity_dim: 30, num_entity_attention_heads: 4}", "num_entity_attention_heads", "does not divide entity_dim"),
    ],
)
def test_bad_override_is_one_line_naming_the_field(tmp_path: Path, overrides: str, field: str, words: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"name: x\nmodel:\n  preset: tiny\n  overrides: {overrides}\n", encoding="utf-8")
    with pytest.raises(KeptError) as info:
        load_config(path)
    message = str(info.value)
    assert f"model.overrides.{field}" in message and words in message and "run.yaml:" in message, message
    assert "\n" not in message


def test_good_overrides_pass_and_heads_use_the_preset(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "name: x\nmodel:\n  preset: base\n  overrides: {hidden_size: 384, num_hidden_layers: 0, "
        "hidden_dropout_prob: 0, attention_probs_dropout_prob: 1, classifier_dropout: null}\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.model.overrides["hidden_size"] == 384 and config.model.overrides["num_hidden_layers"] == 0


def test_override_from_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(KeptError, match=r"model\.overrides\.hidden_dropout_prob.*between 0 and 1"):
        load_config(None, ["model.overrides.hidden_dropout_prob=3"])
