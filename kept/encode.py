"""`kept encode`: annotated corpus → tokenizer + encoded train/validation datasets.

Reads ``corpus/annotated`` (text + spans), builds the tokenizer (:mod:`kept.tokenizer`), splits the
documents into train/validation (document level, seeded), tokenises each document with
``masking.encode_with_units`` (long documents continue in further windows; optional packing) and
saves ``encoded/train`` and ``encoded/validation`` with columns input_ids, attention_mask,
unit_ids, unit_kind, entity_ids, word_ids, doc_id. ``encoded/stats.json`` summarises them.

With ``encode.sentence_pairs`` every sequence is instead an ALBERT sentence-order pair
(``masking.pairs``: two consecutive segments of one document cut at sentence/unit boundaries,
swapped half the time, seeded by ``encode.seed``), with the further columns token_type_ids and
sentence_order_label; ``model.overrides.use_sop`` trains on them and is refused without them
(:func:`check_sentence_pairs`, called by `kept pretrain`).

Word units come from ``encode.segmenter`` (``masking.segmenters``: jieba, pkuseg, spacy:<pipeline>;
none = whitespace words, CJK characters one word each) or a callable given to ``encode_run``. The
share of [UNK] tokens is reported (stats.json ``unk_rate``, the log) and an encoding above
``encode.max_unk_rate`` is refused before anything is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from kept.config import RunConfig, resolve_init_from
from kept.errors import KeptError
from kept.rundir import atomic_dir, atomic_write_json, is_main_process, require, run_paths
from masking.align import Segmenter

logger = logging.getLogger(__name__)

ENCODED_COLUMNS = ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids", "doc_id")
#: The further columns of sentence-order pairs (encode.sentence_pairs).
PAIR_ONLY_COLUMNS = ("token_type_ids", "sentence_order_label")


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

    path = require(
        run_paths(run_dir).annotated, "annotated corpus (corpus/annotated)", "run `kept annotate RUN_DIR` first"
    )
    try:
        dataset = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise KeptError(
            f"cannot read the annotated corpus: {error}", where=path, fix="re-run `kept annotate RUN_DIR`"
        ) from None
    missing = {"id", "text", "spans"} - set(dataset.column_names)
    if missing:
        raise KeptError(
            f"annotated corpus lacks column(s) {', '.join(sorted(missing))}",
            where=path,
            fix="re-run `kept annotate RUN_DIR`",
        )
    return dataset


def encode_split(
    dataset: Any,
    tokenizer: Any,
    max_length: int,
    packing: bool,
    num_proc: int = 1,
    desc: str = "encode",
    segmenter: Optional[Segmenter] = None,
    sentence_pairs: bool = False,
    seed: int = 0,
) -> Any:
    """Map a dataset of documents (id, text, spans) to encoded sequences (words from ``segmenter``);
    with ``sentence_pairs`` to sentence-order pairs (``masking.pairs``, seeded by ``seed``)."""
    from masking import encode_with_units
    from masking.pairs import encode_sentence_pairs

    columns = ENCODED_COLUMNS + (PAIR_ONLY_COLUMNS if sentence_pairs else ())

    def encode_batch(batch: dict[str, list]) -> dict[str, list]:
        if sentence_pairs:
            out = encode_sentence_pairs(
                tokenizer,
                batch["text"],
                batch["spans"],
                max_length=max_length,
                seed=seed,
                segmenter=segmenter,
                doc_ids=batch["id"],
            )
        else:
            out = encode_with_units(
                tokenizer,
                batch["text"],
                batch["spans"],
                max_length=max_length,
                return_overflowing=True,
                packing=packing,
                doc_ids=batch["id"],
                segmenter=segmenter,
            )
        return {name: out[name] for name in columns}

    return dataset.map(
        encode_batch,
        batched=True,
        batch_size=64,
        remove_columns=dataset.column_names,
        keep_in_memory=True,
        num_proc=num_proc if num_proc > 1 else None,
        desc=desc,
    )


def _unk_count(dataset: Any, tokenizer: Any) -> tuple[int, int]:
    """(content tokens, [UNK] tokens) of an encoded split; special tokens are not counted."""
    import pyarrow.compute as pc

    if len(dataset) == 0:
        return 0, 0
    ids = pc.list_flatten(dataset.with_format("arrow")["input_ids"]).to_numpy()
    unk_id = tokenizer.unk_token_id
    special = sorted(set(tokenizer.all_special_ids) - {unk_id})  # [UNK] is text the vocabulary lacks
    content = ~np.isin(ids, np.asarray(special, dtype=ids.dtype))
    unk = 0 if unk_id is None else int(np.count_nonzero(ids[content] == unk_id))
    return int(np.count_nonzero(content)), unk


def check_unk_rate(unk_rate: float, max_unk_rate: Optional[float], tokenizer_source: str) -> None:
    """Refuse an encoding whose share of [UNK] tokens is above ``encode.max_unk_rate`` (None: never)."""
    if max_unk_rate is None or unk_rate <= max_unk_rate:
        return
    raise KeptError(
        f"{unk_rate:.1%} of the corpus tokens are [UNK] with the tokenizer {tokenizer_source} "
        f"(encode.max_unk_rate {max_unk_rate:g})",
        where="encode.max_unk_rate",
        fix="train a tokenizer on this corpus (leave tokenizer.base_model and model.init_from unset), "
        "or choose a base model whose vocabulary covers the script of the corpus "
        "(encode.max_unk_rate: null accepts it)",
    )


def _split_stats(dataset: Any) -> dict[str, Any]:
    if len(dataset) == 0:
        return {"sequences": 0, "tokens": 0, "entity_tokens": 0, "linked_mentions": 0, "documents": 0}
    kinds = dataset["unit_kind"]
    ents = dataset["entity_ids"]
    lengths = [len(row) for row in dataset["input_ids"]]
    stats = {
        "sequences": len(dataset),
        "tokens": int(sum(lengths)),
        "mean_length": float(np.mean(lengths)),
        "entity_tokens": int(sum(sum(1 for k in row if k == 2) for row in kinds)),
        "phrase_tokens": int(sum(sum(1 for k in row if k == 1) for row in kinds)),
        "linked_mentions": int(sum(sum(1 for e in row if e >= 0) for row in ents)),
        "documents": len(set(dataset["doc_id"])),
    }
    if "sentence_order_label" in dataset.column_names:
        stats["swapped_pairs"] = int(sum(dataset["sentence_order_label"]))
    return stats


def _count_entities(paths: Any) -> int | None:
    """Rows of the run's entity table (embeddings, else kg/entities.tsv); None without a KG."""
    if paths.embeddings.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(paths.embeddings), framework="numpy") as handle:
                if "entity_embeddings" in handle.keys():
                    return int(handle.get_slice("entity_embeddings").get_shape()[0])
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types on a damaged file
            raise KeptError(
                f"cannot read the KG embeddings ({error})".splitlines()[0],
                where=paths.embeddings,
                fix="re-run `kept kg embed RUN_DIR`",
            ) from None
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
        batch = annotated[start : start + 1000]
        for offset, spans in enumerate(batch["spans"]):
            for i, span in enumerate(spans or []):
                entity_id = span.get("entity_id")
                if entity_id is not None and not -1 <= entity_id < num_entities:
                    raise KeptError(
                        f"document {batch['id'][offset]!r} spans[{i}] links to entity id {entity_id}, "
                        f"but the KG has {num_entities} entities",
                        where=paths.annotated,
                        fix="annotate against this run's KG (kept annotate RUN_DIR) or rebuild the KG",
                    )


