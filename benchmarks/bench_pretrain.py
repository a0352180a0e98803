"""Pretraining step cost: `kept pretrain` (Trainer + KEPT collator + fusion model) vs the plain HF recipe.

The reference is what a user would write without KEPT: ``Trainer`` + ``DataCollatorForLanguageModeling``
+ ``BertForMaskedLM`` of the same width and total depth, on the same encoded sequences. KEPT runs
``kept.pretrain.pretrain_run`` (exact-resume plumbing, history/TensorBoard callbacks) with token masking
and no fusion (same objective as the reference), and with entity masking + fusion + dEA.

Measured: the Trainer's own ``train_runtime`` (training loop only) per step, and the process CPU time
of the whole call per step; rounds are interleaved and the median is reported. Prints a table and,
as the last line, a JSON object with the figures.

    .venv/bin/python benchmarks/bench_pretrain.py [--steps 40] [--rounds 3] [--max-length 128]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_run(root: Path, max_length: int, steps: int) -> Path:
    import datasets

    from kept.config import load_run_config
    from kept.encode import encode_run
    from kept.tiny import make_tiny_run

    datasets.disable_progress_bars()
    run_dir = make_tiny_run(root / "template", n_docs=400, steps=steps, save_steps=10 * steps)
    config = load_run_config(
        run_dir, [f"encode.max_length={max_length}", "encode.packing=true", "tokenizer.vocab_size=400"]
    )
    encode_run(run_dir, config)
    return run_dir


def kept_round(template: Path, work: Path, steps: int, batch: int, strategy: str, fusion: bool) -> tuple[float, float]:
    from kept.config import load_run_config
    from kept.pretrain import pretrain_run

    run_dir = work / f"kept-{strategy}-{fusion}"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(template, run_dir)
    config = load_run_config(
        run_dir,
        [
            f"masking.strategy={strategy}",
            f"model.fusion={str(fusion).lower()}",
            f"train.max_steps={steps}",
            f"train.batch_size={batch}",
            f"train.eval_steps={10 * steps}",
            f"train.save_steps={10 * steps}",
            "train.logging_steps=10",
        ],
    )
    cpu = time.process_time()
    result = pretrain_run(run_dir, config, progress=False)
    cpu = time.process_time() - cpu
    return result.metrics["train_runtime_s"] / steps, cpu / steps


def hf_round(template: Path, work: Path, steps: int, batch: int) -> tuple[float, float]:
    import datasets
    import torch
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from kept.tokenizer import load_run_tokenizer

    out = work / "hf"
    shutil.rmtree(out, ignore_errors=True)
    tokenizer = load_run_tokenizer(template / "tokenizer")
    train = datasets.load_from_disk(str(template / "encoded" / "train")).select_columns(["input_ids"])
    cpu = time.process_time()
    torch.manual_seed(0)
    # same width and total depth as the KEPT tiny model used here (1 T + 1 K layer, hidden 32)
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
    )
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-3,
        warmup_steps=1,
        seed=0,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10,
        report_to=[],
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15),
    )
    output = trainer.train()
    trainer.save_model(str(out / "model"))
    cpu = time.process_time() - cpu
    return output.metrics["train_runtime"] / steps, cpu / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    variants = {
        "HF Trainer + DataCollatorForLanguageModeling + BertForMaskedLM": None,
        "kept pretrain, token masking, no fusion": ("token", False),
        "kept pretrain, entity masking + fusion + dEA": ("entity", True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        template = build_run(root, args.max_length, args.steps)
        # warm-up (imports, allocator)
        hf_round(template, root, 2, args.batch)
        kept_round(template, root, 2, args.batch, "token", False)
        loop: dict[str, list[float]] = {name: [] for name in variants}
        total: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, spec in variants.items():
                step, cpu = (
                    hf_round(template, root, args.steps, args.batch)
                    if spec is None
                    else kept_round(template, root, args.steps, args.batch, *spec)
                )
                loop[name].append(step)
                total[name].append(cpu)
    reference = statistics.median(loop[next(iter(variants))])
    print(
        f"\nPretraining, {args.steps} steps x batch {args.batch} x {args.max_length} tokens, torch threads 1, "
        f"median of {args.rounds} interleaved rounds"
    )
    print(f"{'variant':64} {'loop ms/step':>13} {'CPU ms/step (whole call)':>25} {'loop vs HF':>11}")
    figures = {}
    for name in variants:
        step, cpu = statistics.median(loop[name]) * 1000, statistics.median(total[name]) * 1000
        figures[name] = {
            "loop_ms_per_step": round(step, 2),
            "cpu_ms_per_step": round(cpu, 2),
            "loop_vs_hf": round(reference * 1000 / step, 3),
        }
        print(f"{name:64} {step:13.1f} {cpu:25.1f} {reference * 1000 / step:10.2f}x")
    print(
        json.dumps(
            {
                "benchmark": "pretrain",
                "steps": args.steps,
                "batch": args.batch,
                "max_length": args.max_length,
                "rounds": args.rounds,
                "results": figures,
            }
        )
    )


if __name__ == "__main__":
    main()
