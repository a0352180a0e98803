"""Models that leave KEPT as graphs: static entity slots, torch.export, ONNX, torch.compile(fullgraph=True).

The static layout (config.max_entity_slots) must give the default (dynamic) layout's results, so every
comparison here is against the eager model with max_entity_slots=None.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

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
SLOTS = 16
INPUTS = ("input_ids", "attention_mask", "entity_ids")


@pytest.fixture()
def table_path(tmp_path: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    path = tmp_path / "embeddings.safetensors"
    save_file({"entity_embeddings": torch.randn(NUM_ENTITIES, DIM, generator=generator)}, str(path))
    return path


def make_batch(seed: int, batch: int = 4, length: int = 16, rate: float = 0.25) -> dict[str, torch.Tensor]:
    """Padding in the last row, one row without entities; entity counts differ with the seed."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 2000, (batch, length), generator=g)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[-1, length - 4 :] = 0
    aligned = torch.rand(batch, length, generator=g) < rate
    aligned[1] = False
    ids = torch.randint(0, NUM_ENTITIES, (batch, length), generator=g)
    entity_ids = torch.where(aligned, ids, -1)
    labels = torch.where(torch.rand(batch, length, generator=g) < 0.3, input_ids, -100)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "entity_ids": entity_ids,
        "labels": labels,
        "entity_labels": torch.where(aligned, ids, -100),
    }


def tiny(cls, table_path: Path, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = cls(KeptConfig.from_preset("tiny", vocab_size=2048, entity_dim=DIM, **overrides))
    model.load_entity_table(table_path)
    return model.eval()


def inputs_of(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in INPUTS}


def eager_then_static(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], field: str) -> list[torch.Tensor]:
    """The default (dynamic-slot) model's outputs; leaves the model in the static layout."""
    model.config.max_entity_slots = None
    with torch.no_grad():
        expected = [getattr(model(**inputs_of(b)), field) for b in batches]
    model.config.max_entity_slots = SLOTS
    return expected


def two_batches() -> list[dict[str, torch.Tensor]]:
    batches = [make_batch(0), make_batch(1, rate=0.5)]
    counts = [(b["entity_ids"] >= 0).sum(1).tolist() for b in batches]
    assert counts[0] != counts[1] and max(map(max, counts)) <= SLOTS
    return batches


@pytest.mark.parametrize(
    "overrides", [{}, {"entity_mask_cls": True}, {"first_knowledge_layer": "mix", "entity_bias_at": "all"}]
)
def test_static_slots_give_the_dynamic_results(table_path: Path, overrides: dict) -> None:
    model = tiny(KeptModel, table_path, **overrides)
    batches = two_batches()
    with torch.no_grad():
        dynamic = [model(**inputs_of(b)) for b in batches]
        model.config.max_entity_slots = SLOTS
        static = [model(**inputs_of(b)) for b in batches]
    for d, s in zip(dynamic, static):
        torch.testing.assert_close(s.last_hidden_state, d.last_hidden_state, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s.entity_last_hidden_state, d.entity_last_hidden_state, atol=1e-5, rtol=1e-5)


def test_static_slots_train_like_dynamic(table_path: Path) -> None:
    """Same loss and gradients (dropout off, no random dEA negatives)."""
    grads = []
    for slots in (None, SLOTS):
        model = tiny(
            KeptForPreTraining,
            table_path,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            dea_num_negatives=0,
            max_entity_slots=slots,
        ).train()
        model(**make_batch(0)).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)


def test_too_many_entities_for_the_slots_raise(table_path: Path) -> None:
    model = tiny(KeptModel, table_path, max_entity_slots=2)
    with pytest.raises(FusionError, match="max_entity_slots"):
        model(**inputs_of(make_batch(1, rate=0.5)))
    with pytest.raises(FusionError, match="max_entity_slots"):
        KeptConfig.from_preset("tiny", max_entity_slots=0)


def test_export_without_static_slots_names_the_fix(table_path: Path) -> None:
    model = tiny(KeptForMaskedLM, table_path)
    with pytest.raises(FusionError, match="max_entity_slots"):
        torch.export.export(model, (), inputs_of(make_batch(0)))


def test_export_masked_lm_matches_eager(table_path: Path) -> None:
    model = tiny(KeptForMaskedLM, table_path)
    batches = two_batches()
    expected = eager_then_static(model, batches, "logits")
    batch_dim, length_dim = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("length", min=2, max=512)
    program = torch.export.export(
        model, (), inputs_of(batches[0]), dynamic_shapes={k: {0: batch_dim, 1: length_dim} for k in INPUTS}
    )
    exported = program.module()
    for batch, want in zip(batches, expected):
        torch.testing.assert_close(exported(**inputs_of(batch)).logits, want, atol=1e-5, rtol=1e-5)
    other = make_batch(2, batch=3, length=20)  # another shape through the same program
    model.config.max_entity_slots = None
    with torch.no_grad():
        want = model(**inputs_of(other)).logits
    torch.testing.assert_close(exported(**inputs_of(other)).logits, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [KeptForSequenceClassification, KeptForRelationClassification])
def test_export_classification_matches_eager(table_path: Path, cls) -> None:
    model = tiny(cls, table_path, num_labels=3)
    batches = two_batches()
    extra = {}
    if cls is KeptForRelationClassification:
        extra = {"head_start": torch.tensor([1, 2, 3, 4]), "tail_start": torch.tensor([5, 6, 7, 8])}
    for b in batches:
        b.update(extra)
    keys = (*INPUTS, *extra)
    model.config.max_entity_slots = None
    with torch.no_grad():
        expected = [model(**{k: b[k] for k in keys}).logits for b in batches]
    model.config.max_entity_slots = SLOTS
    program = torch.export.export(model, (), {k: batches[0][k] for k in keys})
    for batch, want in zip(batches, expected):
        torch.testing.assert_close(program.module()(**{k: batch[k] for k in keys}).logits, want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnxscript", "onnxruntime")),
    reason="ONNX export needs onnxscript; the check runs it with onnxruntime",
)
def test_onnx_export_masked_lm_matches_eager(table_path: Path, tmp_path: Path) -> None:
    import onnxruntime

    model = tiny(KeptForMaskedLM, table_path)
    batches = two_batches()
    expected = eager_then_static(model, batches, "logits")
    path = tmp_path / "kept.onnx"
    torch.onnx.export(
        model,
        (),
        str(path),
        kwargs=inputs_of(batches[0]),
        dynamo=True,
        input_names=list(INPUTS),
        output_names=["logits"],
        verbose=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, want in zip(batches, expected):
        (got,) = session.run(None, {k: v.numpy() for k, v in inputs_of(batch).items()})
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # compiling forward and backward takes about a minute on a loaded 2-core machine
def test_compile_fullgraph_training_step(table_path: Path) -> None:
    """KeptForPreTraining (MLM + dEA) compiles without a graph break; loss and gradients match eager."""
    torch._dynamo.reset()
    overrides = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, dea_num_negatives=0)
    eager = tiny(KeptForPreTraining, table_path, **overrides).train()
    model = tiny(KeptForPreTraining, table_path, max_entity_slots=SLOTS, **overrides).train()
    batch = make_batch(0)
    want = eager(**batch)
    want.loss.backward()
    got = torch.compile(model, fullgraph=True)(**batch)
    got.loss.backward()
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.dea_loss, want.dea_loss, atol=1e-5, rtol=1e-5)
    expected = dict(eager.named_parameters())
    for name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(param.grad, expected[name].grad, atol=1e-4, rtol=1e-3, msg=name)