def _segmenter(name: str, given: Optional[Segmenter]) -> tuple[Optional[Segmenter], str]:
    """The segmenter to use (``given`` callable, else the named one) and how stats.json names it."""
    from masking.errors import MaskingError
    from masking.segmenters import build_segmenter

    if given is not None:
        return (
            given,
            f"callable:{getattr(given, '__module__', '?')}.{getattr(given, '__qualname__', type(given).__name__)}",
        )
    try:
        return build_segmenter(name), name
    except MaskingError as error:
        raise KeptError(error.what, where=error.where, fix=error.fix) from None


def encode_run(
    run_dir: str | Path,
    config: RunConfig,
    segmenter: Optional[Segmenter] = None,
) -> EncodeResult:
    """Build RUN_DIR/tokenizer and RUN_DIR/encoded/{train,validation} from corpus/annotated.

    ``segmenter``: a callable (text -> words or (start, end) offsets) used instead of ``encode.segmenter``.
    """
    from kept.tokenizer import build_tokenizer

    paths = run_paths(run_dir)
    annotated = load_annotated(run_dir)
    if len(annotated) == 0:
        raise KeptError("the annotated corpus has no documents", where=paths.annotated)
    _check_entity_ids(annotated, paths)
    segment, segmenter_name = _segmenter(config.encode.segmenter, segmenter)  # a missing package fails first
    init_from = resolve_init_from(config.model.init_from, config.runs_dir)
    tok_cfg = config.tokenizer
    tokenizer, source = build_tokenizer(
        (t for t in annotated["text"]),
        base_model=tok_cfg.base_model,
        init_from=init_from,
        vocab_size=tok_cfg.vocab_size,
        min_frequency=tok_cfg.min_frequency,
        lowercase=tok_cfg.lowercase,
    )
    logger.info(f"tokenizer: {source} ({len(tokenizer)} tokens); segmenter: {segmenter_name}")
    enc = config.encode
    limit = getattr(tokenizer, "model_max_length", None)
    if limit and limit < 10**6 and enc.max_length > limit:
        raise KeptError(
            f"encode.max_length {enc.max_length} exceeds the tokenizer's limit {limit}",
            where="encode.max_length",
            fix=f"use at most {limit}",
        )
    train_ids, val_ids = split_documents(list(annotated["id"]), enc.validation_fraction, enc.seed)
    ids = annotated["id"]
    train_docs = annotated.select([i for i, d in enumerate(ids) if d in train_ids])
    val_docs = annotated.select([i for i, d in enumerate(ids) if d in val_ids])
    pairs: dict[str, Any] = {"sentence_pairs": enc.sentence_pairs, "seed": enc.seed}
    train = encode_split(
        train_docs, tokenizer, enc.max_length, enc.packing, enc.num_proc, "encode train", segment, **pairs
    )
    validation = encode_split(
        val_docs, tokenizer, enc.max_length, enc.packing, enc.num_proc, "encode validation", segment, **pairs
    )
    if len(train) == 0:
        raise KeptError(
            "encoding produced no training sequences", where=paths.annotated, fix="check that the corpus has text"
        )
    counts = [_unk_count(split, tokenizer) for split in (train, validation)]
    content_tokens, unk_tokens = (sum(c[i] for c in counts) for i in (0, 1))
    unk_rate = unk_tokens / content_tokens if content_tokens else 0.0
    logger.info(f"[UNK] rate: {unk_rate:.2%} ({unk_tokens} of {content_tokens} tokens)")
    check_unk_rate(unk_rate, enc.max_unk_rate, source)
    stats: dict[str, Any] = {
        "tokenizer": source,
        "vocab_size": len(tokenizer),
        "max_length": enc.max_length,
        "packing": enc.packing,
        "sentence_pairs": enc.sentence_pairs,
        "segmenter": segmenter_name,
        "unk_rate": unk_rate,
        "unk_tokens": unk_tokens,
        "train": _split_stats(train),
        "validation": _split_stats(validation),
    }
    if is_main_process():
        # tokenizer/ and encoded/ belong together: both are written beside the old ones first and
        # swapped in only when both are complete (a failure leaves the previous pair untouched)
        with atomic_dir(paths.tokenizer) as tokenizer_tmp:
            tokenizer.save_pretrained(str(tokenizer_tmp))
            with atomic_dir(paths.encoded) as tmp:
                train.save_to_disk(str(tmp / "train"))
                validation.save_to_disk(str(tmp / "validation"))
                atomic_write_json(tmp / "stats.json", stats)
    logger.info(
        f"encoded: {stats['train']['sequences']} train / {stats['validation']['sequences']} validation sequences"
    )
    return EncodeResult(source, len(tokenizer), stats)


