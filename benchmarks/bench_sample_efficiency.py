"""Sample efficiency: MLM vs ELECTRA (replaced-token detection) at equal training compute.

The question: for the same FLOPs, does a KEPT encoder trained with ELECTRA's objective (a generator of
``generator_fraction`` of the width fills the masked units, the KEPT model detects replaced tokens) learn
more than one trained with knowledge-masked MLM? Data: the embedded Wikipedia sample (gensim's
enwiki sample, gold links as entity mentions, infobox facts as the KG), entity masking, the tiny preset.

* compute: analytic training FLOPs per token (``fusion.electra.electra_flops_per_token``: 6 x the matmul
  multiply-adds of forward+backward: encoder layers, the MLM head on the masked 15%, for ELECTRA the
  generator, its input projection and the RTD head on every token). ELECTRA gets ``steps / ratio`` steps,
  so both runs spend the same FLOPs.
* yardstick, the same for both: a linear probe on the frozen encoder's last states (unmasked validation
  text, no fusion input): is this token part of an entity mention? (class-balanced logistic regression
  trained on half the validation sequences; balanced accuracy ("probe acc") and F1 on the other half). MLM figures of the ELECTRA discriminator mean
  nothing (its MLM head is never trained), so each run's own objective is printed beside it but not compared.
* checkpoints: the probe runs at a few equal-FLOPs points of each training (a Trainer callback).

    .venv/bin/python benchmarks/bench_sample_efficiency.py [--size cpu|gpu] [--out DIR]

The last line printed is a JSON object with every checkpoint and the ELECTRA/MLM ratios at equal FLOPs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: MLM steps (ELECTRA gets steps / FLOPs ratio), batch, max_length, documents, probe points, probe sequences.
SIZES: dict[str, dict[str, Any]] = {
    "cpu": {"steps": 240, "batch": 8, "max_length": 64, "documents": 12, "points": 3, "probe_rows": 96, "kg_epochs": 5},
    "gpu": {
        "steps": 3000,
        "batch": 64,
        "max_length": 128,
        "documents": 107,
        "points": 6,
        "probe_rows": 1024,
        "kg_epochs": 50,
    },
}


def base_config(size: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "name": name,
        "data": {"source": "wikipedia_sample", "max_documents": size["documents"]},
        "kg": {"model": "TransE", "dim": 32, "epochs": size["kg_epochs"], "split": "none"},
        "annotation": {"detectors": [{"type": "gold", "link": True}]},
        "tokenizer": {"vocab_size": 4000, "min_frequency": 2},
        "encode": {"max_length": size["max_length"], "validation_fraction": 0.15, "seed": 0},
        "masking": {"strategy": "entity", "seed": 0},
        "model": {"preset": "tiny", "fusion": False},
        "train": {
            "max_steps": size["steps"],
            "batch_size": size["batch"],
            "learning_rate": 5e-4,
            "warmup_steps": max(1, size["steps"] // 10),
            "seed": 0,
            "logging_steps": 10,
            "eval_steps": size["steps"],
            "save_steps": 100000,
            "report_to": [],
        },
    }


def probe_rows(run_dir: Path, limit: int) -> list[dict[str, Any]]:
    from kept.encode import load_encoded

    validation = load_encoded(run_dir, "validation")
    return validation.select(range(min(limit, len(validation)))).to_list()


def entity_probe(encoder: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Linear probe on frozen last states: token in an entity mention? Train on even rows, test on odd."""
    import torch

    was_training = encoder.training
    encoder.eval()
    feats, labels, parity = [], [], []
    with torch.no_grad():
        for i, row in enumerate(rows):
            ids = torch.tensor([row["input_ids"]])
            states = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]  # [L, H]
            content = torch.tensor(row["unit_ids"]) >= 0
            feats.append(states[content])
            labels.append((torch.tensor(row["unit_kind"])[content] == 2).float())
            parity.append(torch.full((int(content.sum()),), i % 2))
    encoder.train(was_training)
    x, y, part = torch.cat(feats), torch.cat(labels), torch.cat(parity)
    x = (x - x[part == 0].mean(0)) / (x[part == 0].std(0) + 1e-6)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")
    train_x, train_y = x[part == 0], y[part == 0]
    balance = (train_y.numel() - train_y.sum()) / train_y.sum().clamp(min=1)  # mentions are ~7% of the tokens

    def closure() -> Any:
        optimizer.zero_grad()
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(train_x @ w + b, train_y, pos_weight=balance)
            + 1e-3 * w.pow(2).sum()
        )
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = ((x[part == 1] @ w + b) > 0).float()
        gold = y[part == 1]
        tp = float((predicted * gold).sum())
        precision = tp / max(float(predicted.sum()), 1.0)
        recall = tp / max(float(gold.sum()), 1.0)
        f1 = 2 * precision * recall / max(precision + recall, 1e-9)
        balanced = 0.5 * (recall + float(((1 - predicted) * (1 - gold)).sum()) / max(float((1 - gold).sum()), 1.0))
        return {"probe_accuracy": balanced, "probe_f1": f1, "entity_share": float(gold.mean())}


