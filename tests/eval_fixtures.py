"""Builders for the evaluate/compare/report/analysis tests: a tiny tokenizer, stub models whose
logits the test controls, and a complete tiny run directory (KG, corpus, encoded data, model)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

SENTENCES = [
    "Paris is the capital of France and lies on the Seine.",
    "Berlin is the capital of Germany and lies on the Spree.",
    "Rome is the capital of Italy and lies on the Tiber.",
    "Madrid is the capital of Spain.",
    "Vienna is the capital of Austria and lies on the Danube.",
    "Marie Curie was born in Warsaw and worked in Paris.",
    "Albert Einstein was born in Ulm and worked in Berlin.",
    "The Seine flows through Paris into the sea.",
    "The Danube flows through Vienna and Budapest.",
    "Warsaw is the capital of Poland.",
]

# (name, label, aliases)
ENTITIES = [
    ("paris", "Paris", []),
    ("france", "France", []),
    ("berlin", "Berlin", []),
    ("germany", "Germany", []),
    ("rome", "Rome", []),
    ("italy", "Italy", []),
    ("madrid", "Madrid", []),
    ("spain", "Spain", []),
    ("vienna", "Vienna", []),
    ("austria", "Austria", []),
    ("warsaw", "Warsaw", []),
    ("poland", "Poland", []),
    ("marie_curie", "Marie Curie", ["Curie"]),
    ("albert_einstein", "Albert Einstein", ["Einstein"]),
    ("ulm", "Ulm", []),
    ("seine", "Seine", []),
    ("danube", "Danube", []),
]
RELATIONS = [("capital_of", "capital of"), ("bornIn", ""), ("lies_on", "lies on")]
TRIPLES = [
    ("paris", "capital_of", "france"),
    ("berlin", "capital_of", "germany"),
    ("rome", "capital_of", "italy"),
    ("madrid", "capital_of", "spain"),
    ("vienna", "capital_of", "austria"),
    ("warsaw", "capital_of", "poland"),
    ("marie_curie", "bornIn", "warsaw"),
    ("albert_einstein", "bornIn", "ulm"),
    ("paris", "lies_on", "seine"),
    ("vienna", "lies_on", "danube"),
]


def tiny_tokenizer(extra: Sequence[str] = ()) -> Any:
    from kept.tokenizer import train_wordpiece

    return train_wordpiece(list(SENTENCES) + list(extra), vocab_size=300, min_frequency=1)


class StubMLM(nn.Module):
    """A masked LM whose prediction is a Python function of each input row.

    ``predict(input_ids: list[int]) -> list[int]`` gives the argmax token of every position; the
    logits are ``margin`` on it and 0 elsewhere. Records whether entity_ids were passed.
    """

    def __init__(
        self,
        vocab_size: int,
        predict: Callable[[list[int]], list[int]],
        margin: float = 30.0,
        takes_entities: bool = False,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.predict = predict
        self.margin = margin
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen_entity_ids: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.takes_entities = takes_entities

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> MaskedLMOutput:
        if kwargs.get("entity_ids") is not None:
            self.seen_entity_ids.append((input_ids.clone(), kwargs["entity_ids"].clone()))
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        for i, row in enumerate(input_ids.tolist()):
            targets = torch.as_tensor(self.predict(row), dtype=torch.long)
            logits[i, torch.arange(len(row)), targets] = self.margin
        return MaskedLMOutput(logits=logits)


class ScoreMLM(nn.Module):
    """Every position gets the same logit vector (fixed scores over the vocabulary)."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores.float()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> MaskedLMOutput:
        return MaskedLMOutput(logits=self.scores.expand(*input_ids.shape, -1).clone())


def mention_spans(text: str, entity_index: dict[str, int]) -> list[dict[str, Any]]:
    """Gold entity spans of every entity label found in ``text`` (longest first, no overlaps)."""
    from masking.spans import make_span, resolve_overlaps

    spans = []
    for name, label, aliases in ENTITIES:
        for surface in [label, *aliases]:
            start = text.find(surface)
            while start >= 0:
                spans.append(make_span(start, start + len(surface), "entity", label, entity_index[name], "gold"))
                start = text.find(surface, start + 1)
    return resolve_overlaps(spans)


