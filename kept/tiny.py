"""A tiny synthetic run directory (seconds to build and train): for tests and smoke checks.

``make_tiny_run(run_dir)`` writes a small KG (capitals, rivers, languages), template sentences
with gold entity spans linked to it, the annotated corpus (no spaCy needed), random KG embeddings
and a config.yaml sized for ~10 CPU training steps. ``kept encode`` and ``kept pretrain`` then
run on it as on a real run.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from kept.rundir import atomic_dir, atomic_write_bytes, atomic_write_text, run_paths

_FACTS = [
    ("Paris", "capital_of", "France"),
    ("Berlin", "capital_of", "Germany"),
    ("Rome", "capital_of", "Italy"),
    ("Madrid", "capital_of", "Spain"),
    ("Lisbon", "capital_of", "Portugal"),
    ("Vienna", "capital_of", "Austria"),
    ("Seine", "flows_through", "France"),
    ("Rhine", "flows_through", "Germany"),
    ("Tiber", "flows_through", "Italy"),
    ("Danube", "flows_through", "Austria"),
    ("Tagus", "flows_through", "Spain"),
    ("French", "spoken_in", "France"),
    ("German", "spoken_in", "Germany"),
    ("Italian", "spoken_in", "Italy"),
    ("Spanish", "spoken_in", "Spain"),
    ("Portuguese", "spoken_in", "Portugal"),
]
_TEMPLATES = {
    "capital_of": ["{h} is the capital city of {t} .", "The government of {t} sits in {h} ."],
    "flows_through": ["The river {h} flows through {t} .", "Boats on the {h} cross {t} every day ."],
    "spoken_in": ["Most people in {t} speak {h} .", "{h} is the main language of {t} ."],
}
TINY_CONFIG = """\
name: {name}
data: {{source: files, corpus: {corpus}, kg_triples: {triples}}}
kg: {{model: TransE, dim: {entity_dim}, epochs: 5, batch_size: 16, split: none}}
annotation: {{detectors: [{{type: gold, link: false}}]}}
tokenizer: {{vocab_size: 200, min_frequency: 1}}
encode: {{max_length: 32, validation_fraction: 0.2, seed: 0}}
masking: {{strategy: {strategy}, seed: 0}}
model:
  preset: tiny
  fusion: {fusion}
  overrides: {{hidden_size: 32, num_hidden_layers: 1, num_knowledge_layers: 1, num_attention_heads: 2,
              intermediate_size: 64, dea_num_negatives: 4, hidden_dropout_prob: 0.1}}
train: {{max_steps: {steps}, batch_size: 4, learning_rate: 0.001, warmup_steps: 1, seed: 0,
        eval_steps: {save_steps}, save_steps: {save_steps}, logging_steps: 1, save_total_limit: 3}}
"""


def tiny_documents(n_docs: int = 24, seed: int = 0) -> tuple[list[dict[str, Any]], list[str]]:
    """Documents of 2–4 template sentences with gold spans; and the entity names (id = index)."""
    entities = sorted({h for h, _, _ in _FACTS} | {t for _, _, t in _FACTS})
    index = {name: i for i, name in enumerate(entities)}
    rng = random.Random(seed)
    documents = []
    for number in range(n_docs):
        text = ""
        spans: list[dict[str, Any]] = []
        for _ in range(rng.randint(2, 4)):
            head, relation, tail = rng.choice(_FACTS)
            template = rng.choice(_TEMPLATES[relation])
            sentence = template.format(h=head, t=tail)
            base = len(text)
            for name in (head, tail):
                start = base + sentence.index(name)
                spans.append(
                    {
                        "start": start,
                        "end": start + len(name),
                        "kind": "entity",
                        "label": "",
                        "entity_id": index[name],
                        "source": "gold",
                    }
                )
            text += sentence + " "
        spans.sort(key=lambda s: s["start"])
        documents.append({"id": f"doc{number}", "title": f"Doc {number}", "text": text.strip(), "spans": spans})
    return documents, entities


def make_tiny_run(
    run_dir: str | Path,
    *,
    name: str = "tiny",
    n_docs: int = 24,
    steps: int = 10,
    save_steps: int = 5,
    strategy: str = "entity",
    fusion: bool = True,
    entity_dim: int = 16,
    seed: int = 0,
) -> Path:
    """Write a tiny run directory ready for ``kept encode`` (config, corpus, annotation, KG embeddings)."""
    import torch
    from safetensors.torch import save as safetensors_bytes

    from kept.corpus import documents_to_dataset, write_documents

    run_dir = Path(run_dir)
    paths = run_paths(run_dir)
    documents, entities = tiny_documents(n_docs, seed)
    relations = sorted({r for _, r, _ in _FACTS})
    write_documents(documents, paths.documents)
    # the same data as source files, for `kept run` (data.source: files)
    source = run_dir / "source"
    write_documents(documents, source / "corpus.jsonl")
    atomic_write_text(
        source / "triples.tsv", "head\trelation\ttail\n" + "".join(f"{h}\t{r}\t{t}\n" for h, r, t in _FACTS)
    )
    with atomic_dir(paths.annotated) as tmp:
        documents_to_dataset(documents).save_to_disk(str(tmp))
    paths.kg.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        paths.kg / "entities.tsv",
        "id\tname\tlabel\taliases\n" + "".join(f"{i}\t{e}\t{e}\t\n" for i, e in enumerate(entities)),
    )
    atomic_write_text(
        paths.kg / "relations.tsv", "id\tname\tlabel\n" + "".join(f"{i}\t{r}\t{r}\n" for i, r in enumerate(relations))
    )
    atomic_write_text(
        paths.kg / "triples.tsv", "head\trelation\ttail\n" + "".join(f"{h}\t{r}\t{t}\n" for h, r, t in _FACTS)
    )
    generator = torch.Generator().manual_seed(seed)
    atomic_write_bytes(
        paths.embeddings,
        safetensors_bytes(
            {
                "entity_embeddings": torch.randn(len(entities), entity_dim, generator=generator),
                "relation_embeddings": torch.randn(len(relations), entity_dim, generator=generator),
            },
            metadata={"model": "random", "dim": str(entity_dim)},
        ),
    )
    atomic_write_text(
        paths.config,
        TINY_CONFIG.format(
            name=name,
            strategy=strategy,
            fusion=str(fusion).lower(),
            steps=steps,
            save_steps=save_steps,
            corpus=(source / "corpus.jsonl").resolve(),
            triples=(source / "triples.tsv").resolve(),
            entity_dim=entity_dim,
        ),
    )
    return run_dir