def load_encoded(run_dir: str | Path, split: str) -> Any:
    import datasets

    paths = run_paths(run_dir)
    path = require(paths.encoded / split, f"encoded {split} split", "run `kept encode RUN_DIR` first")
    dataset = datasets.load_from_disk(str(path))
    missing = {"input_ids", "unit_ids", "unit_kind", "entity_ids"} - set(dataset.column_names)
    if missing:
        raise KeptError(
            f"encoded {split} lacks column(s) {', '.join(sorted(missing))}",
            where=path,
            fix="re-run `kept encode RUN_DIR`",
        )
    return dataset


def has_sentence_pairs(dataset: Any) -> bool:
    """Whether an encoded split holds sentence-order pairs (encode.sentence_pairs)."""
    return set(PAIR_ONLY_COLUMNS) <= set(dataset.column_names)


def check_sentence_pairs(use_sop: bool, type_vocab_size: int, dataset: Any, where: Any) -> None:
    """Refuse SOP without pair data (its head would train on nothing), and pairs the model cannot
    embed (segment B needs token type 1). Pairs without SOP are allowed: the same inputs with the
    SOP loss off, the fair baseline of an SOP comparison."""
    pairs = has_sentence_pairs(dataset)
    if use_sop and not pairs:
        raise KeptError(
            "the model has an SOP head (use_sop) but the encoded data has no sentence pairs",
            where=where,
            fix="set encode.sentence_pairs: true and re-run `kept encode RUN_DIR` (or drop model.overrides.use_sop)",
        )
    if pairs and type_vocab_size < 2:
        raise KeptError(
            f"the encoded data is sentence pairs but the model has type_vocab_size {type_vocab_size}",
            where=where,
            fix="start from a model with two token types, or set encode.sentence_pairs: false and re-encode",
        )
