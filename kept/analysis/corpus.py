"""A run's corpus stage: annotation statistics, the annotated corpus, the documents and the encoded splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kept.analysis.files import existing_dir, read_json_object
from kept.errors import KeptError


def load_annotation_stats(run_dir: str | Path) -> dict[str, Any]:
    """``corpus/annotation_stats.json`` (spans by source and kind, linked fraction, ...)."""
    path = existing_dir(run_dir) / "corpus" / "annotation_stats.json"
    return read_json_object(
        path, "annotation statistics", "run the annotation step (`kept run CONFIG`)", "re-run annotation"
    )


def load_annotations(run_dir: str | Path) -> Any:
    """The annotated corpus (``corpus/annotated``) as a datasets.Dataset: id, title, text, spans."""
    from datasets import load_from_disk

    path = existing_dir(run_dir) / "corpus" / "annotated"
    if not path.is_dir():
        raise KeptError("annotated corpus not found", where=path, fix="run the annotation step (`kept run CONFIG`)")
    try:
        return load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise KeptError(f"cannot read the annotated corpus ({error})", where=path, fix="re-run annotation") from error


def load_documents(run_dir: str | Path) -> list[dict[str, Any]]:
    """``corpus/documents.jsonl`` as a list of dicts, read by masking's documents reader (the one)."""
    from masking.documents import iter_documents
    from masking.errors import MaskingError

    path = existing_dir(run_dir) / "corpus" / "documents.jsonl"
    if not path.is_file():
        raise KeptError("documents file not found", where=path, fix="run the corpus step (`kept run CONFIG`)")
    try:
        return list(iter_documents(path))
    except MaskingError as error:
        raise KeptError(error.what, where=error.where, line=error.line, fix="re-run the corpus step") from None


def load_encoded(run_dir: str | Path, split: str = "validation") -> Any:
    """``encoded/<split>`` as a datasets.Dataset (input_ids, attention_mask, unit_ids, unit_kind, entity_ids)."""
    from datasets import load_from_disk

    path = existing_dir(run_dir) / "encoded" / split
    if not path.is_dir():
        raise KeptError(f"encoded {split} split not found", where=path, fix="run the encode step (`kept run CONFIG`)")
    try:
        return load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise KeptError(f"cannot read the encoded dataset ({error})", where=path, fix="re-run encoding") from error
