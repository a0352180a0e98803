"""Joint KG learning (KEPLER/DRAGON): the scoring against PyKEEN's, train-split triples only, a loss that
learns a toy KG, and a tiny run from YAML with kg_loss in the history and the adapted table saved."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from fusion.kg_link import KeptKGLinkHead, distmult_score, link_loss, transe_score
from kept.errors import KeptError
from kept.joint_kg import TripleSampler, training_triples


def test_scores_and_losses_are_pykeens() -> None:
    from pykeen.losses import MarginRankingLoss, SoftplusLoss
    from pykeen.nn.modules import DistMultInteraction, TransEInteraction

    generator = torch.Generator().manual_seed(0)
    h, r, t = (torch.randn(6, 4, 8, generator=generator) for _ in range(3))
    for p in (1, 2):
        assert torch.allclose(transe_score(h, r, t, p), TransEInteraction(p=p)(h, r, t), atol=1e-5)
    assert torch.allclose(distmult_score(h, r, t), DistMultInteraction()(h, r, t), atol=1e-5)
    positive, negative = torch.randn(5, generator=generator), torch.randn(5, 3, generator=generator)
    assert torch.allclose(
        link_loss(positive, negative, "margin", 0.5),
        MarginRankingLoss(margin=0.5).process_slcwa_scores(positive[:, None], negative),
    )
    assert torch.allclose(
        link_loss(positive, negative, "softplus", 1.0), SoftplusLoss().process_slcwa_scores(positive[:, None], negative)
    )


@pytest.fixture(scope="module")
def split_kg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nations (PyKEEN's bundled KG) with a saved seeded train/test/validation split."""
    from kg import load_pykeen_dataset
    from kg.split import save_split, split_triples

    run_dir = tmp_path_factory.mktemp("nations")
    graph = load_pykeen_dataset("nations")
    graph.save(run_dir / "kg")
    save_split(split_triples(graph, test_fraction=0.1, validation_fraction=0.1, seed=3), graph, run_dir / "kg")
    return run_dir


def test_only_training_triples_are_sampled(split_kg: Path) -> None:
    from kg import KnowledgeGraph
    from kg.split import load_split

    graph = KnowledgeGraph.load(split_kg / "kg")
    split = load_split(graph, split_kg / "kg")
    loaded = training_triples(split_kg)
    rows = {tuple(row) for row in loaded.triples.tolist()}
    assert rows == {tuple(row) for row in split.triples(graph, "train").tolist()}
    held_out = {tuple(row) for part in ("test", "validation") for row in split.triples(graph, part).tolist()}
    assert held_out and not rows & held_out
    # every entity in the batch: the sampler may reach any triple, yet only training ones come out
    sampler = TripleSampler(loaded.triples, loaded.num_entities, per_batch=10_000, negatives=3)
    chosen, negatives = sampler.sample(torch.arange(graph.num_entities), torch.Generator().manual_seed(0))
    assert {tuple(row) for row in chosen.tolist()} == rows
    assert negatives.shape == (len(rows), 3, 3)
    # one side corrupted per negative, the relation never
    same_head = negatives[..., 0] == chosen[:, None, 0]
    same_tail = negatives[..., 2] == chosen[:, None, 2]
    assert (same_head | same_tail).all() and (negatives[..., 1] == chosen[:, None, 1]).all()


def test_sampler_takes_triples_of_the_batch_entities_seeded() -> None:
    triples = torch.tensor([[0, 0, 1], [1, 0, 2], [2, 1, 3], [3, 1, 4], [4, 0, 5]])
    sampler = TripleSampler(triples, num_entities=6, per_batch=2, negatives=4)
    ids = torch.tensor([[-1, 1, -1], [-1, -1, -1]])  # entity 1 only
    chosen, negatives = sampler.sample(ids, torch.Generator().manual_seed(5))
    assert sorted(map(tuple, chosen.tolist())) == [(0, 0, 1), (1, 0, 2)]
    again, negatives_again = sampler.sample(ids, torch.Generator().manual_seed(5))
    assert torch.equal(chosen, again) and torch.equal(negatives, negatives_again)
    many = TripleSampler(triples, num_entities=6, per_batch=1, negatives=2)
    assert many.sample(torch.arange(6), torch.Generator().manual_seed(0))[0].shape == (1, 3)
    none, no_negatives = sampler.sample(torch.full((2, 3), -1), torch.Generator())
    assert none.shape == (0, 3) and no_negatives.shape == (0, 4, 3)