def encode_rows(tokenizer: Any, texts: Sequence[str], max_length: int = 32) -> list[dict[str, Any]]:
    from masking.encoding import encode_with_units

    index = {name: i for i, (name, _, _) in enumerate(ENTITIES)}
    spans = [mention_spans(text, index) for text in texts]
    columns = encode_with_units(
        tokenizer, list(texts), spans, max_length=max_length, doc_ids=[f"doc{i}" for i in range(len(texts))]
    )
    keys = ["input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "doc_id"]
    return [{k: columns[k][i] for k in keys} for i in range(len(columns["input_ids"]))]


def write_kg(kg_dir: Path, metrics: dict[str, Any] | None = None) -> None:
    kg_dir.mkdir(parents=True, exist_ok=True)
    lines = ["id\tname\tlabel\taliases"] + [
        f"{i}\t{n}\t{label}\t{'|'.join(a)}" for i, (n, label, a) in enumerate(ENTITIES)
    ]
    (kg_dir / "entities.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines = ["id\tname\tlabel"] + [f"{i}\t{n}\t{label}" for i, (n, label) in enumerate(RELATIONS)]
    (kg_dir / "relations.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines = ["head\trelation\ttail"] + ["\t".join(t) for t in TRIPLES]  # the header KnowledgeGraph.save writes
    (kg_dir / "triples.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if metrics is not None:
        (kg_dir / "kg_metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


LOG_HISTORY = [
    {"loss": 6.1, "learning_rate": 5e-4, "epoch": 0.1, "step": 10},
    {"loss": 5.2, "learning_rate": 4e-4, "epoch": 0.2, "step": 20},
    {"eval_loss": 5.4, "epoch": 0.2, "step": 20},
    {"loss": 4.6, "learning_rate": 2e-4, "epoch": 0.3, "step": 30},
    {"train_runtime": 3.2, "train_loss": 5.3, "epoch": 0.3, "step": 30},
]

ANNOTATION_STATS = {
    "documents": 10,
    "spans": 24,
    "spans_by_kind": {"entity": 20, "phrase": 4},
    "spans_by_source": {"gold": 20, "noun_chunk": 4},
    "candidates_by_source": {},
    "entity_spans": 20,
    "linked_entity_spans": 18,
    "linked_fraction": 0.9,
    "ambiguous_fraction": None,
    "counts": {"by_kind": {"entity": 20}},
}


def build_run_dir(
    root: Path,
    *,
    name: str = "tiny",
    strategy: str = "entity",
    fusion: bool = True,
    seed: int = 0,
    eval_section: dict[str, Any] | None = None,
    fewrel: Path | None = None,
    with_model: bool = True,
) -> Path:
    """A complete tiny run directory with an untrained (seeded) tiny KEPT model."""
    import datasets

    from fusion import KeptConfig, KeptForPreTraining
    from kept.config import RunConfig, save_config

    run_dir = root / name
    run_dir.mkdir(parents=True, exist_ok=True)
    section = {"max_documents": 10}
    if fewrel is not None:
        section["fewrel"] = str(fewrel)
    config = RunConfig.model_validate(
        {
            "name": name,
            "runs_dir": str(root),
            "data": section,
            "masking": {"strategy": strategy},
            "model": {"preset": "tiny", "fusion": fusion},
            "train": {"seed": seed, "max_steps": 3},
            "eval": eval_section or {},
        }
    )
    save_config(config, run_dir)
    write_kg(
        run_dir / "kg",
        {"model": "TransE", "mrr": 0.25, "hits_at_1": 0.1, "hits_at_3": 0.3, "hits_at_10": 0.6, "dim": 16},
    )
    (run_dir / "corpus").mkdir(exist_ok=True)
    (run_dir / "corpus" / "annotation_stats.json").write_text(json.dumps(ANNOTATION_STATS), encoding="utf-8")
    (run_dir / "logs").mkdir(exist_ok=True)
    (run_dir / "logs" / "train_history.json").write_text(json.dumps(LOG_HISTORY), encoding="utf-8")
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    rows = encode_rows(tokenizer, SENTENCES)
    for split, part in (("train", rows[:6]), ("validation", rows[6:] + rows[:4])):
        datasets.Dataset.from_list(part).save_to_disk(str(run_dir / "encoded" / split))
    if with_model:
        torch.manual_seed(seed)
        model_config = KeptConfig.from_preset(
            "tiny",
            vocab_size=len(tokenizer),
            entity_vocab_size=len(ENTITIES),
            entity_dim=16,
            num_entity_attention_heads=2,
            freeze_entity_table=False,
            max_position_embeddings=128,
        )
        KeptForPreTraining(model_config).save_pretrained(str(run_dir / "model"))
    return run_dir


def fake_run(root: Path, name: str, cloze: float, token_loss: float, relation: dict | None = None) -> Path:
    """A run directory holding only a hand-written eval/metrics.json (known figures)."""
    run_dir = root / name
    (run_dir / "eval").mkdir(parents=True)
    from kept.analysis.metrics import METRICS_FORMAT, METRICS_FORMAT_VERSION

    record = {
        "format": METRICS_FORMAT,
        "format_version": METRICS_FORMAT_VERSION,
        "run": name,
        "model": {"strategy": "entity", "fusion": True, "num_parameters": 10},
        "metrics": {
            "mlm": {
                "strategy": {"strategy": "entity", "loss": token_loss + 0.5, "accuracy": 0.2, "num_predicted": 90},
                "token": {"strategy": "token", "loss": token_loss, "accuracy": 0.3, "num_predicted": 100},
            },
            "cloze": {"accuracy": cloze, "piece_accuracy": cloze, "num_mentions": 50},
            "probe": {"mrr": 0.5, "hits_at_1": 0.25, "num_facts": 8, "per_relation": {"r": {"mrr": 0.5, "count": 8}}},
            "relation": relation or {"skipped": "no FewRel data configured"},
            "linkpred": {"mrr": 0.3, "hits_at_1": 0.2, "model": "TransE"},
        },
        "examples": {"cloze": [{"context": "x [MASK]", "gold": "paris", "prediction": "rome", "correct": False}]},
    }
    (run_dir / "eval" / "metrics.json").write_text(json.dumps(record), encoding="utf-8")
    return run_dir
