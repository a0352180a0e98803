"""Fusion model: shapes, gradients, entity table, save/load, zero-entity behaviour, overfitting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import fusion
from fusion import (
    FusionError,
    KeptConfig,
    KeptForMaskedLM,
    KeptForPreTraining,
    KeptForRelationClassification,
    KeptForSequenceClassification,
    KeptModel,
)

NUM_ENTITIES = 50
DIM = 32


@pytest.fixture()
def table_path(tmp_path: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    path = tmp_path / "embeddings.safetensors"
    save_file(
        {
            "entity_embeddings": torch.randn(NUM_ENTITIES, DIM, generator=generator),
            "relation_embeddings": torch.randn(3, DIM, generator=generator),
        },
        str(path),
    )
    return path


def make_batch(batch: int = 4, length: int = 16, seed: int = 0, entities: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 2000, (batch, length), generator=g)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[-1, length - 4 :] = 0
    input_ids[-1, length - 4 :] = 0
    labels = torch.full((batch, length), -100)
    pick = torch.rand(batch, length, generator=g) < 0.3
    pick[:, 0] = True
    labels[pick] = input_ids[pick]
    entity_ids = torch.full((batch, length), -1)
    entity_labels = torch.full((batch, length), -100)
    if entities:
        aligned = torch.rand(batch, length, generator=g) < 0.25
        aligned[0, 1] = True
        aligned[-1, length - 4 :] = False
        aligned[1] = False  # one sequence without entities
        ids = torch.randint(0, NUM_ENTITIES, (batch, length), generator=g)
        entity_ids[aligned] = ids[aligned]
        entity_labels[aligned] = ids[aligned]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "entity_ids": entity_ids,
        "entity_labels": entity_labels,
    }


def tiny_model(table_path: Path | None = None, cls=KeptForPreTraining, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    overrides.setdefault("entity_dim", DIM)
    config = KeptConfig.from_preset("tiny", vocab_size=2048, **overrides)
    model = cls(config)
    if table_path is not None:
        model.load_entity_table(table_path)
    return model


def test_shapes_and_losses(table_path: Path) -> None:
    model = tiny_model(table_path)
    batch = make_batch()
    out = model(**batch)
    assert out.logits is None  # a training step with labels skips the [B, L, V] logits
    assert out.loss is not None and torch.isfinite(out.loss)
    assert torch.isfinite(out.mlm_loss) and torch.isfinite(out.dea_loss)
    labelled = int((batch["entity_labels"] >= 0).sum())
    assert out.entity_logits.shape == (labelled, out.entity_candidate_ids.numel())
    # candidates: every batch entity plus up to k negatives, sorted and unique
    batch_entities = set(batch["entity_labels"][batch["entity_labels"] >= 0].tolist())
    assert batch_entities <= set(out.entity_candidate_ids.tolist())
    assert out.entity_candidate_ids.numel() <= len(batch_entities) + model.config.dea_num_negatives
    assert torch.equal(out.entity_candidate_ids, torch.unique(out.entity_candidate_ids))
    # the MLM loss (computed on the labelled rows only) equals cross-entropy over the full logits (eval mode)
    evaluated = model.eval()(**batch)
    model.train()
    assert evaluated.logits.shape == (4, 16, 2048)
    reference = torch.nn.functional.cross_entropy(evaluated.logits.reshape(-1, 2048), batch["labels"].reshape(-1))
    assert torch.allclose(evaluated.mlm_loss, reference, atol=1e-5)
    expected = model.config.mlm_weight * out.mlm_loss + model.config.dea_weight * out.dea_loss
    assert torch.allclose(out.loss, expected, atol=1e-6)

    base = model.kept(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        entity_ids=batch["entity_ids"],
        output_hidden_states=True,
    )
    assert base.last_hidden_state.shape == (4, 16, 64)
    assert base.entity_last_hidden_state.shape == (4, 16, DIM)
    no_entity = batch["entity_ids"] < 0
    assert torch.all(base.entity_last_hidden_state[no_entity] == 0)
    assert torch.all(base.entity_last_hidden_state[~no_entity].abs().sum(-1) > 0)
    assert len(base.hidden_states) == 1 + 2 + 2


def test_entities_change_token_states_only_where_fused(table_path: Path) -> None:
    model = tiny_model(table_path).eval()
    batch = make_batch()
    with torch.no_grad():
        with_entities = model.kept(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], entity_ids=batch["entity_ids"]
        ).last_hidden_state
        without = model.kept(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    # sequence 1 carries no entity: identical; sequence 0 does: different
    assert torch.allclose(with_entities[1], without[1], atol=1e-6)
    assert not torch.allclose(with_entities[0], without[0], atol=1e-4)


def test_gradients_reach_trainable_parts_not_frozen_table(table_path: Path) -> None:
    model = tiny_model(table_path)
    table = model.entity_table
    assert table is not None and not table.weight.requires_grad
    assert all(p.data_ptr() != table.weight.data_ptr() for p in model.parameters())
    model(**make_batch()).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert not model.kept.pooler.dense.weight.requires_grad  # no SOP: the pooler is carried, frozen
    fusion_grad = model.kept.knowledge_encoder.layer[0].entity_intermediate.weight.grad
    assert fusion_grad.abs().sum() > 0
    assert table.weight.grad is None


def test_zero_aligned_entities_is_defined(table_path: Path) -> None:
    model = tiny_model(table_path)
    batch = make_batch(entities=False)
    out = model(**batch)
    assert torch.isfinite(out.loss)
    assert out.dea_loss.item() == 0.0
    assert torch.allclose(out.loss, out.mlm_loss)
    assert out.entity_logits.shape[0] == 0
    out.loss.backward()
    # every parameter gets a (zero) gradient on the entity path: DDP needs no find_unused_parameters
    for name, p in model.named_parameters():
        assert p.grad is not None or not p.requires_grad, name
    assert model.kept.knowledge_encoder.layer[0].entity_attention.query.weight.grad.abs().sum() == 0
    # entity_ids=None equals all -1, and no table is needed then
    bare = tiny_model(None)
    kwargs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    a = bare.eval().kept(**kwargs).last_hidden_state
    b = bare.kept(**kwargs, entity_ids=torch.full_like(batch["input_ids"], -1)).last_hidden_state
    assert torch.equal(a, b)


def test_errors_are_fusion_errors(table_path: Path, tmp_path: Path) -> None:
    model = tiny_model(None)
    batch = make_batch()
    with pytest.raises(FusionError, match="no entity table"):
        model(**batch)
    with pytest.raises(FusionError, match="dim"):
        tiny_model(None, entity_dim=16).load_entity_table(table_path)
    with pytest.raises(FusionError, match="not in the file"):
        model.load_entity_table(table_path, key="nope")
    with pytest.raises(FusionError, match="not found"):
        model.load_entity_table(tmp_path / "missing.safetensors")
    model.load_entity_table(table_path)
    bad = dict(batch)
    bad["entity_ids"] = batch["entity_ids"].clone()
    bad["entity_ids"][0, 1] = NUM_ENTITIES + 5
    with pytest.raises(FusionError, match="outside the entity table"):
        model(**bad)


def test_save_load_identical_outputs(table_path: Path, tmp_path: Path) -> None:
    model = tiny_model(table_path).eval()
    batch = make_batch()
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / fusion.ENTITY_TABLE_FILE).is_file()
    from transformers import AutoModelForPreTraining

    loaded = AutoModelForPreTraining.from_pretrained(tmp_path / "saved").eval()
    assert isinstance(loaded, KeptForPreTraining)
    assert loaded.entity_table is not None and loaded.entity_table.num_entities == NUM_ENTITIES
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "entity_ids")}
    with torch.no_grad():
        a = model.kept(**inputs)
        b = loaded.kept(**inputs)
        la = model(**inputs).logits
        lb = loaded(**inputs).logits
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)
    assert torch.equal(a.entity_last_hidden_state, b.entity_last_hidden_state)
    assert torch.equal(la, lb)
    assert loaded.cls.predictions.decoder.weight is loaded.kept.embeddings.word_embeddings.weight
    # the evaluation path: a pretraining checkpoint opened as KeptForMaskedLM keeps weights and table
    masked = KeptForMaskedLM.from_pretrained(tmp_path / "saved").eval()
    assert masked.entity_table is not None
    with torch.no_grad():
        assert torch.equal(masked(**inputs).logits, la)


def test_trainable_table_sparse_gradients_and_round_trip(table_path: Path, tmp_path: Path) -> None:
    model = tiny_model(None)
    model.load_entity_table(table_path, trainable=True)
    assert model.entity_table is None
    emb = model.kept.entity_embeddings
    assert emb.sparse and emb.weight.requires_grad
    model(**make_batch()).loss.backward()
    assert emb.weight.grad is not None and emb.weight.grad.is_sparse
    model.save_pretrained(tmp_path / "trainable")
    assert not (tmp_path / "trainable" / fusion.ENTITY_TABLE_FILE).exists()
    loaded = KeptForPreTraining.from_pretrained(tmp_path / "trainable")
    assert torch.equal(loaded.kept.entity_embeddings.weight, emb.weight)


def test_auto_classes_and_task_heads(table_path: Path) -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    config = KeptConfig.from_preset("tiny", vocab_size=2048, entity_dim=DIM, num_labels=3)
    assert isinstance(AutoConfig.for_model("kept"), KeptConfig)
    assert isinstance(AutoModel.from_config(config), KeptModel)
    assert isinstance(AutoModelForMaskedLM.from_config(config), KeptForMaskedLM)
    classifier = AutoModelForSequenceClassification.from_config(config)
    assert isinstance(classifier, KeptForSequenceClassification)
    classifier.load_entity_table(table_path)
    batch = make_batch()
    out = classifier(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        entity_ids=batch["entity_ids"],
        labels=torch.tensor([0, 1, 2, 1]),
    )
    assert out.logits.shape == (4, 3) and torch.isfinite(out.loss)

    relation = KeptForRelationClassification(config)
    relation.load_entity_table(table_path)
    out = relation(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        entity_ids=batch["entity_ids"],
        head_start=torch.tensor([1, 2, 3, 4]),
        tail_start=torch.tensor([5, 6, 7, 8]),
        labels=torch.tensor([0, 1, 2, 0]),
    )
    assert out.logits.shape == (4, 3)
    out.loss.backward()
    assert all(p.grad is not None for p in relation.parameters())
    with pytest.raises(FusionError, match="outside"):
        relation(input_ids=batch["input_ids"], head_start=torch.tensor([0, 0, 0, 99]), tail_start=torch.zeros(4))

    mlm = KeptForMaskedLM(config)
    out = mlm.eval()(input_ids=batch["input_ids"], labels=batch["labels"])
    assert out.logits.shape == (4, 16, 2048) and torch.isfinite(out.loss)


@pytest.mark.parametrize("cls", [KeptForPreTraining, KeptForMaskedLM])
def test_training_step_with_labels_skips_the_full_logits(cls) -> None:
    """Training with labels projects only the labelled rows (the Trainer reads the loss, never the
    logits); eval mode and calls without labels still return the [B, L, V] logits."""
    model = tiny_model(cls=cls, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batch = {k: make_batch()[k] for k in ("input_ids", "attention_mask", "labels")}
    rows: list[int] = []
    model.cls.predictions.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    labelled = int((batch["labels"] != -100).sum())

    train = model.train()(**batch)
    assert train.logits is None and rows == [labelled]  # no [B, L, H] -> [B, L, V] pass
    train.loss.backward()
    rows.clear()
    evaluated = model.eval()(**batch)
    assert evaluated.logits.shape == (4, 16, 2048) and rows == [4, labelled]
    assert torch.allclose(evaluated.loss, train.loss, atol=1e-6)  # same loss either way (no dropout)
    assert model.train()(input_ids=batch["input_ids"]).logits.shape == (4, 16, 2048)  # no labels: logits


def test_sop_head(table_path: Path) -> None:
    model = tiny_model(table_path, use_sop=True)
    batch = make_batch()
    out = model(**batch, sentence_order_label=torch.tensor([0, 1, 1, 0]))
    assert out.sop_logits.shape == (4, 2) and torch.isfinite(out.sop_loss)
    assert torch.allclose(out.loss, out.mlm_loss + out.dea_loss + out.sop_loss, atol=1e-6)


def test_overfit_small_batch_losses_fall(table_path: Path) -> None:
    model = tiny_model(table_path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, dea_num_negatives=8)
    batch = make_batch(seed=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = model(**batch)
    mlm0, dea0 = first.mlm_loss.item(), first.dea_loss.item()
    for _ in range(40):
        optimizer.zero_grad()
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
    final = model(**batch)
    assert final.mlm_loss.item() < 0.3 * mlm0
    assert final.dea_loss.item() < 0.5 * dea0


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_memory_mapped_table_costs_no_heap(tmp_path: Path) -> None:
    from fusion import open_table

    path = tmp_path / "big.safetensors"
    save_file({"entity_embeddings": torch.ones(100_000, 100)}, str(path))  # 40 MB
    mapped = open_table(path, mmap=True)
    rows = mapped.index_select(0, torch.tensor([0, 50_000, 99_999]))
    assert rows.shape == (3, 100) and float(rows.sum()) == 300.0
    loaded = open_table(path, mmap=False)
    # where the data lives, not how the heap grew (RSS deltas flake under a parallel test run):
    # the mapped table's storage is the file's mapping, the in-memory copy's is not
    assert _in_file_mapping(mapped, path) and not _in_file_mapping(loaded, path)
    assert torch.equal(loaded[5], mapped[5])


def _in_file_mapping(tensor: torch.Tensor, path: Path) -> bool:
    """True when the tensor's data lies in a memory mapping of ``path`` (per /proc/self/maps)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path.resolve()):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return True
    return False


