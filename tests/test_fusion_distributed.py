"""torch.compile and DDP (gloo, 2 CPU processes) smoke tests for the fusion model."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import save_file

NUM_ENTITIES = 40
DIM = 32


def _table(tmp_path: Path) -> Path:
    path = tmp_path / "embeddings.safetensors"
    save_file(
        {"entity_embeddings": torch.randn(NUM_ENTITIES, DIM, generator=torch.Generator().manual_seed(0))}, str(path)
    )
    return path


def _batch(seed: int, entities: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 2000, (2, 12), generator=g)
    labels = torch.where(torch.rand(2, 12, generator=g) < 0.3, input_ids, torch.full_like(input_ids, -100))
    entity_ids = torch.full_like(input_ids, -1)
    if entities:
        entity_ids[:, 2] = torch.randint(0, NUM_ENTITIES, (2,), generator=g)
        entity_ids[0, 5] = 7
    entity_labels = torch.where(entity_ids >= 0, entity_ids, torch.full_like(entity_ids, -100))
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "entity_ids": entity_ids,
        "entity_labels": entity_labels,
    }


def _model(table: Path, **overrides):
    from fusion import KeptConfig, KeptForPreTraining

    torch.manual_seed(0)
    model = KeptForPreTraining(
        KeptConfig.from_preset(
            "tiny",
            vocab_size=2048,
            entity_dim=DIM,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **overrides,
        )
    )
    model.load_entity_table(table)
    return model


@pytest.mark.slow
def test_torch_compile_smoke(tmp_path: Path) -> None:
    # no random dEA negatives: a compiled graph draws them from its own RNG stream (same distribution,
    # other values), so only the deterministic candidates (the batch's entities) compare exactly
    model = _model(_table(tmp_path), dea_num_negatives=0)
    batch = _batch(0, entities=True)
    torch.manual_seed(5)
    eager = model(**batch).loss
    compiled = torch.compile(model)
    torch.manual_seed(5)
    out = compiled(**batch)
    assert torch.allclose(out.loss, eager, atol=1e-4)
    out.loss.backward()
    assert model.kept.knowledge_encoder.layer[0].entity_intermediate.weight.grad is not None
    torch.manual_seed(5)
    assert torch.isfinite(compiled(**_batch(1, entities=False)).loss)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, table: str, result_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from torch.nn.parallel import DistributedDataParallel

        model = _model(Path(table))
        ddp = DistributedDataParallel(model)  # find_unused_parameters=False: every parameter must get a gradient
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        # step 1: rank 1 has no entities at all; step 2: both have entities; step 3: nobody has entities
        for step, entities in enumerate([rank == 0, True, False]):
            optimizer.zero_grad()
            out = ddp(**_batch(10 * step + rank, entities=entities))
            out.loss.backward()
            optimizer.step()
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        torch.save(flat, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gloo_batch_without_entities(tmp_path: Path) -> None:
    table = _table(tmp_path)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(table), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    assert torch.equal(a, b)  # gradients were all-reduced: replicas stay identical
    initial = torch.cat([p.detach().reshape(-1) for p in _model(table).parameters()])
    assert not torch.equal(a, initial)