@pytest.mark.parametrize("interaction,loss", [("TransE", "margin"), ("DistMult", "softplus")])
def test_joint_loss_learns_a_toy_kg(interaction: str, loss: str) -> None:
    """A chain KG: the loss falls and the true tails rank above the corruptions after training."""
    torch.manual_seed(0)
    num_entities = 12
    triples = torch.tensor([[i, i % 2, (i + 1) % num_entities] for i in range(num_entities)])
    table = torch.nn.Embedding(num_entities, 16)
    head = KeptKGLinkHead(2, 16, interaction, loss)
    optimizer = torch.optim.Adam([*table.parameters(), *head.parameters()], lr=0.05)
    sampler = TripleSampler(triples, num_entities, per_batch=8, negatives=8)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(150):
        chosen, negatives = sampler.sample(torch.randint(num_entities, (4,), generator=generator), generator)
        value = head(chosen, negatives, table)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(float(value.detach()))
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    with torch.no_grad():
        scores = head.score(
            torch.stack(
                [
                    triples[:, 0:1].expand(-1, num_entities),
                    triples[:, 1:2].expand(-1, num_entities),
                    torch.arange(num_entities).expand(num_entities, -1),
                ],
                dim=-1,
            ),
            table,
        )  # [12, 12]
    hits = (scores.argmax(dim=1) == triples[:, 2]).float().mean()
    assert hits >= 0.75


def test_empty_batch_keeps_the_head_in_the_graph() -> None:
    head = KeptKGLinkHead(3, 4)
    value = head(torch.empty(0, 3, dtype=torch.long), torch.empty(0, 2, 3, dtype=torch.long), torch.nn.Embedding(5, 4))
    value.backward()
    assert float(value.detach()) == 0.0 and head.relation_embeddings.weight.grad is not None


def test_model_ranking_reproduces_the_kg_embed_figures(split_kg: Path, tmp_path: Path) -> None:
    """Ranking the KG embedding's own vectors through the model-side path gives kg_metrics.json's MRR."""
    import shutil

    from kept.evaluate.linkpred import rank_test_triples
    from kept.graphs import embed_run_dir
    from kg import KnowledgeGraph, load_embeddings

    run_dir = tmp_path / "run"
    shutil.copytree(split_kg, run_dir)
    metrics = embed_run_dir(
        run_dir,
        {
            "model": "TransE",
            "dim": 8,
            "epochs": 2,
            "batch_size": 512,
            "split": "random",
            "seed": 3,
            "ratios": (0.8, 0.1, 0.1),
        },
    )
    loaded = load_embeddings(run_dir / "kg" / "embeddings.safetensors", mmap=False)
    ranked = rank_test_triples(
        KnowledgeGraph.load(run_dir / "kg"),
        run_dir / "kg",
        loaded.entity_embeddings.float(),
        loaded.relation_embeddings.float(),
        "TransE",
    )
    assert ranked["num_testing"] == metrics["num_testing"]
    assert ranked["mrr"] == pytest.approx(metrics["mrr"], abs=1e-6)
    assert ranked["hits_at_1"] == pytest.approx(metrics["hits_at_1"], abs=1e-6)
    # a saved model whose trained table is still the KG's: evaluate's link prediction ranks the model's table
    from safetensors.torch import save_file

    from kept.evaluate.linkpred import TABLE_KEY, evaluate_linkpred

    (run_dir / "model").mkdir()
    (run_dir / "model" / "config.json").write_text(json.dumps({"model_type": "kept"}))
    save_file({TABLE_KEY: loaded.entity_embeddings.float().contiguous()}, str(run_dir / "model" / "model.safetensors"))
    figures = evaluate_linkpred(run_dir)
    assert figures["source"] == "model: trained entity table, KG embedding's relations"
    assert figures["mrr"] == pytest.approx(metrics["mrr"], abs=1e-6)
    assert figures["kg_embedding_mrr"] == pytest.approx(metrics["mrr"])
    random_table = torch.randn(loaded.num_entities, 8, generator=torch.Generator().manual_seed(0))
    save_file({TABLE_KEY: random_table}, str(run_dir / "model" / "model.safetensors"))
    assert abs(evaluate_linkpred(run_dir)["mrr"] - metrics["mrr"]) > 0.01  # another table: its own figure


