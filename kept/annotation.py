"""Annotation of a run directory: ``RUN_DIR/corpus/documents.jsonl`` -> ``corpus/annotated/`` (+ stats).

The pure work is ``masking.annotate`` (a ``Dataset.map``); this module owns the run-directory side: the
run's KG (alias index and labels), the entity-id check against it, shard outputs under
``corpus/annotated.shards/`` and their merge, and the atomic writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kept.errors import KeptError
from kg._io import atomic_dir, atomic_write_json
from masking.annotator import annotate_with_stats, shard_dataset
from masking.detectors.config import AnnotationConfig
from masking.documents import load_documents
from masking.errors import MaskingError
from masking.stats import finalize_stats, merge_counts


def _shard_suffix(num_shards: int, shard_index: int) -> str:
    return "" if num_shards == 1 else f"shard-{shard_index:05d}-of-{num_shards:05d}"


def _atomic_write_json(path: Path, payload: Mapping[str, Any]) -> None:
    atomic_write_json(path, payload, error=MaskingError, sort_keys=True)


def atomic_save_dataset(dataset: Any, target: str | Path) -> None:
    """``dataset.save_to_disk`` into a sibling temporary directory, then swap it in place of ``target``."""
    with atomic_dir(target, error=MaskingError) as tmp:
        dataset.save_to_disk(str(tmp))


def check_entity_ids(dataset: Any, num_entities: int, where: str | Path) -> None:
    """MaskingError when a span links to an entity id that the run's KG does not have."""
    for start in range(0, len(dataset), 1000):
        batch = dataset[start : start + 1000]
        for offset, spans in enumerate(batch["spans"]):
            for i, span in enumerate(spans or []):
                entity_id = span["entity_id"]
                if entity_id is not None and not -1 <= entity_id < num_entities:
                    raise MaskingError(
                        f"document {batch['id'][offset]!r} spans[{i}] links to entity id {entity_id}, but the KG has "
                        f"{num_entities} entities (ids 0..{num_entities - 1})",
                        where=where,
                        fix="use ids from kg/entities.tsv (or -1 for an unlinked span), or rebuild the KG that "
                        "the corpus was linked to",
                    )


def load_run_kg(run_dir: str | Path, *, required: bool = True) -> tuple[Any, list[str] | None]:
    """``(alias index, entity labels)`` from ``RUN_DIR/kg`` (aliases.tsv, else built from entities.tsv)."""
    run_dir = Path(run_dir)
    kg_dir = run_dir / "kg"
    if not (kg_dir / "entities.tsv").exists():
        if required:
            raise MaskingError(
                "no knowledge graph in the run directory",
                where=kg_dir / "entities.tsv",
                fix="build the KG first (kept data ... / kept kg ...) or annotate without the "
                "gazetteer (--detectors ner,noun_chunk,gold)",
            )
        return None, None
    from kg import AliasIndex, KnowledgeGraph

    graph = KnowledgeGraph.load(kg_dir)
    aliases_path = kg_dir / "aliases.tsv"
    if aliases_path.exists():
        alias_index = AliasIndex.load(aliases_path, num_entities=graph.num_entities)
    else:
        alias_index = AliasIndex.from_graph(graph)
    if len(alias_index) == 0 and required:
        raise MaskingError(
            "the KG has no labels or aliases to match",
            where=aliases_path,
            fix="write kg/aliases.tsv (alias, entity_id, count) or annotate without the gazetteer",
        )
    return alias_index, list(graph.entity_labels)