def probe_callback(
    rows: list[dict[str, Any]],
    at_steps: list[int],
    flops_per_step: float,
    records: list[dict[str, Any]],
    objective: str,
) -> Any:
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
            if state.global_step in at_steps:
                encoder = getattr(model, "discriminator", model).kept
                last = next((e for e in reversed(state.log_history) if "loss" in e), {})
                own = {k: last[k] for k in ("mlm_loss", "generator_mlm_loss", "rtd_loss", "rtd_accuracy") if k in last}
                records.append(
                    {
                        "objective": objective,
                        "step": state.global_step,
                        "pflops": state.global_step * flops_per_step / 1e15,
                        **entity_probe(encoder, rows),
                        **own,
                    }
                )
            return control

    return Probe()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--out", default="runs/bench_sample_efficiency")
    args = parser.parse_args()
    import torch

    from fusion import KeptConfig
    from fusion.electra import electra_flops_per_token
    from kept.config import RunConfig
    from kept.pretrain import pretrain_run
    from kept.runner import run_pipeline
    from kept.tokenizer import load_run_tokenizer

    size = SIZES[args.size]
    out = Path(args.out)
    started = time.time()
    prepared = out / "prepared"
    config = RunConfig.model_validate(base_config(size, "prepared"))
    run_pipeline(config, prepared, stages=["data", "kg", "annotate", "encode"], progress=False)
    prepared_s = time.time() - started
    rows = probe_rows(prepared, size["probe_rows"])
    vocab = len(load_run_tokenizer(prepared / "tokenizer"))
    model_config = KeptConfig.from_preset("tiny", vocab_size=vocab, entity_dim=32)
    fraction = 0.25
    flops = electra_flops_per_token(model_config, fraction, size["max_length"])
    tokens_per_step = size["batch"] * size["max_length"]
    plans = {"mlm": size["steps"], "electra": max(1, round(size["steps"] / flops["ratio"]))}
    records: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for objective, steps in plans.items():
        run_dir = out / objective
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(prepared, run_dir)
        values = base_config(size, objective)
        values["model"].update(objective=objective, generator_fraction=fraction)
        values["train"].update(max_steps=steps, eval_steps=steps)
        run_config = RunConfig.model_validate(values)
        points = sorted({max(1, round(steps * (i + 1) / size["points"])) for i in range(size["points"])})
        per_step = flops[objective] * tokens_per_step
        torch.manual_seed(0)
        begun = time.time()
        pretrain_run(
            run_dir,
            run_config,
            restart=True,
            progress=False,
            extra_callbacks=[probe_callback(rows, points, per_step, records, objective)],
        )
        timings[objective] = round(time.time() - begun, 1)

    print(
        f"analytic training FLOPs per token: MLM {flops['mlm'] / 1e6:.2f}M, ELECTRA {flops['electra'] / 1e6:.2f}M "
        f"(ratio {flops['ratio']:.3f}); steps: MLM {plans['mlm']}, ELECTRA {plans['electra']}"
    )
    print(f"{'objective':<9} {'step':>5} {'PFLOPs':>9} {'probe acc':>9} {'probe F1':>8}  own objective")
    for r in records:
        own = ", ".join(
            f"{k}={r[k]:.3f}" for k in ("mlm_loss", "generator_mlm_loss", "rtd_loss", "rtd_accuracy") if k in r
        )
        print(
            f"{r['objective']:<9} {r['step']:>5} {r['pflops']:>9.5f} {r['probe_accuracy']:>9.3f} "
            f"{r['probe_f1']:>8.3f}  {own}"
        )
    finals = {o: next(r for r in reversed(records) if r["objective"] == o) for o in plans}
    ratios = {k: finals["electra"][k] / max(finals["mlm"][k], 1e-9) for k in ("pflops", "probe_accuracy", "probe_f1")}
    print("ELECTRA / MLM at the end of equal budgets: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    print(
        json.dumps(
            {
                "size": args.size,
                "flops_per_token": flops,
                "steps": plans,
                "records": records,
                "ratios_at_end": ratios,
                "seconds": {"prepare": round(prepared_s, 1), **timings, "total": round(time.time() - started, 1)},
            }
        )
    )


if __name__ == "__main__":
    main()