def test_joint_loss_needs_a_trainable_table(tmp_path: Path) -> None:
    from kept.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text("name: x\nmodel:\n  joint_kg_weight: 0.5\n")
    with pytest.raises(KeptError) as error:
        load_config(path)
    assert "model.joint_kg_weight" in str(error.value) and "freeze_entity_table: false" in str(error.value)
    assert ":3" in str(error.value)  # the line


def test_tiny_run_trains_table_and_relations_jointly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """From YAML (--set) on the tiny run: kg_loss and eval_kg_loss in the history, the adapted table and the
    KG head saved, reloaded by from_pretrained and ranked by the evaluation's link prediction."""
    from fusion import KeptForPreTraining
    from kept.config import load_run_config
    from kept.encode import encode_run
    from kept.evaluate.linkpred import evaluate_linkpred
    from kept.pretrain import pretrain_run
    from kept.tiny import make_tiny_run
    from kg import load_embeddings

    run_dir = make_tiny_run(tmp_path / "run", steps=4, save_steps=4)
    config = load_run_config(
        run_dir,
        [
            "model.freeze_entity_table=false",
            "model.joint_kg_weight=1.0",
            "model.joint_kg_triples_per_batch=4",
            "model.joint_kg_negatives=3",
        ],
    )
    encode_run(run_dir, config)
    caplog.set_level(logging.INFO, logger="kept")
    pretrain_run(run_dir, config, progress=False)
    lines = caplog.messages
    assert any(line.startswith("joint KG loss: TransE margin") for line in lines)
    history = json.loads((run_dir / "logs" / "train_history.json").read_text())["log_history"]
    train = [entry for entry in history if "loss" in entry]
    assert train and all(entry["kg_loss"] > 0 for entry in train)
    assert any("eval_kg_loss" in entry for entry in history)
    model = KeptForPreTraining.from_pretrained(str(run_dir / "model"))
    assert model.kg_head is not None and model.entity_table is None
    start = load_embeddings(run_dir / "kg" / "embeddings.safetensors", mmap=False).entity_embeddings
    assert not torch.allclose(model.kept.entity_embeddings.weight, start)  # the table moved, and was saved
    figures = evaluate_linkpred(run_dir)
    assert figures["source"].startswith("model: trained entity table, joint KG head")
    assert 0 < figures["mrr"] <= 1 and figures["num_testing"] == 16


def test_batch_triples_are_reseeded_per_batch_and_kg_model_checked(tmp_path: Path) -> None:
    """Through the pretraining collators: the same batch indices give the same triples and corruptions
    (exact resume); a KG model without an interaction here is refused with the fix."""
    from kept.config import load_run_config
    from kept.encode import encode_run, load_encoded
    from kept.joint_kg import interaction_of, wrap_collator
    from kept.pretrain import INDEX_KEY, BatchSeededCollator
    from kept.tiny import make_tiny_run
    from kept.tokenizer import load_run_tokenizer
    from masking import KnowledgeMaskingCollator

    run_dir = make_tiny_run(tmp_path / "run")
    config = load_run_config(
        run_dir,
        [
            "model.freeze_entity_table=false",
            "model.joint_kg_weight=1",
            "model.joint_kg_triples_per_batch=3",
            "model.joint_kg_negatives=2",
        ],
    )
    encode_run(run_dir, config)
    rows = load_encoded(run_dir, "train")
    masking = KnowledgeMaskingCollator(load_run_tokenizer(run_dir / "tokenizer"), config=config.masking)
    collate = BatchSeededCollator(wrap_collator(masking, config, run_dir), seed=0)
    columns = ["input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids"]
    features = [{**{c: rows[i][c] for c in columns}, INDEX_KEY: i} for i in (3, 7)]
    first = collate(features)
    collate(features[:1])  # another batch in between
    again = collate(features)
    assert first["kg_triples"].shape == (3, 3) and first["kg_negatives"].shape == (3, 2, 3)
    assert torch.equal(first["kg_triples"], again["kg_triples"])
    assert torch.equal(first["kg_negatives"], again["kg_negatives"])
    assert torch.equal(first["labels"], again["labels"])
    linked = {int(i) for f in features for i in f["entity_ids"] if i >= 0}
    assert all(h in linked or t in linked for h, _, t in first["kg_triples"].tolist())
    assert interaction_of(config) == ("TransE", 1)
    rotate = config.model_copy(update={"kg": config.kg.model_copy(update={"model": "RotatE"})})
    with pytest.raises(KeptError, match="no interaction for kg.model 'RotatE'"):
        interaction_of(rotate)


