"""The KG is split once, before embedding: held-out triples keep their entities in training, are saved,
never reach the embedding, and feed the probe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kg import EmbeddingConfig, KGError, KnowledgeGraph, train_embeddings
from kg.split import load_split, save_split, split_triples


def star_and_chain(n: int = 400) -> KnowledgeGraph:
    """Many degree-1 leaves (like Wikipedia links) around hubs, plus a denser core."""
    triples = [(f"hub{i % 5}", "links_to", f"leaf{i}") for i in range(n)]
    triples += [(f"hub{i % 5}", "near", f"hub{(i + 1) % 5}") for i in range(5)]
    triples += [(f"leaf{i}", "near", f"leaf{i + 1}") for i in range(0, n - 1, 2)]
    return KnowledgeGraph.from_triples(triples)


def test_split_keeps_every_held_out_entity_and_relation_in_training() -> None:
    graph = star_and_chain()
    split = split_triples(graph, test_fraction=0.1, validation_fraction=0.05, seed=1)
    train = split.triples(graph, "train")
    held = torch.cat([split.triples(graph, "test"), split.triples(graph, "validation")])
    assert split.test.numel() == split.info["requested_testing"] == round(0.1 * graph.num_triples)
    assert set(held[:, [0, 2]].flatten().tolist()) <= set(train[:, [0, 2]].flatten().tolist())
    assert set(held[:, 1].tolist()) <= set(train[:, 1].tolist())
    # the three parts partition the triples
    everything = torch.cat([split.train, split.test, split.validation]).sort().values
    assert torch.equal(everything, torch.arange(graph.num_triples))
    again = split_triples(graph, test_fraction=0.1, validation_fraction=0.05, seed=1)
    assert torch.equal(again.test, split.test)
    assert not torch.equal(split_triples(graph, test_fraction=0.1, seed=2).test, split.test)


def test_split_reports_a_shortfall_instead_of_emptying_the_test_set() -> None:
    # a pure star: every leaf has degree 1, so no triple can be held out without losing its leaf
    graph = KnowledgeGraph.from_triples([("hub", "r", f"leaf{i}") for i in range(60)])
    split = split_triples(graph, test_fraction=0.2, seed=0)
    assert split.test.numel() == 0 and split.info["test_shortfall"] == split.info["requested_testing"]
    assert "could be held out" in split.info["split_note"]


def test_small_graph_gets_a_usable_test_set() -> None:
    graph = star_and_chain(200)
    split = split_triples(graph, test_fraction=0.01, seed=0, min_test_triples=200)
    assert split.test.numel() == graph.num_triples // 10 > round(0.01 * graph.num_triples)


def test_duplicated_triples_never_straddle_the_split() -> None:
    graph = star_and_chain(100)
    doubled = KnowledgeGraph(graph.entities, graph.relations, torch.cat([graph.triples, graph.triples]))
    split = split_triples(doubled, test_fraction=0.1, seed=0)
    train = {tuple(t) for t in split.triples(doubled, "train").tolist()}
    assert not any(tuple(t) in train for t in split.triples(doubled, "test").tolist())


def test_split_files_round_trip_and_stale_splits_are_refused(tmp_path: Path) -> None:
    graph = star_and_chain(100)
    split = split_triples(graph, test_fraction=0.1, seed=0)
    graph.save(tmp_path)
    save_split(split, graph, tmp_path)
    loaded = load_split(graph, tmp_path)
    assert torch.equal(loaded.test, split.test) and torch.equal(loaded.train, split.train)
    assert loaded.info["num_testing"] == split.test.numel()
    other = KnowledgeGraph.from_triples([("x", "r", "y"), ("y", "r", "z")])
    with pytest.raises(KGError, match="train_triples.tsv:2: triple .* is not in triples.tsv"):
        load_split(other, tmp_path)


def test_embedding_trains_on_training_triples_only() -> None:
    graph = star_and_chain(120)
    result = train_embeddings(graph, EmbeddingConfig(dim=8, epochs=1, ratios=(0.8, 0.2, 0.0)))
    assert result.split is not None and result.metrics["split_method"] == "coverage-greedy"
    trained_on = {tuple(t) for t in result.pipeline_result.training.mapped_triples.tolist()}
    tested_on = {tuple(t) for t in result.split.triples(graph, "test").tolist()}
    assert tested_on and not trained_on & tested_on
    assert result.metrics["num_testing"] == len(tested_on)


def test_embed_run_dir_saves_the_split_and_the_probe_uses_it(tmp_path: Path) -> None:
    from kept.evaluate import _kg_test_split
    from kept.graphs import embed_run_dir

    graph = star_and_chain(120)
    graph.save(tmp_path / "kg")
    metrics = embed_run_dir(tmp_path, {"dim": 8, "epochs": 1, "ratios": (0.8, 0.2, 0.0)})
    held_out = _kg_test_split(tmp_path)
    assert held_out is not None and len(held_out) == metrics["num_testing"] > 0
    trained = {tuple(t) for t in load_split(graph, tmp_path / "kg").triples(graph, "train").tolist()}
    ids = {(graph.entity_id(h), graph.relation_id(r), graph.entity_id(t)) for h, r, t in held_out}
    assert not ids & trained
    # split='none' removes the split files: nothing may read a stale held-out set
    embed_run_dir(tmp_path, {"dim": 8, "epochs": 1, "split": "none"})
    assert _kg_test_split(tmp_path) is None
