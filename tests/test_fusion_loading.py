"""Loading BERT checkpoints into KEPT models: legacy names, every model class, refusal, pooler, layer layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fusion import (
    FusionError,
    KeptForMaskedLM,
    KeptForPreTraining,
    KeptForRelationClassification,
    KeptForSequenceClassification,
    KeptModel,
)
from fusion.bert_checkpoint import iter_bert_tensors
from fusion.bert_mapping import canonical_bert_key, map_bert_key, split_layers

ALL_CLASSES = [
    KeptModel,
    KeptForPreTraining,
    KeptForMaskedLM,
    KeptForSequenceClassification,
    KeptForRelationClassification,
]
BERT_LAYERS = 4


def _tiny_bert(seed: int = 0):
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=BERT_LAYERS,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForPreTraining(config).eval()


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertForPreTraining (bert.* names, MLM and NSP heads), saved as transformers does."""
    path = tmp_path_factory.mktemp("bert")
    _tiny_bert().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_model(bert_dir: Path):
    from transformers import BertModel

    return BertModel.from_pretrained(str(bert_dir)).eval()


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(1, 99, (2, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _legacy_copy(bert_dir: Path, out: Path) -> Path:
    """The same weights under pytorch_pretrained_bert's LayerNorm names (gamma/beta), as a pytorch_model.bin."""
    out.mkdir()
    (out / "config.json").write_text((bert_dir / "config.json").read_text())
    state = load_file(str(bert_dir / "model.safetensors"))
    renamed = {
        key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): tensor
        for key, tensor in state.items()
    }
    assert sum(key.endswith(("gamma", "beta")) for key in renamed) == 2 * (2 * BERT_LAYERS + 2)
    torch.save(renamed, out / "pytorch_model.bin")
    return out


def _assert_same_encoder(model, bert_model) -> None:
    kept = model._kept()
    batch = _batch()
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        ref = bert_model(**batch)
        ours = kept.eval()(**batch)
    assert torch.allclose(ours.last_hidden_state[mask], ref.last_hidden_state[mask], atol=1e-5)
    if kept.pooler is not None:
        assert torch.allclose(ours.pooler_output, ref.pooler_output, atol=1e-5)


# ---------------------------------------------------------------------------------------------- names
def test_legacy_and_wrapped_names_are_canonicalised() -> None:
    assert (
        canonical_bert_key("module.bert.encoder.layer.0.output.LayerNorm.gamma")
        == "encoder.layer.0.output.LayerNorm.weight"
    )
    assert canonical_bert_key("bert.embeddings.LayerNorm.beta") == "embeddings.LayerNorm.bias"
    assert (
        canonical_bert_key("cls.predictions.transform.LayerNorm.gamma") == "cls.predictions.transform.LayerNorm.weight"
    )
    assert (
        canonical_bert_key("encoder.layer.3.attention.self.query.weight")
        == "encoder.layer.3.attention.self.query.weight"
    )
    assert (
        map_bert_key("bert.encoder.layer.3.output.dense.bias", 2, 2)
        == "kept.knowledge_encoder.layer.1.output.dense.bias"
    )
    assert (
        map_bert_key("bert.encoder.layer.3.output.dense.bias", 2, 2, prefix="")
        == "knowledge_encoder.layer.1.output.dense.bias"
    )
    assert map_bert_key("bert.pooler.dense.weight", 2, 2, prefix="") == "pooler.dense.weight"


def test_split_layers_keeps_every_bert_layer_unless_told() -> None:
    assert split_layers(6, None, None) == (3, 3)
    assert split_layers(7, None, None) == (4, 3)
    assert split_layers(6, None, 0) == (6, 0)  # no knowledge layers: the whole BERT encoder
    assert split_layers(6, None, 2) == (4, 2)
    assert split_layers(6, 2, None) == (2, 4)
    assert split_layers(6, None, 8) == (0, 8)
    assert split_layers(6, 4, 4) == (4, 4)


# ---------------------------------------------------------------------------------------------- loading
def test_gamma_beta_checkpoint_loads_every_layer_norm(bert_dir: Path, bert_model, tmp_path: Path) -> None:
    legacy = _legacy_copy(bert_dir, tmp_path / "legacy")
    model, report = KeptForPreTraining.from_bert(legacy, entity_dim=8, num_entity_attention_heads=2)
    assert "kept.encoder.layer.0.output.LayerNorm.weight" in report.loaded
    assert "kept.embeddings.LayerNorm.bias" in report.loaded
    layer_norms = [name for name in report.expected if ".LayerNorm." in name]
    assert len(layer_norms) == 2 * (2 * BERT_LAYERS + 1)
    assert set(layer_norms) <= set(report.loaded)
    assert "cls.predictions.transform.LayerNorm.weight" in report.loaded  # the MLM head's, renamed too
    assert report.loaded_fraction == 1.0 and report.missing == []
    assert not any(name.endswith(("gamma", "beta")) for name in report.unused)
    _assert_same_encoder(model, bert_model)


@pytest.mark.parametrize("model_class", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_model_class_loads_the_encoder(model_class: type, bert_dir: Path, bert_model) -> None:
    model, report = model_class.from_bert(bert_dir, entity_dim=8, num_entity_attention_heads=2)
    assert isinstance(model, model_class)
    prefix = "" if model_class is KeptModel else "kept."
    assert f"{prefix}encoder.layer.0.attention.self.query.weight" in report.loaded
    assert report.loaded_fraction == 1.0, report.missing
    assert f"{prefix}knowledge_encoder.layer.1.output.LayerNorm.bias" in report.loaded
    assert f"{prefix}knowledge_encoder.layer.0.entity_intermediate.weight" in report.new
    assert f"{prefix}encoder.layer.0.attention.self.query.weight" not in report.new
    if model_class is KeptModel:
        assert not any(name.startswith("kept.") for name in report.loaded + report.new)
    # embeddings 5 + layers 4 x 16 (+ pooler 2) tensors, all from BERT
    assert len(report.expected) == 5 + 16 * BERT_LAYERS + (2 if model._kept().pooler is not None else 0)
    assert f"encoder {len(report.expected)}/{len(report.expected)}" in report.summary()
    _assert_same_encoder(model, bert_model)  # no entities: the K-encoder computes BERT's layers


def test_bare_encoder_from_minilm_loads(minilm_dir: Path) -> None:
    model, report = KeptModel.from_bert(minilm_dir, entity_dim=8, num_entity_attention_heads=2)
    assert len(report.loaded) >= 100 and report.loaded_fraction >= 0.9
    assert report.unused == ["embeddings.position_ids"]


def test_refuses_a_checkpoint_that_mostly_does_not_load(bert_dir: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text((bert_dir / "config.json").read_text())
    state = load_file(str(bert_dir / "model.safetensors"))
    save_file(
        {key.replace("bert.", "text_encoder.", 1): value for key, value in state.items()},
        str(foreign / "model.safetensors"),
    )
    with pytest.raises(FusionError) as caught:
        KeptModel.from_bert(foreign, entity_dim=8, num_entity_attention_heads=2)
    message = str(caught.value)
    assert "\n" not in message
    assert str(foreign) in message and "0%" in message and "min_loaded_fraction=0" in message
    assert "text_encoder." in message  # names a checkpoint tensor that did not match
    model, report = KeptModel.from_bert(foreign, min_loaded_fraction=0, entity_dim=8, num_entity_attention_heads=2)
    assert report.loaded_fraction == 0.0 and report.loaded == []
    # a threshold the checkpoint passes, and one it cannot
    _, partial = KeptModel.from_bert(bert_dir, min_loaded_fraction=1.0, entity_dim=8, num_entity_attention_heads=2)
    assert partial.loaded_fraction == 1.0
    with pytest.raises(FusionError, match="min_loaded_fraction"):
        KeptModel.from_bert(bert_dir, min_loaded_fraction=1.5)


def test_pooler_is_kept_without_sop_and_reaches_classification(bert_dir: Path, bert_model, tmp_path: Path) -> None:
    model, report = KeptForPreTraining.from_bert(bert_dir, use_sop=False, entity_dim=8, num_entity_attention_heads=2)
    assert {"kept.pooler.dense.weight", "kept.pooler.dense.bias"} <= set(report.loaded)
    assert torch.equal(model.kept.pooler.dense.weight, bert_model.pooler.dense.weight)
    assert not model.kept.pooler.dense.weight.requires_grad  # nothing trains it without SOP
    model.save_pretrained(tmp_path / "pretrained")
    classifier = KeptForSequenceClassification.from_pretrained(tmp_path / "pretrained", num_labels=3)
    assert torch.equal(classifier.kept.pooler.dense.weight, bert_model.pooler.dense.weight)
    assert torch.equal(classifier.kept.pooler.dense.bias, bert_model.pooler.dense.bias)
    assert classifier.kept.pooler.dense.weight.requires_grad
    again = KeptForPreTraining.from_pretrained(tmp_path / "pretrained")
    assert torch.equal(again.kept.pooler.dense.weight, bert_model.pooler.dense.weight)
    assert not again.kept.pooler.dense.weight.requires_grad
    with_sop, _ = KeptForPreTraining.from_bert(bert_dir, use_sop=True, entity_dim=8, num_entity_attention_heads=2)
    assert with_sop.kept.pooler.dense.weight.requires_grad


def test_from_pretrained_output_loading_info(bert_dir: Path, tmp_path: Path) -> None:
    model, _ = KeptForSequenceClassification.from_bert(
        bert_dir, entity_dim=8, num_entity_attention_heads=2, num_labels=2
    )
    table = tmp_path / "table.safetensors"
    save_file({"entity_embeddings": torch.randn(5, 8)}, str(table))
    model.load_entity_table(table)
    model.save_pretrained(tmp_path / "saved")
    loaded, info = KeptForSequenceClassification.from_pretrained(tmp_path / "saved", output_loading_info=True)
    assert isinstance(loaded, KeptForSequenceClassification)
    assert not info["missing_keys"]
    assert loaded.entity_table is not None and loaded.entity_table.num_entities == 5
    bare, info = KeptModel.from_pretrained(tmp_path / "saved", output_loading_info=True)
    assert isinstance(bare, KeptModel) and not info["missing_keys"]


def test_sharded_checkpoint_reads_only_wanted_tensors(bert_dir: Path, tmp_path: Path) -> None:
    from transformers import BertForPreTraining

    sharded = tmp_path / "sharded"
    BertForPreTraining.from_pretrained(str(bert_dir)).save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    seen: list[str] = []

    def wanted(name: str) -> bool:
        seen.append(name)
        return "pooler" in name

    read = dict(iter_bert_tensors(sharded, wanted))
    assert sorted(read) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight"]
    assert len(seen) > 50
    _, report = KeptForPreTraining.from_bert(sharded, entity_dim=8, num_entity_attention_heads=2)
    assert report.loaded_fraction == 1.0


def test_no_knowledge_layers_is_exactly_minilm(minilm_dir: Path) -> None:
    from transformers import AutoTokenizer, BertModel

    model, report = KeptModel.from_bert(minilm_dir, num_knowledge_layers=0, entity_dim=8, num_entity_attention_heads=2)
    assert (report.bert_layers, report.t_layers, report.k_layers) == (6, 6, 0)
    assert report.loaded_fraction == 1.0 and report.new == []
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    bert = BertModel.from_pretrained(str(minilm_dir), attn_implementation="sdpa").eval()
    batch = tokenizer(["Paris is the capital of France.", "A short one."], padding=True, return_tensors="pt")
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        ref = bert(**batch)
        ours = model.eval()(**batch)
    assert torch.allclose(ours.last_hidden_state[mask], ref.last_hidden_state[mask], atol=1e-5)
    assert torch.allclose(ours.pooler_output, ref.pooler_output, atol=1e-5)


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_damaged_weights_are_one_fusion_error(weights: str, bert_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((bert_dir / "config.json").read_text())
    (tmp_path / weights).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(FusionError, match=weights.replace(".", r"\.")) as caught:
        KeptModel.from_bert(tmp_path)
    assert "\n" not in str(caught.value)