def annotate_run_dir(
    run_dir: str | Path,
    config: AnnotationConfig | None = None,
    *,
    num_shards: int = 1,
    shard_index: int = 0,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    merge: bool = True,
) -> dict[str, Any]:
    """Annotate ``RUN_DIR/corpus/documents.jsonl`` -> ``RUN_DIR/corpus/annotated/`` + ``annotation_stats.json``.

    With shards, writes ``annotated/shard-IIIII-of-KKKKK/`` and ``annotation_stats.shard-...json``; once all
    shards are there, ``merge_annotated_shards(run_dir)`` (called automatically by the last shard to finish)
    concatenates them (``merge=False``: never; ``annotate_shard`` merges under the exclusive lock instead).
    Returns the statistics.
    """
    config = config or AnnotationConfig()
    run_dir = Path(run_dir)
    corpus_dir = run_dir / "corpus"
    needs_gazetteer = any(d.type == "gazetteer" for d in config.detectors)
    alias_index, labels = load_run_kg(run_dir, required=needs_gazetteer and config.missing_kg == "error")
    if needs_gazetteer and alias_index is None:
        config = config.model_copy(update={"detectors": [d for d in config.detectors if d.type != "gazetteer"]})
    dataset = load_documents(
        corpus_dir / "documents.jsonl", cache_dir=corpus_dir / ".cache", undecodable=config.undecodable
    )
    if labels is not None:
        check_entity_ids(dataset, len(labels), corpus_dir / "documents.jsonl")
    if on_total is not None:
        on_total(len(shard_dataset(dataset, num_shards, shard_index)))
    annotated, stats = annotate_with_stats(
        dataset,
        config,
        alias_index,
        entity_labels=labels,
        num_shards=num_shards,
        shard_index=shard_index,
        progress=progress,
    )
    stats["kg_linked"] = alias_index is not None
    suffix = _shard_suffix(num_shards, shard_index)
    if not suffix:
        atomic_save_dataset(annotated, corpus_dir / "annotated")
        _atomic_write_json(corpus_dir / "annotation_stats.json", stats)
        return stats
    shards_dir = corpus_dir / "annotated.shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_dataset(annotated, shards_dir / suffix)
    _atomic_write_json(shards_dir / f"{suffix}.stats.json", stats)
    if merge and shards_complete(run_dir, num_shards):
        return merge_annotated_shards(run_dir, num_shards)
    return stats


def shards_complete(run_dir: str | Path, num_shards: int) -> bool:
    """Whether every shard's statistics (written after its dataset) are in ``corpus/annotated.shards/``."""
    shards_dir = Path(run_dir) / "corpus" / "annotated.shards"
    return all((shards_dir / f"{_shard_suffix(num_shards, i)}.stats.json").exists() for i in range(num_shards))


def _merged_after_shards(run_dir: Path, num_shards: int) -> bool:
    """``corpus/annotation_stats.json`` is a merge of these shards, newer than each of them."""
    stats_path = run_dir / "corpus" / "annotation_stats.json"
    shards_dir = run_dir / "corpus" / "annotated.shards"
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        newest = max(
            (shards_dir / f"{_shard_suffix(num_shards, i)}.stats.json").stat().st_mtime_ns for i in range(num_shards)
        )
        return (
            stats.get("shard") == {"num_shards": num_shards, "merged": True} and stats_path.stat().st_mtime_ns >= newest
        )
    except (OSError, ValueError):
        return False


