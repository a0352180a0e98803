"""KG embeddings: KEPT's wrapper (kg.train_embeddings) vs plain ``pykeen.pipeline.pipeline`` on UMLS.

Same configuration and seed, in one process, runs alternating; reports the median wall time of each,
their ratio (goal <= 1.05) and the MRR / hits@10 difference (goal 0: the same computation).
Our side includes building the graph from PyKEEN's files, our-id TriplesFactories, training,
evaluation and extracting the matrices; PyKEEN's side loads the dataset and runs the pipeline.

    .venv/bin/python benchmarks/bench_kg_embed.py [--repeats 5] [--epochs 20] [--dim 100]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="umls")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from pykeen.pipeline import pipeline

    from kg import EmbeddingConfig, load_pykeen_dataset, train_embeddings
    from kg.embeddings import pipeline_kwargs, rank_metrics

    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    config = EmbeddingConfig(model="TransE", dim=args.dim, epochs=args.epochs, seed=args.seed)
    kwargs = pipeline_kwargs(config, load_pykeen_dataset(args.dataset).num_entities)

    def ours() -> tuple[float, float, dict[str, float]]:
        start, cpu = time.perf_counter(), time.process_time()
        result = train_embeddings(load_pykeen_dataset(args.dataset), config)
        return (
            time.perf_counter() - start,
            time.process_time() - cpu,
            {k: result.metrics[k] for k in ("mrr", "hits_at_1", "hits_at_10")},
        )

    def plain() -> tuple[float, float, dict[str, float]]:
        start, cpu = time.perf_counter(), time.process_time()
        result = pipeline(dataset=args.dataset, **kwargs)
        return time.perf_counter() - start, time.process_time() - cpu, rank_metrics(result.metric_results)

    ours()  # warm-up: imports, PyKEEN's dataset cache
    times: dict[str, list[float]] = {"kept": [], "pykeen": []}
    cpu_times: dict[str, list[float]] = {"kept": [], "pykeen": []}
    metrics: dict[str, dict[str, float]] = {}
    for repeat in range(args.repeats):
        order = (("kept", ours), ("pykeen", plain)) if repeat % 2 == 0 else (("pykeen", plain), ("kept", ours))
        for name, run in order:
            seconds, cpu_seconds, values = run()
            times[name].append(seconds)
            cpu_times[name].append(cpu_seconds)
            metrics[name] = values
    median = {name: statistics.median(values) for name, values in times.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu_times.items()}
    ratio = median["kept"] / median["pykeen"]
    cpu_ratio = cpu_median["kept"] / cpu_median["pykeen"]
    mrr_diff = abs(metrics["kept"]["mrr"] - metrics["pykeen"]["mrr"])
    hits_diff = abs(metrics["kept"]["hits_at_10"] - metrics["pykeen"]["hits_at_10"])

    print(
        f"TransE on {args.dataset}: dim {args.dim}, {args.epochs} epochs, batch {config.batch_size}, "
        f"lr {config.learning_rate}, seed {args.seed}, {args.threads} torch thread(s), {args.repeats} alternating runs"
    )
    print(f"{'':22}{'wall s':>8}{'cpu s':>8}{'wall runs s':>36}{'MRR':>9}{'hits@1':>9}{'hits@10':>9}")
    for name, label in (("kept", "kg.train_embeddings"), ("pykeen", "pykeen pipeline")):
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        m = metrics[name]
        print(
            f"{label:22}{median[name]:>8.2f}{cpu_median[name]:>8.2f}{runs:>36}"
            f"{m['mrr']:>9.4f}{m['hits_at_1']:>9.4f}{m['hits_at_10']:>9.4f}"
        )
    print(
        f"median time ratio kept/pykeen: wall {ratio:.3f}, cpu {cpu_ratio:.3f} (goal <= 1.05); "
        f"|MRR diff| = {mrr_diff:.2e}; |hits@10 diff| = {hits_diff:.2e}"
    )
    print(
        json.dumps(
            {
                "benchmark": "kg_embed",
                "dataset": args.dataset,
                "model": "TransE",
                "dim": args.dim,
                "epochs": args.epochs,
                "seed": args.seed,
                "repeats": args.repeats,
                "kept_median_s": round(median["kept"], 3),
                "pykeen_median_s": round(median["pykeen"], 3),
                "time_ratio": round(ratio, 4),
                "kept_cpu_median_s": round(cpu_median["kept"], 3),
                "pykeen_cpu_median_s": round(cpu_median["pykeen"], 3),
                "cpu_time_ratio": round(cpu_ratio, 4),
                "goal_ratio": 1.05,
                "mrr_kept": metrics["kept"]["mrr"],
                "mrr_pykeen": metrics["pykeen"]["mrr"],
                "mrr_abs_diff": mrr_diff,
                "hits_at_10_abs_diff": hits_diff,
            }
        )
    )


if __name__ == "__main__":
    main()
