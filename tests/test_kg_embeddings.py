"""PyKEEN embeddings: our ids, equality with plain PyKEEN, export/import (dtypes, mmap), small graphs."""

from __future__ import annotations

import json
import os

import pytest
import torch

from kg import (
    EmbeddingConfig,
    KGError,
    KnowledgeGraph,
    load_embeddings,
    load_pykeen_dataset,
    save_embedding_tensors,
    save_embeddings,
    train_embeddings,
)
from kg.embeddings import pipeline_kwargs, rank_metrics

TINY = dict(dim=16, epochs=2, batch_size=128, seed=7)


@pytest.fixture(scope="module")
def nations() -> KnowledgeGraph:
    return load_pykeen_dataset("nations")


@pytest.fixture(scope="module")
def nations_result(nations: KnowledgeGraph):
    return train_embeddings(nations, EmbeddingConfig(**TINY))


def test_result_shapes_and_metrics(nations: KnowledgeGraph, nations_result) -> None:
    assert nations_result.entity_embeddings.shape == (14, 16)
    assert nations_result.relation_embeddings.shape == (55, 16)
    metrics = nations_result.metrics
    assert metrics["model"] == "TransE" and metrics["split"] == "predefined"
    assert (metrics["num_training"], metrics["num_validation"], metrics["num_testing"]) == (1592, 199, 201)
    assert 0 < metrics["mrr"] <= 1 and metrics["hits_at_1"] <= metrics["hits_at_3"] <= metrics["hits_at_10"] <= 1
    json.dumps(metrics)


def test_exported_matrices_equal_pykeen_weights(nations_result) -> None:
    model = nations_result.model
    assert torch.equal(nations_result.entity_embeddings, model.entity_representations[0]._embeddings.weight.detach())
    assert torch.equal(
        nations_result.relation_embeddings, model.relation_representations[0]._embeddings.weight.detach()
    )


def test_same_mrr_as_plain_pykeen_on_nations(nations_result) -> None:
    from pykeen.pipeline import pipeline

    config = EmbeddingConfig(**TINY)
    kwargs = pipeline_kwargs(config)
    reference = pipeline(
        dataset="nations",
        model="TransE",
        model_kwargs={"embedding_dim": 16},
        optimizer="Adam",
        optimizer_kwargs={"lr": config.learning_rate},
        training_loop="sLCWA",
        training_kwargs={"num_epochs": 2, "batch_size": 128, "use_tqdm": False},
        evaluation_kwargs={"use_tqdm": False, "batch_size": 256},
        random_seed=7,
    )
    assert kwargs["model"] == "TransE"
    ours, theirs = nations_result.metrics, rank_metrics(reference.metric_results)
    for key in ("mrr", "hits_at_1", "hits_at_3", "hits_at_10"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6)
    assert torch.equal(
        nations_result.entity_embeddings, reference.model.entity_representations[0]._embeddings.weight.detach()
    )


def test_rows_follow_our_ids_and_unused_entities_get_rows() -> None:
    names = [f"e{i}" for i in range(12)]
    rows = [(i, i % 2, (i + 1) % 10) for i in range(10)] + [(i, 1, (i + 3) % 10) for i in range(10)]
    graph = KnowledgeGraph(list(reversed(names)), ["r0", "r1"], rows)  # e11, e10 appear in no triple
    result = train_embeddings(graph, EmbeddingConfig(dim=8, epochs=2, seed=1))
    assert result.entity_embeddings.shape == (12, 8)
    assert result.metrics["entities_without_triples"] == 2
    assert result.metrics["split"] == "none" and "too small" in result.metrics["split_note"]
    assert result.entity_names == graph.entities
    factory_ids = result.pipeline_result.training.entity_to_id
    assert factory_ids == graph.entity_to_id


def test_random_split_is_seeded_and_covers_entities() -> None:
    graph = load_pykeen_dataset("nations")
    graph.metadata.clear()
    config = EmbeddingConfig(dim=8, epochs=1, seed=3)
    first = train_embeddings(graph, config)
    second = train_embeddings(graph, config)
    assert first.metrics["split"] == "random"
    assert first.metrics["mrr"] == second.metrics["mrr"]
    total = first.metrics["num_training"] + first.metrics["num_testing"] + first.metrics["num_validation"]
    assert total == graph.num_triples
    training = first.pipeline_result.training.mapped_triples
    assert set(training[:, [0, 2]].unique().tolist()) == set(range(graph.num_entities))