def test_entity_table_stays_on_cpu_and_is_memory_mapped(table_path: Path) -> None:
    model = tiny_model(table_path)
    table = model.entity_table
    names = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
    assert not any("entity_table" in name for name in names)
    assert table.weight.device.type == "cpu"
    assert "entity_embeddings" not in model.state_dict()
    model.to(torch.float64)  # moving the model leaves the table alone
    assert model.entity_table.weight.dtype == torch.float32
    out = model(**make_batch())
    assert out.loss.dtype == torch.float64 or torch.isfinite(out.loss)


def test_bf16_autocast(table_path: Path) -> None:
    model = tiny_model(table_path)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**make_batch())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.kept.knowledge_encoder.layer[1].entity_output.dense.weight.grad is not None


def test_gradient_checkpointing_matches(table_path: Path) -> None:
    batch = make_batch()
    model = tiny_model(table_path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    assert model.supports_gradient_checkpointing
    torch.manual_seed(1)
    model(**batch).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.kept.knowledge_encoder.layer)
    assert all(layer.gradient_checkpointing for layer in model.kept.encoder.layer)
    torch.manual_seed(1)
    model.train()
    model(**batch).loss.backward()
    for name, p in model.named_parameters():
        assert not p.requires_grad or torch.allclose(p.grad, ref[name], atol=1e-5), name


