"""Run configuration: YAML + pydantic validation, overrides, saving, comparing, init_from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kept.config import (
    RunConfig,
    apply_overrides,
    changed_keys,
    load_config,
    load_run_config,
    parse_overrides,
    resolve_init_from,
    save_config,
    training_view,
)
from kept.errors import KeptError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_validate_and_fill_reused_sections() -> None:
    config = load_config(None)
    assert config.data.source == "wikipedia_sample"
    assert config.kg.model == "TransE"  # kg.EmbeddingConfig defaults
    assert config.masking.strategy == "entity"  # masking.MaskingConfig defaults
    assert [d.type for d in config.annotation.detectors]  # masking AnnotationConfig defaults
    assert config.eval.mlm.enabled and config.eval.relation.epochs is None  # the typed kept.evaluate EvalConfig
    assert config.to_dict()["kg"]["dim"] == config.kg.dim == 100


def test_unknown_key_names_path_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "run.yaml", "name: x\ntrain:\n  max_steps: 5\n  max_stepz: 7\n")
    with pytest.raises(KeptError) as info:
        load_config(path)
    message = str(info.value)
    assert "train.max_stepz" in message and f"{path}:4" in message


def test_unknown_key_in_reused_section(tmp_path: Path) -> None:
    path = write(tmp_path / "run.yaml", "kg:\n  dim: 8\n  epochz: 3\n")
    with pytest.raises(KeptError, match=r"kg\.epochz") as info:
        load_config(path)
    assert info.value.line == 3


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.max_steps=many", "train.max_steps"),
        ("model.preset=huge", "model.preset"),
        ("masking.strategy=nonsense", "masking.strategy"),
        ("kg.dim=abc", "kg.dim"),
        ("data.source=web", "data.source"),
        ("eval.mlm.max_examples=0", "eval.mlm.max_examples"),
    ],
)
def test_wrong_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(KeptError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_top_level_section_lists_the_valid_ones() -> None:
    with pytest.raises(KeptError, match="top-level sections are"):
        load_config(None, ["trian.max_steps=3"])


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "train:\n  max_steps: [1, 2\n")
    with pytest.raises(KeptError, match="not valid YAML") as info:
        load_config(path)
    assert info.value.line is not None


def test_missing_file_is_a_kept_error(tmp_path: Path) -> None:
    with pytest.raises(KeptError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_overrides_parse_yaml_values_and_win_over_file(tmp_path: Path) -> None:
    path = write(tmp_path / "run.yaml", "train: {max_steps: 5, bf16: auto}\nmodel: {fusion: true}\n")
    config = load_config(
        path, ["train.max_steps=50", "model.fusion=false", "train.bf16=false", "model.overrides={hidden_size: 32}"]
    )
    assert config.train.max_steps == 50 and config.model.fusion is False and config.train.bf16 is False
    assert config.model.overrides == {"hidden_size": 32}
    assert parse_overrides(["a.b=1.5"]) == [(["a", "b"], 1.5)]
    with pytest.raises(KeptError, match="KEY=VALUE"):
        parse_overrides(["train.max_steps"])
    with pytest.raises(KeptError, match="not a section"):
        apply_overrides({"train": 3}, ["train.max_steps=1"])


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    config = load_config(None, ["name=abc", "train.max_steps=7", "masking.strategy=span"])
    save_config(config, tmp_path)
    text = (tmp_path / "config.yaml").read_text()
    assert yaml.safe_load(text)["train"]["max_steps"] == 7
    again = load_run_config(tmp_path)
    assert again.to_dict() == config.to_dict()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_run_dir_without_config_uses_defaults_named_after_it(tmp_path: Path) -> None:
    config = load_run_config(tmp_path / "myrun")
    assert config.name == "myrun" and config.run_dir() == tmp_path / "myrun"
    with pytest.raises(KeptError, match="config.yaml not found"):
        load_run_config(tmp_path / "myrun", required=True)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("hello\n")
    path = write(tmp_path / "run.yaml", "data: {source: files, corpus: corpus.txt}\n")
    assert load_config(path).data.corpus == tmp_path / "corpus.txt"


def test_training_view_ignores_bookkeeping_keys() -> None:
    a = load_config(None)
    b = load_config(None, ["train.eval_steps=3", "train.logging_steps=1", "eval.mlm.max_examples=5"])
    c = load_config(None, ["train.learning_rate=0.1", "masking.strategy=token"])
    assert changed_keys(training_view(a), training_view(b)) == []
    assert changed_keys(training_view(a), training_view(c)) == ["masking.strategy", "train.learning_rate"]


def test_init_from_errors(tmp_path: Path) -> None:
    assert resolve_init_from(None) is None
    with pytest.raises(KeptError, match="does not exist"):
        resolve_init_from(str(tmp_path / "nope"))
    with pytest.raises(KeptError, match="has no final model"):
        resolve_init_from("run:missing", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeptError, match="no config.json"):
        resolve_init_from(str(empty))
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(KeptError, match="'gpt2' model"):
        resolve_init_from(str(gpt))
    bert = tmp_path / "runs" / "prev" / "model"
    bert.mkdir(parents=True)
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(KeptError, match="no weights"):
        resolve_init_from("run:prev", tmp_path / "runs")
    (bert / "model.safetensors").write_bytes(b"x")
    with pytest.raises(KeptError, match="not a readable safetensors file"):
        resolve_init_from("run:prev", tmp_path / "runs")
    import numpy as np
    from safetensors.numpy import save_file

    save_file(
        {"bert.embeddings.word_embeddings.weight": np.zeros((2, 2), dtype=np.float32)}, str(bert / "model.safetensors")
    )
    assert resolve_init_from("run:prev", tmp_path / "runs") == bert
    with pytest.raises(KeptError, match="not a run name"):
        resolve_init_from("run:../runs/prev", tmp_path / "runs")


def test_run_config_is_strict_on_top_level() -> None:
    with pytest.raises(Exception):
        RunConfig.model_validate({"unknown": 1})


def test_model_presets_are_the_fusion_presets() -> None:
    """`model.preset` accepts exactly fusion.PRESETS (ernie_thu included), so the two cannot drift apart."""
    from typing import get_args

    from fusion import PRESETS
    from kept.config import ModelConfig

    assert set(get_args(ModelConfig.model_fields["preset"].annotation)) == set(PRESETS)
    assert ModelConfig(preset="ernie_thu").preset == "ernie_thu"


def test_objective_settings_without_effect_are_refused() -> None:
    """A joint KG loss without fusion (no entity table to train) and a WKLM weight hidden in model.overrides
    would be accepted and do nothing: both are refused, naming the field."""
    from kept.config import validate_config
    from kept.errors import KeptError

    with pytest.raises(KeptError, match=r"model\.joint_kg_weight.*set model\.fusion: true"):
        validate_config({"model": {"fusion": False, "freeze_entity_table": False, "joint_kg_weight": 0.5}})
    with pytest.raises(KeptError, match=r"model\.overrides\.red_weight.*model\.red_weight"):
        validate_config({"model": {"overrides": {"red_weight": 5}}})


def test_a_key_that_is_not_a_name_is_one_line(tmp_path) -> None:
    """`&a : ` (hypothesis found it) is {None: None}: pydantic raised a TypeError; now one line."""
    from kept.config import load_config
    from kept.errors import KeptError

    for text, where in (("&a : \n", "the top level"), ("train:\n  1: 2\n", "'train'")):
        path = tmp_path / "bad.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(KeptError, match=f"invalid key .* at {where}: keys are names"):
            load_config(path)