def test_bad_configuration(nations: KnowledgeGraph) -> None:
    with pytest.raises(KGError, match="PyKEEN has no model named 'TransX'.*did you mean"):
        train_embeddings(nations, EmbeddingConfig(model="TransX"))
    with pytest.raises(KGError, match=r"kg\.dim: Input should be greater than 0"):
        EmbeddingConfig(dim=0)
    with pytest.raises(KGError, match="ratios"):
        EmbeddingConfig(ratios=(0.5, 0.1, 0.1))
    with pytest.raises(KGError, match="no triples"):
        train_embeddings(KnowledgeGraph(["a"], ["r"]), EmbeddingConfig(**TINY))
    with pytest.raises(KGError, match="no predefined split"):
        train_embeddings(KnowledgeGraph(["a", "b"], ["r"], [[0, 0, 1]]), EmbeddingConfig(split="predefined", **TINY))


@pytest.mark.parametrize("dtype", [None, "float16", "bfloat16"])
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(nations_result, tmp_path, dtype, mmap) -> None:
    path = save_embeddings(nations_result, tmp_path / "embeddings.safetensors", dtype=dtype)
    loaded = load_embeddings(path, mmap=mmap)
    expected_dtype = {None: torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    assert loaded.entity_embeddings.dtype == expected_dtype
    assert torch.equal(loaded.entity_embeddings, nations_result.entity_embeddings.to(expected_dtype))
    assert torch.equal(loaded.relation_embeddings, nations_result.relation_embeddings.to(expected_dtype))
    assert loaded.entity_names == nations_result.entity_names and loaded.relation_names == nations_result.relation_names
    assert loaded.metadata["model"] == "TransE" and loaded.metrics["mrr"] == nations_result.metrics["mrr"]
    assert torch.equal(loaded.entity("usa"), loaded.entity_embeddings[nations_result.entity_names.index("usa")])
    rows = loaded.lookup(torch.tensor([[0, -1], [13, 2]]))
    assert rows.shape == (2, 2, 16) and rows.dtype == torch.float32 and not rows[0, 1].any()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_check_vocabulary(nations, nations_result, tmp_path) -> None:
    loaded = load_embeddings(save_embeddings(nations_result, tmp_path / "e.safetensors"))
    loaded.check_vocabulary(nations)
    other = KnowledgeGraph([f"x{i}" for i in range(14)], nations.relations)
    with pytest.raises(KGError, match="entity vocabulary differs"):
        loaded.check_vocabulary(other)


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def test_mmap_of_a_large_table_is_lazy(tmp_path) -> None:
    rows, dim = 2_000_000, 16  # 64 MB in float16
    table = torch.zeros(rows, dim, dtype=torch.float16)
    table[-1] = 1.5
    path = save_embedding_tensors(
        tmp_path / "big.safetensors", {"entity_embeddings": table, "relation_embeddings": torch.ones(3, dim)}
    )
    del table
    before = _resident_bytes()
    loaded = load_embeddings(path, mmap=True)
    assert loaded.num_entities == rows and loaded.entity_names is None
    if before is not None:  # mapped, not read: far less than the 64 MB table becomes resident
        assert _resident_bytes() - before < 16 * 2**20
    eager = load_embeddings(path, mmap=False)
    assert torch.equal(eager.entity_embeddings[-2:], loaded.entity_embeddings[-2:])
    assert loaded.lookup([rows - 1])[0].tolist() == [1.5] * dim
    with pytest.raises(KGError, match="outside"):
        loaded.lookup([rows])


def test_load_bad_files(tmp_path) -> None:
    with pytest.raises(KGError, match="file not found.*kept kg embed"):
        load_embeddings(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(KGError, match="not a safetensors file"):
        load_embeddings(bad)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(KGError, match="missing tensor 'entity_embeddings'"):
        load_embeddings(tmp_path / "other.safetensors")
    with pytest.raises(KGError, match="unsupported dtype"):
        save_embedding_tensors(
            tmp_path / "x.safetensors",
            {"entity_embeddings": torch.zeros(1, 2), "relation_embeddings": torch.zeros(1, 2)},
            dtype="int8",
        )