def test_hidden_states_and_eager_attentions(table_path: Path, tmp_path: Path) -> None:
    model = tiny_model(table_path).eval()
    batch = make_batch()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "entity_ids")}
    with pytest.raises(FusionError, match="eager"):
        model.kept(**inputs, output_attentions=True)
    model.save_pretrained(tmp_path / "m")
    eager = KeptForPreTraining.from_pretrained(tmp_path / "m", attn_implementation="eager").eval()
    with torch.no_grad():
        out = eager.kept(**inputs, output_attentions=True, output_hidden_states=True)
        ref = model.kept(**inputs)
    assert len(out.attentions) == 4 and out.attentions[0].shape == (4, 4, 16, 16)
    assert torch.allclose(out.attentions[-1].sum(-1)[0], torch.ones(4, 16), atol=1e-5)
    assert torch.allclose(out.last_hidden_state, ref.last_hidden_state, atol=1e-5)  # eager == SDPA


def test_shared_table_and_report(table_path: Path) -> None:
    from fusion import EntityTable

    table = EntityTable.open(table_path)
    a, b = tiny_model(None), tiny_model(None)
    a.set_entity_table(table)
    b.set_entity_table(table)
    assert a.entity_table.weight is b.entity_table.weight
    assert a.config.entity_vocab_size == NUM_ENTITIES
    with pytest.raises(FusionError, match="dim"):
        tiny_model(None, entity_dim=16).set_entity_table(table)
    rows = table.gather(torch.tensor([[3, 4]]), torch.device("cpu"), torch.float64)
    assert rows.shape == (1, 2, DIM) and rows.dtype == torch.float64


def test_hf_trainer_trains_checkpoints_and_evaluates(table_path: Path, tmp_path: Path) -> None:
    from transformers import Trainer, TrainingArguments

    model = tiny_model(table_path)
    batch = make_batch(8, 16)
    rows = [{k: v[i] for k, v in batch.items()} for i in range(8)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        save_steps=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        label_names=["labels", "entity_labels"],
    )  # sentence_order_label is optional
    trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=rows)
    assert trainer.model_accepts_loss_kwargs is False
    trainer.train()
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and metrics["eval_loss"] > 0
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert (checkpoint / fusion.ENTITY_TABLE_FILE).is_file()
    restored = KeptForPreTraining.from_pretrained(checkpoint)
    assert restored.entity_table.num_entities == NUM_ENTITIES


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_table_stays_on_cpu(table_path: Path) -> None:
    model = tiny_model(table_path).to("cuda")
    assert model.entity_table.weight.device.type == "cpu"
    batch = {k: v.to("cuda") for k, v in make_batch().items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(**batch)
    out.loss.backward()
    assert out.loss.device.type == "cuda" and torch.isfinite(out.loss)
    assert model.kept.knowledge_encoder.layer[0].entity_intermediate.weight.grad.abs().sum() > 0
