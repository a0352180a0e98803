"""Benchmark: KEPT fusion model training step vs transformers' BertForMaskedLM, and entity-table scaling.

1. Training-step time (forward, backward, AdamW step) of KeptForPreTraining (2 T + 2 K layers) vs
   BertForMaskedLM (4 layers), same width (hidden 256, 4 heads, intermediate 1024), sequence 128,
   batch 16, entities aligned on ~10% of tokens, frozen memory-mapped 10k x 100 entity table. Goal <= 1.25x.
   KEPT computes the MLM loss on the masked positions only (BertForMaskedLM: on all positions), so
   1b. times the encoders alone (KeptModel vs BertModel, loss = mean square of the last states): the
   price of the fusion layers themselves.
1c. (``--compile``) the KEPT step under ``torch.compile(fullgraph=True)`` (static entity slots,
   config.max_entity_slots) vs the eager step (dynamic slots); the first compiled step's time is reported apart.
2. Step time as the frozen memory-mapped table grows 10k -> 5M entities (dim 100). Goal: 5M/10k <= 1.1x;
   host memory grows only by the pages of the memory-mapped table (RssAnon flat, RssFile small).

Usage: .venv/bin/python benchmarks/bench_model.py [--steps 10] [--threads 1] [--sizes 10000,100000,1000000,5000000]
       [--compile]
Prints a table, then as LAST line one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import struct
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from fusion import EntityTable, KeptConfig, KeptForPreTraining, KeptModel  # noqa: E402

VOCAB = 30522
DIM = 100


def proc_memory_mb() -> dict[str, float]:
    """RssAnon / RssFile / VmRSS of this process in MiB (Linux)."""
    values: dict[str, float] = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0]) / 1024.0
    return values


def write_table(path: Path, rows: int, dim: int = DIM, chunk: int = 250_000) -> None:
    """Stream a random [rows, dim] float32 safetensors tensor "entity_embeddings" to disk."""
    nbytes = rows * dim * 4
    header = json.dumps({"entity_embeddings": {"dtype": "F32", "shape": [rows, dim], "data_offsets": [0, nbytes]}})
    header += " " * ((8 - len(header) % 8) % 8)
    generator = torch.Generator().manual_seed(rows)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)))
        handle.write(header.encode())
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            handle.write((torch.randn(n, dim, generator=generator) * 0.1).numpy().tobytes())


def make_batch(batch: int, length: int, num_entities: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, VOCAB, (batch, length), generator=g)
    input_ids[:, 0], input_ids[:, -1] = 101, 102
    masked = torch.rand(batch, length, generator=g) < 0.15
    labels = torch.where(masked, input_ids, torch.full_like(input_ids, -100))
    input_ids = torch.where(masked, torch.full_like(input_ids, 103), input_ids)
    aligned = torch.rand(batch, length, generator=g) < 0.10
    aligned[:, 0] = aligned[:, -1] = False
    entity_ids = torch.where(
        aligned, torch.randint(0, num_entities, (batch, length), generator=g), torch.full_like(input_ids, -1)
    )
    entity_labels = torch.where(aligned, entity_ids, torch.full_like(input_ids, -100))
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "entity_ids": entity_ids,
        "entity_labels": entity_labels,
    }


def redraw_entities(batch: dict[str, torch.Tensor], num_entities: int, seed: int) -> dict[str, torch.Tensor]:
    """Same positions, entity ids drawn from the whole table (touches rows all over the file)."""
    g = torch.Generator().manual_seed(seed)
    aligned = batch["entity_ids"] >= 0
    ids = torch.randint(0, num_entities, batch["entity_ids"].shape, generator=g)
    out = dict(batch)
    out["entity_ids"] = torch.where(aligned, ids, torch.full_like(ids, -1))
    out["entity_labels"] = torch.where(aligned, ids, torch.full_like(ids, -100))
    return out


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def static_slots(entity_ids: torch.Tensor, multiple: int = 8) -> int:
    """The batch's most aligned entities per sequence, rounded up: a fixed slot count for compiling."""
    most = int((entity_ids >= 0).sum(dim=1).max())
    return max(multiple, -(-most // multiple) * multiple)


def compiled_vs_eager(
    config: KeptConfig, table: Path, batch: dict[str, torch.Tensor], warmup: int, steps: int
) -> dict[str, float]:
    """Median step of KeptForPreTraining eager (dynamic slots) vs torch.compile(fullgraph=True) (static slots),
    same initial weights, interleaved; the first compiled call (tracing + code generation) timed apart."""
    models, optimizers = [], []
    for slots in (None, static_slots(batch["entity_ids"])):
        torch.manual_seed(0)
        settings = copy.deepcopy(config)
        settings.max_entity_slots = slots
        model = KeptForPreTraining(settings)
        model.load_entity_table(table)
        model.train()
        models.append(model)
        optimizers.append(torch.optim.AdamW(model.parameters(), lr=1e-4))
    compiled = torch.compile(models[1], fullgraph=True)
    first_s = train_step(compiled, optimizers[1], batch)  # compiles forward and backward
    times: list[list[float]] = [[], []]
    for i in range(warmup + steps):
        for j, model in enumerate((models[0], compiled)):
            t = train_step(model, optimizers[j], batch)
            if i >= warmup:
                times[j].append(t)
    eager_s, compiled_s = statistics.median(times[0]), statistics.median(times[1])
    return {
        "eager_step_s": round(eager_s, 4),
        "compiled_step_s": round(compiled_s, 4),
        "compiled_vs_eager_ratio": round(compiled_s / eager_s, 3),
        "first_compiled_step_s": round(first_s, 1),
        "max_entity_slots": models[1].config.max_entity_slots,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--sizes", default="10000,100000,1000000,5000000")
    parser.add_argument("--workdir", default=None, help="where to write the tables (default: a temp dir)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the KEPT step under torch.compile(fullgraph=True) against eager",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]

    from transformers import BertConfig, BertForMaskedLM, BertModel

    width = dict(
        vocab_size=VOCAB, hidden_size=256, num_attention_heads=4, intermediate_size=1024, max_position_embeddings=512
    )
    tmp = tempfile.TemporaryDirectory(dir=args.workdir)
    workdir = Path(tmp.name)
    try:
        small = workdir / f"table_{sizes[0]}.safetensors"
        write_table(small, sizes[0])
        torch.manual_seed(0)
        kept = KeptForPreTraining(
            KeptConfig(
                **width,
                num_hidden_layers=2,
                num_knowledge_layers=2,
                entity_dim=DIM,
                num_entity_attention_heads=4,
                dea_num_negatives=100,
            )
        )
        kept.load_entity_table(small)
        bert = BertForMaskedLM(BertConfig(**width, num_hidden_layers=4, attn_implementation="sdpa"))
        kept.train()
        bert.train()
        kept_opt = torch.optim.AdamW(kept.parameters(), lr=1e-4)
        bert_opt = torch.optim.AdamW(bert.parameters(), lr=1e-4)
        batch = make_batch(args.batch, args.length, sizes[0], seed=0)
        bert_batch = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
        n_aligned = int((batch["entity_ids"] >= 0).sum())

        kept_times, bert_times = [], []
        for i in range(args.warmup + args.steps):  # interleaved so drift hits both equally
            tk = train_step(kept, kept_opt, batch)
            tb = train_step(bert, bert_opt, bert_batch)
            if i >= args.warmup:
                kept_times.append(tk)
                bert_times.append(tb)
        kept_s, bert_s = statistics.median(kept_times), statistics.median(bert_times)
        ratio = kept_s / bert_s
        print(
            f"# 1. training step, batch {args.batch} x seq {args.length}, hidden 256, 4 layers, "
            f"{n_aligned} aligned entities ({100 * n_aligned / batch['input_ids'].numel():.1f}% of tokens), "
            f"{args.threads} thread(s), median of {args.steps}"
        )
        print(f"{'model':<40}{'step s':>10}")
        print(f"{'BertForMaskedLM (4 layers)':<40}{bert_s:>10.4f}")
        print(f"{'KeptForPreTraining (2 T + 2 K layers)':<40}{kept_s:>10.4f}")
        print(f"{'ratio KEPT / BERT (goal <= 1.25)':<40}{ratio:>10.3f}")
        del bert, bert_opt
        gc.collect()

        # 1b. encoders only (no MLM/dEA heads): the cost of the K-encoder's fusion itself
        torch.manual_seed(0)
        kept_enc = KeptModel(kept.config, add_pooling_layer=False)
        kept_enc.load_entity_table(small)
        bert_enc = BertModel(
            BertConfig(**width, num_hidden_layers=4, attn_implementation="sdpa"), add_pooling_layer=False
        )
        enc_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "entity_ids")}
        bert_inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        enc_opts = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (kept_enc, bert_enc)]
        enc_times: list[list[float]] = [[], []]
        for i in range(args.warmup + args.steps):
            for j, (m, inputs) in enumerate(((kept_enc, enc_inputs), (bert_enc, bert_inputs))):
                start = time.perf_counter()
                enc_opts[j].zero_grad(set_to_none=True)
                m(**inputs).last_hidden_state.pow(2).mean().backward()
                enc_opts[j].step()
                if i >= args.warmup:
                    enc_times[j].append(time.perf_counter() - start)
        kept_enc_s, bert_enc_s = statistics.median(enc_times[0]), statistics.median(enc_times[1])
        enc_ratio = kept_enc_s / bert_enc_s
        print(f"{'BertModel encoder only (4 layers)':<40}{bert_enc_s:>10.4f}")
        print(f"{'KeptModel encoder only (2 T + 2 K)':<40}{kept_enc_s:>10.4f}")
        print(f"{'ratio encoders KEPT / BERT':<40}{enc_ratio:>10.3f}")
        del kept_enc, bert_enc, enc_opts
        gc.collect()

        compile_result = None
        if args.compile:  # 1c. compiled vs eager training step
            compile_result = compiled_vs_eager(kept.config, small, batch, args.warmup, args.steps)
            print(f"{'KeptForPreTraining eager':<40}{compile_result['eager_step_s']:>10.4f}")
            print(f"{'KeptForPreTraining compiled (fullgraph)':<40}{compile_result['compiled_step_s']:>10.4f}")
            print(f"{'ratio compiled / eager':<40}{compile_result['compiled_vs_eager_ratio']:>10.3f}")
            print(
                f"(first compiled step {compile_result['first_compiled_step_s']} s; "
                f"max_entity_slots {compile_result['max_entity_slots']})"
            )
            gc.collect()

        # 2. entity table scaling: all tables open at once, steps round-robin over them (drift hits all equally)
        tables = {}
        for size in sizes:
            path = workdir / f"table_{size}.safetensors"
            if not path.exists():
                write_table(path, size)
            tables[size] = EntityTable.open(path, mmap=True)
        gc.collect()
        base_mem = proc_memory_mb()
        times: dict[int, list[float]] = {size: [] for size in sizes}
        for i in range(args.warmup + args.steps):
            if i == args.warmup:  # heap after the warm-up steps (allocator caches settled)
                warm_mem = proc_memory_mb()
            for size in sizes:
                kept.set_entity_table(tables[size])
                t = train_step(kept, kept_opt, redraw_entities(batch, size, seed=1000 * size + i))
                if i >= args.warmup:
                    times[size].append(t)
        mem = proc_memory_mb()
        scaling = [
            {
                "entities": size,
                "table_mb": round(tables[size].path.stat().st_size / 2**20, 1),
                "step_s": round(statistics.median(times[size]), 4),
            }
            for size in sizes
        ]
        memory = {
            "rss_before_mb": round(base_mem["VmRSS"], 1),
            "rss_after_mb": round(mem["VmRSS"], 1),
            "rss_anon_growth_mb": round(mem["RssAnon"] - warm_mem["RssAnon"], 1),
            "rss_file_growth_mb": round(mem["RssFile"] - base_mem["RssFile"], 1),
            "tables_total_mb": round(sum(row["table_mb"] for row in scaling), 1),
        }
        first = scaling[0]["step_s"]
        print(f"\n# 2. frozen memory-mapped entity table (dim {DIM}), step time and host memory")
        print(f"{'entities':>10}{'table MiB':>11}{'step s':>9}{'ratio':>7}")
        for row in scaling:
            row["ratio_vs_smallest"] = round(row["step_s"] / first, 3)
            print(f"{row['entities']:>10}{row['table_mb']:>11}{row['step_s']:>9.4f}{row['ratio_vs_smallest']:>7.3f}")
        print(
            f"host memory over the table steps: RSS {memory['rss_before_mb']} -> {memory['rss_after_mb']} MiB; "
            f"anonymous (heap, after warm-up) {memory['rss_anon_growth_mb']:+} MiB, file-backed (mapped table pages) "
            f"{memory['rss_file_growth_mb']:+} MiB of {memory['tables_total_mb']} MiB of tables"
        )
        largest = scaling[-1]
        result = {
            "benchmark": "fusion_model",
            "threads": args.threads,
            "batch": args.batch,
            "seq_len": args.length,
            "aligned_entity_fraction": round(n_aligned / batch["input_ids"].numel(), 4),
            "bert_step_s": round(bert_s, 4),
            "kept_step_s": round(kept_s, 4),
            "kept_vs_bert_step_ratio": round(ratio, 3),
            "kept_vs_bert_goal": 1.25,
            "bert_encoder_step_s": round(bert_enc_s, 4),
            "kept_encoder_step_s": round(kept_enc_s, 4),
            "kept_vs_bert_encoder_ratio": round(enc_ratio, 3),
            "table_scaling": scaling,
            "table_step_ratio_largest_vs_smallest": largest["ratio_vs_smallest"],
            "table_step_ratio_goal": 1.1,
            "largest_table_mb": largest["table_mb"],
            "memory": memory,
        }
        if compile_result is not None:
            result["compile"] = compile_result
    finally:
        tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
