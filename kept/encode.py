"""`kept encode`: annotated corpus → tokenizer + encoded train/validation datasets.

Reads ``corpus/annotated`` (text + spans), builds the tokenizer (:mod:`kept.tokenizer`), splits the
documents into train/validation (document level, seeded), tokenises each document with
``masking.encode_with_units`` (long documents continue in further windows; optional packing) and
saves ``encoded/train`` and ``encoded/validation`` with columns input_ids, attention_mask,
unit_ids, unit_kind, entity_ids, word_ids, doc_id. ``encoded/stats.json`` summarises them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kept.config import RunConfig, resolve_init_from
from kept.errors import KeptError
from kept.rundir import atomic_dir, atomic_write_json, is_main_process, require, run_paths

ENCODED_COLUMNS = ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids", "doc_id")


@dataclass
class EncodeResult:
    tokenizer_source: str
    vocab_size: int
    stats: dict[str, Any]


def split_documents(doc_ids: list[str], validation_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """Seeded document-level split; at least one validation document when the fraction is > 0 and
    there are two or more documents."""
    unique = sorted(set(doc_ids))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val = int(round(validation_fraction * len(unique)))
    if validation_fraction > 0 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    validation = {unique[i] for i in order[:n_val]}
    return set(unique) - validation, validation


def load_annotated(run_dir: str | Path) -> Any:
    import datasets

    path = require(run_paths(run_dir).annotated, "annotated corpus (corpus/annotated)",
                   "run `kept annotate RUN_DIR` first")
    try:
        dataset = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise KeptError(f"cannot read the annotated corpus: {error}", where=path,
                        fix="re-run `kept annotate RUN_DIR`") from None
    missing = {"id", "text", "spans"} - set(dataset.column_names)
    if missing:
        raise KeptError(f"annotated corpus lacks column(s) {', '.join(sorted(missing))}", where=path,
                        fix="re-run `kept annotate RUN_DIR`")
    return dataset


def encode_split(dataset: Any, tokenizer: Any, max_length: int, packing: bool, num_proc: int = 1,
                 desc: str = "encode") -> Any:
    """Map a dataset of documents (id, text, spans) to encoded sequences."""
    from masking import encode_with_units

    def encode_batch(batch: dict[str, list]) -> dict[str, list]:
        out = encode_with_units(tokenizer, batch["text"], batch["spans"], max_length=max_length,
                                return_overflowing=True, packing=packing, doc_ids=batch["id"])
        return {name: out[name] for name in ENCODED_COLUMNS}

    return dataset.map(encode_batch, batched=True, batch_size=64, remove_columns=dataset.column_names,
                       keep_in_memory=True, num_proc=num_proc if num_proc > 1 else None, desc=desc)


def _split_stats(dataset: Any) -> dict[str, Any]:
    if len(dataset) == 0:
        return {"sequences": 0, "tokens": 0, "entity_tokens": 0, "linked_mentions": 0, "documents": 0}
    kinds = dataset["unit_kind"]
    ents = dataset["entity_ids"]
    lengths = [len(row) for row in dataset["input_ids"]]
    return {"sequences": len(dataset), "tokens": int(sum(lengths)),
            "mean_length": float(np.mean(lengths)),
            "entity_tokens": int(sum(sum(1 for k in row if k == 2) for row in kinds)),
            "phrase_tokens": int(sum(sum(1 for k in row if k == 1) for row in kinds)),
            "linked_mentions": int(sum(sum(1 for e in row if e >= 0) for row in ents)),
            "documents": len(set(dataset["doc_id"]))}


def _count_entities(paths: Any) -> int | None:
    """Rows of the run's entity table (embeddings, else kg/entities.tsv); None without a KG."""
    if paths.embeddings.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(paths.embeddings), framework="numpy") as handle:
                if "entity_embeddings" in handle.keys():
                    return int(handle.get_slice("entity_embeddings").get_shape()[0])
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types on a damaged file
            raise KeptError(f"cannot read the KG embeddings ({error})".splitlines()[0], where=paths.embeddings,
                            fix="re-run `kept kg embed RUN_DIR`") from None
    entities = paths.kg / "entities.tsv"
    if entities.is_file():
        with open(entities, "rb") as handle:
            return max(0, sum(1 for line in handle if line.strip()) - 1)  # minus the header row
    return None


