"""GPU training throughput of the KEPT fusion model: bf16, base preset, sequence 512.

Reports tokens/s and model-FLOPs utilisation (MFU) against the GPU's dense bf16 peak (H100/H200:
~989 TFLOP/s; override with --peak-tflops). Model FLOPs are analytic:
6 * (matmul parameters, MLM decoder included) * tokens + attention 12 * layers * seq * hidden * tokens.
The frozen entity table (memory-mapped, 1M x 100 by default) stays on the CPU; only the batch's rows
travel to the GPU. Without a CUDA GPU it prints a skip line and {"skipped": true, ...} and exits 0.
``--device cpu --preset tiny`` runs the same code path on the CPU (for checking the script only).

``--no-fusion`` runs the same model with no entity input (aggregators and dEA idle); ``--bert`` runs the
reference a user would pick instead: a plain ``BertForMaskedLM`` with as many layers as KEPT's T + K layers
and the same width.

Usage: .venv/bin/python benchmarks/bench_gpu_throughput.py [--batch 16] [--steps 20] [--compile] [--no-fusion|--bert]
Prints a table, then as LAST line one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402


def model_flops_per_token(model: nn.Module, layers: int, seq_len: int, hidden: int) -> tuple[int, float]:
    """(matmul parameters, training FLOPs per token): 6 * params + 12 * layers * seq * hidden."""
    params = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return params, 6.0 * params + 12.0 * layers * seq_len * hidden


def plain_bert(config: object) -> nn.Module:
    """The reference: BertForMaskedLM as deep as KEPT's T + K layers, same width and vocabulary."""
    from transformers import BertConfig, BertForMaskedLM

    bert = BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers + config.num_knowledge_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
    )
    return BertForMaskedLM(bert)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--entity-fraction", type=float, default=0.10)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu to check the script")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--no-fusion", action="store_true", help="KEPT without entity input")
    kind.add_argument("--bert", action="store_true", help="plain BertForMaskedLM, T + K layers")
    args = parser.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        print("SKIP gpu_throughput: no CUDA GPU available on this machine")
        print(json.dumps({"benchmark": "gpu_throughput", "skipped": True, "reason": "no CUDA GPU"}))
        return

    from safetensors.torch import save_file

    from fusion import KeptConfig, KeptForPreTraining

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = KeptConfig.from_preset(args.preset, max_position_embeddings=max(512, args.seq_len))
    model = (plain_bert(config) if args.bert else KeptForPreTraining(config)).to(device)
    model.train()
    with tempfile.TemporaryDirectory() as tmp:
        table_path = Path(tmp) / "entities.safetensors"
        save_file({"entity_embeddings": torch.randn(args.entities, config.entity_dim) * 0.1}, str(table_path))
        if not args.bert:
            model.load_entity_table(table_path, mmap=True)
            assert model.entity_table.weight.device.type == "cpu"

        fused = device.type == "cuda"
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        step_model = torch.compile(model) if args.compile else model

        g = torch.Generator().manual_seed(0)
        b, length = args.batch, args.seq_len
        input_ids = torch.randint(1000, config.vocab_size, (b, length), generator=g)
        masked = torch.rand(b, length, generator=g) < 0.15
        labels = torch.where(masked, input_ids, torch.full_like(input_ids, -100))
        aligned = torch.rand(b, length, generator=g) < args.entity_fraction
        entity_ids = torch.where(
            aligned, torch.randint(0, args.entities, (b, length), generator=g), torch.full_like(input_ids, -1)
        )
        batch = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": labels,
            "entity_ids": entity_ids,
            "entity_labels": torch.where(aligned, entity_ids, torch.full_like(input_ids, -100)),
        }
        if args.bert or args.no_fusion:
            batch = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}

        def step() -> float:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = step_model(**batch).loss
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        for _ in range(args.warmup):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.steps):
            last_loss = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start

    tokens = b * length * args.steps
    tokens_per_s = tokens / elapsed
    layers = config.num_hidden_layers + config.num_knowledge_layers
    variant = "bert" if args.bert else "kept-no-fusion" if args.no_fusion else "kept"
    params, flops_per_token = model_flops_per_token(model, layers, length, config.hidden_size)
    achieved_tflops = tokens_per_s * flops_per_token / 1e12
    mfu = achieved_tflops / args.peak_tflops
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    peak_mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    print(
        f"# {variant} {args.preset} ({config.num_hidden_layers} T + {config.num_knowledge_layers} K layers), "
        f"bf16 autocast, batch {b} x seq {length}, {args.entities} entities (CPU table), "
        f"{'compiled' if args.compile else 'eager'}, {name}"
    )
    print(f"{'step s':>10}{'tokens/s':>12}{'TFLOP/s':>10}{'MFU':>8}")
    print(f"{elapsed / args.steps:>10.4f}{tokens_per_s:>12.0f}{achieved_tflops:>10.1f}{mfu:>8.3f}")
    print(
        json.dumps(
            {
                "benchmark": "gpu_throughput",
                "skipped": False,
                "device": name,
                "preset": args.preset,
                "variant": variant,
                "batch": b,
                "seq_len": length,
                "steps": args.steps,
                "compiled": args.compile,
                "step_s": round(elapsed / args.steps, 4),
                "tokens_per_s": round(tokens_per_s, 1),
                "matmul_params": params,
                "flops_per_token": flops_per_token,
                "achieved_tflops": round(achieved_tflops, 2),
                "peak_tflops": args.peak_tflops,
                "mfu": round(mfu, 4),
                "peak_gpu_memory_gib": round(peak_mem, 2) if peak_mem is not None else None,
                "final_loss": round(last_loss, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