def test_benchmark_compare_config_has_the_three_tables() -> None:
    """benchmarks/joint_kg.yaml (kept compare variants) differs only in the entity table."""
    from kept.compare import load_compare_config

    plan = load_compare_config(Path(__file__).resolve().parent.parent / "benchmarks" / "joint_kg.yaml")
    models = {variant: runs[0][1].model for variant, runs in plan.runs.items()}
    assert list(models) == ["frozen", "trained", "joint"]
    assert [(m.freeze_entity_table, m.joint_kg_weight) for m in models.values()] == [(True, 0), (False, 0), (False, 1)]
    configs = [runs[0][1].to_dict() for runs in plan.runs.values()]
    for config in configs:
        del config["name"], config["model"]
    assert configs[0] == configs[1] == configs[2]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_joint_kg_on_gpu_bf16(tmp_path: Path) -> None:
    """On a GPU (bf16 auto): the trainable table and the KG head train on the device, kg_loss is finite."""
    import math

    from kept.config import load_run_config
    from kept.encode import encode_run
    from kept.pretrain import pretrain_run
    from kept.tiny import make_tiny_run

    run_dir = make_tiny_run(tmp_path / "gpu", steps=4, save_steps=4)
    config = load_run_config(run_dir, ["model.freeze_entity_table=false", "model.joint_kg_weight=1.0"])
    encode_run(run_dir, config)
    result = pretrain_run(run_dir, config, progress=False)
    assert result.metrics["bf16"] is torch.cuda.is_bf16_supported()
    history = json.loads((run_dir / "logs" / "train_history.json").read_text())["log_history"]
    losses = [entry["kg_loss"] for entry in history if "kg_loss" in entry]
    assert losses and all(math.isfinite(value) and value > 0 for value in losses)


def test_joint_kg_run_resumes_exactly(tmp_path: Path) -> None:
    """Interrupted at a checkpoint and resumed, the joint run logs the same kg_loss and loss at every step as
    an uninterrupted one (the batch triples are reseeded per batch; the KG head is in the checkpoint)."""
    import shutil

    from transformers import TrainerCallback

    from kept.config import load_run_config
    from kept.encode import encode_run
    from kept.pretrain import pretrain_run
    from kept.tiny import make_tiny_run

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if state.global_step >= 3:
                control.should_training_stop = control.should_save = True
            return control

    overrides = [
        "model.freeze_entity_table=false",
        "model.joint_kg_weight=1.0",
        "model.joint_kg_triples_per_batch=4",
        "train.max_steps=6",
        "train.save_steps=3",
        "train.eval_steps=3",
    ]
    template = make_tiny_run(tmp_path / "template", steps=6, save_steps=3)
    encode_run(template, load_run_config(template, overrides))
    whole, parts = (shutil.copytree(template, tmp_path / name) for name in ("whole", "parts"))
    pretrain_run(whole, load_run_config(whole, overrides), progress=False)
    pretrain_run(parts, load_run_config(parts, overrides), progress=False, extra_callbacks=[StopAt()])
    resumed = pretrain_run(parts, load_run_config(parts, overrides), progress=False)
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-3")
    logged = [
        [
            (e["step"], e["loss"], e["kg_loss"])
            for e in json.loads((d / "logs" / "train_history.json").read_text())["log_history"]
            if "kg_loss" in e
        ]
        for d in (whole, parts)
    ]
    assert len(logged[0]) == 6 and logged[0] == logged[1]


def test_joint_kg_fields_in_model_overrides_are_refused(tmp_path: Path) -> None:
    from kept.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text("name: x\nmodel:\n  overrides:\n    joint_kg_weight: 1.0\n")
    with pytest.raises(KeptError) as error:
        load_config(path)
    assert "model.overrides.joint_kg_weight" in str(error.value) and "model.joint_kg_weight" in str(error.value)
    assert ":4" in str(error.value)