def _check_entity_ids(annotated: Any, paths: Any) -> None:
    """Every linked span must name a row of the entity table (else pretraining fails much later)."""
    num_entities = _count_entities(paths)
    if num_entities is None:
        return
    for start in range(0, len(annotated), 1000):
        batch = annotated[start:start + 1000]
        for offset, spans in enumerate(batch["spans"]):
            for i, span in enumerate(spans or []):
                entity_id = span.get("entity_id")
                if entity_id is not None and not -1 <= entity_id < num_entities:
                    raise KeptError(f"document {batch['id'][offset]!r} spans[{i}] links to entity id {entity_id}, "
                                    f"but the KG has {num_entities} entities", where=paths.annotated,
                                    fix="annotate against this run's KG (kept annotate RUN_DIR) or rebuild the KG")


def encode_run(run_dir: str | Path, config: RunConfig, log: Callable[[str], None] = lambda _: None) -> EncodeResult:
    """Build RUN_DIR/tokenizer and RUN_DIR/encoded/{train,validation} from corpus/annotated."""
    from kept.tokenizer import build_tokenizer

    paths = run_paths(run_dir)
    annotated = load_annotated(run_dir)
    if len(annotated) == 0:
        raise KeptError("the annotated corpus has no documents", where=paths.annotated)
    _check_entity_ids(annotated, paths)
    init_from = resolve_init_from(config.model.init_from, config.runs_dir)
    tok_cfg = config.tokenizer
    tokenizer, source = build_tokenizer((t for t in annotated["text"]), base_model=tok_cfg.base_model,
                                        init_from=init_from, vocab_size=tok_cfg.vocab_size,
                                        min_frequency=tok_cfg.min_frequency, lowercase=tok_cfg.lowercase)
    log(f"tokenizer: {source} ({len(tokenizer)} tokens)")
    enc = config.encode
    limit = getattr(tokenizer, "model_max_length", None)
    if limit and limit < 10**6 and enc.max_length > limit:
        raise KeptError(f"encode.max_length {enc.max_length} exceeds the tokenizer's limit {limit}",
                        where="encode.max_length", fix=f"use at most {limit}")
    train_ids, val_ids = split_documents(list(annotated["id"]), enc.validation_fraction, enc.seed)
    ids = annotated["id"]
    train_docs = annotated.select([i for i, d in enumerate(ids) if d in train_ids])
    val_docs = annotated.select([i for i, d in enumerate(ids) if d in val_ids])
    train = encode_split(train_docs, tokenizer, enc.max_length, enc.packing, enc.num_proc, "encode train")
    validation = encode_split(val_docs, tokenizer, enc.max_length, enc.packing, enc.num_proc, "encode validation")
    if len(train) == 0:
        raise KeptError("encoding produced no training sequences", where=paths.annotated,
                        fix="check that the corpus has text")
    stats = {"tokenizer": source, "vocab_size": len(tokenizer), "max_length": enc.max_length,
             "packing": enc.packing, "train": _split_stats(train), "validation": _split_stats(validation)}
    if is_main_process():
        # tokenizer/ and encoded/ belong together: both are written beside the old ones first and
        # swapped in only when both are complete (a failure leaves the previous pair untouched)
        with atomic_dir(paths.tokenizer) as tokenizer_tmp:
            tokenizer.save_pretrained(str(tokenizer_tmp))
            with atomic_dir(paths.encoded) as tmp:
                train.save_to_disk(str(tmp / "train"))
                validation.save_to_disk(str(tmp / "validation"))
                atomic_write_json(tmp / "stats.json", stats)
    log(f"encoded: {stats['train']['sequences']} train / {stats['validation']['sequences']} validation sequences")
    return EncodeResult(source, len(tokenizer), stats)


def load_encoded(run_dir: str | Path, split: str) -> Any:
    import datasets

    paths = run_paths(run_dir)
    path = require(paths.encoded / split, f"encoded {split} split", "run `kept encode RUN_DIR` first")
    dataset = datasets.load_from_disk(str(path))
    missing = {"input_ids", "unit_ids", "unit_kind", "entity_ids"} - set(dataset.column_names)
    if missing:
        raise KeptError(f"encoded {split} lacks column(s) {', '.join(sorted(missing))}", where=path,
                        fix="re-run `kept encode RUN_DIR`")
    return dataset