def annotate_shard(
    run_dir: str | Path,
    config: AnnotationConfig | None = None,
    *,
    num_shards: int,
    shard_index: int,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    command: str = "kept annotate",
) -> dict[str, Any]:
    """Annotate one shard while the other shards of the run annotate theirs (other processes or machines).

    The shard runs under a shared run-directory lock (exclusive writers such as ``kept encode`` are refused
    meanwhile) and its own exclusive lock ``corpus/annotated.shards/SHARD.lock`` (one process per shard).
    Once its output is written, the shard lets the shared lock go and, if every shard is there, takes the
    exclusive lock to merge; if a sibling still holds the run (still annotating, or merging), that sibling
    merges. Returns the merged statistics (``shard.merged``) or this shard's.
    """
    import fcntl

    from kept.rundir import RunLock

    run_dir = Path(run_dir)
    if not 0 <= shard_index < num_shards:
        raise MaskingError(
            f"--shard-index {shard_index} is not below --num-shards {num_shards}",
            where="--shard-index",
            fix="shard indices run from 0 to num_shards - 1",
        )
    with RunLock(run_dir, command, shared=True):
        shards_dir = run_dir / "corpus" / "annotated.shards"
        shards_dir.mkdir(parents=True, exist_ok=True)
        lock_path = shards_dir / f"{_shard_suffix(num_shards, shard_index)}.lock"
        with open(lock_path, "a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise KeptError(
                    f"shard {shard_index} of {num_shards} is being annotated by another process",
                    where=lock_path,
                    fix="wait for it, or run the other shard indices",
                ) from None
            stats = annotate_run_dir(
                run_dir,
                config,
                num_shards=num_shards,
                shard_index=shard_index,
                progress=progress,
                on_total=on_total,
                merge=False,
            )
    if not shards_complete(run_dir, num_shards):
        return stats
    try:
        lock = RunLock(run_dir, f"{command} (merging {num_shards} shards)").acquire()
    except KeptError as busy:
        if _held_by_shards(run_dir) or _siblings_running(run_dir, num_shards):
            return stats  # a sibling shard merges now, or still annotates and will find every shard
        # another writer took the run between our release and this acquire: nobody will merge
        raise KeptError(
            f"every shard is annotated, but the run is held by another command, so the shards were not merged ({busy})",
            where=run_dir,
            fix=f"when it is done, run `kept annotate {run_dir} --num-shards {num_shards} --merge`",
        ) from None
    try:
        if _merged_after_shards(run_dir, num_shards):  # a sibling merged between our release and acquire
            return json.loads((run_dir / "corpus" / "annotation_stats.json").read_text(encoding="utf-8"))
        return merge_annotated_shards(run_dir, num_shards)
    finally:
        lock.release()


def _held_by_shards(run_dir: Path) -> bool:
    """Whether the run lock's holder is a shard: shared holders (shards annotating) write no holder line, and
    a merging shard's line says so; any other writer names itself."""
    from kept.rundir import LOCK_FILE

    try:
        holder = (run_dir / LOCK_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return not holder or "merging" in holder


def _siblings_running(run_dir: Path, num_shards: int) -> bool:
    """Whether another process holds one of the run's shard locks (it will find every shard and merge)."""
    import fcntl

    shards_dir = run_dir / "corpus" / "annotated.shards"
    for index in range(num_shards):
        path = shards_dir / f"{_shard_suffix(num_shards, index)}.lock"
        if not path.exists():
            continue
        with open(path, "a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def merge_annotated_shards(run_dir: str | Path, num_shards: int) -> dict[str, Any]:
    """Concatenate ``corpus/annotated.shards/*`` (in shard order) into ``corpus/annotated`` and sum the stats."""
    from datasets import concatenate_datasets, load_from_disk

    corpus_dir = Path(run_dir) / "corpus"
    shards_dir = corpus_dir / "annotated.shards"
    parts: list[Any] = []
    totals: dict[str, Any] = {}
    configs = set()
    for index in range(num_shards):
        suffix = _shard_suffix(num_shards, index)
        stats_path = shards_dir / f"{suffix}.stats.json"
        if not stats_path.exists():
            raise MaskingError(
                f"shard {index} of {num_shards} is missing",
                where=stats_path,
                fix=f"run `kept annotate RUN_DIR --num-shards {num_shards} --shard-index {index}`",
            )
        shard_stats = json.loads(stats_path.read_text(encoding="utf-8"))
        configs.add(json.dumps(shard_stats.get("config"), sort_keys=True))
        merge_counts(totals, shard_stats["counts"])
        parts.append(load_from_disk(str(shards_dir / suffix)))
    if len(configs) > 1:
        raise MaskingError(
            "the shards were annotated with different configurations",
            where=shards_dir,
            fix="re-run every shard with the same --detectors/--spacy-model options",
        )
    stats = finalize_stats(totals)
    stats["config"] = json.loads(configs.pop())
    stats["gazetteer_case"] = shard_stats.get("gazetteer_case", {})  # the same KG and config in every shard
    stats["shard"] = {"num_shards": num_shards, "merged": True}
    atomic_save_dataset(concatenate_datasets(parts), corpus_dir / "annotated")
    _atomic_write_json(corpus_dir / "annotation_stats.json", stats)
    return stats


__all__ = [
    "annotate_run_dir",
    "annotate_shard",
    "atomic_save_dataset",
    "check_entity_ids",
    "load_run_kg",
    "merge_annotated_shards",
    "shards_complete",
]
