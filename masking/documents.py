"""Documents of a corpus: the ``documents.jsonl`` reader (checked line by line) and the Arrow schema.

``load_documents(path)`` gives a ``datasets.Dataset`` (id, title, text, spans) cached by the file's content
hash; ``documents_from_records`` builds a small in-memory corpus; ``iter_documents`` streams and checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from masking.errors import MaskingError
from masking.spans import check_spans


def span_features() -> Any:
    """The Arrow schema of one Span (``datasets.Features`` value)."""
    from datasets import Value

    return {
        "start": Value("int32"),
        "end": Value("int32"),
        "kind": Value("string"),
        "label": Value("string"),
        "entity_id": Value("int64"),
        "source": Value("string"),
    }


def document_features() -> Any:
    """Schema of ``corpus/documents.jsonl`` and ``corpus/annotated/``: id, title, text, spans."""
    from datasets import Features, List, Value

    return Features(
        {"id": Value("string"), "title": Value("string"), "text": Value("string"), "spans": List(span_features())}
    )


# ------------------------------------------------------------------------------------------------ reading


def _clean_text(text: str, policy: str, where: str, line: int) -> tuple[str, bool]:
    """Lone surrogates (undecodable bytes smuggled through JSON) -> U+FFFD (same length) or an error."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        if policy == "error":
            raise MaskingError(
                "the text holds undecodable characters (lone UTF-16 surrogates)",
                where=where,
                line=line,
                fix="re-encode the corpus as UTF-8, or set undecodable='replace' to replace them with U+FFFD",
            ) from None
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text), True


def iter_documents(path: str | Path, *, undecodable: str = "error") -> Iterator[dict[str, Any]]:
    """Documents of a ``documents.jsonl`` file, checked line by line (MaskingError names file:line)."""
    path = Path(path)
    seen: set[str] = set()
    try:
        handle = path.open("rb")
    except OSError as error:
        raise MaskingError(
            f"cannot read the corpus: {error.strerror}", where=path, fix="run `kept data ...` first or check the path"
        ) from None
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                if undecodable == "error":
                    raise MaskingError(
                        f"line is not UTF-8 (byte {error.start})",
                        where=path,
                        line=line_no,
                        fix="re-encode the corpus as UTF-8 (e.g. iconv -f latin1 -t utf-8), or set "
                        "undecodable='replace'",
                    ) from None
                line = raw.decode("utf-8", "replace")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise MaskingError(
                    f"invalid JSON: {error.msg}",
                    where=path,
                    line=line_no,
                    fix="each line must be one JSON object {id, title, text, spans}",
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get("text", ""), (str, type(None))):
                raise MaskingError(
                    "a document must be a JSON object with a string 'text'",
                    where=path,
                    line=line_no,
                    fix='write {"id": ..., "title": ..., "text": "...", "spans": []}',
                )
            doc_id = str(record.get("id", line_no))
            if doc_id in seen:
                raise MaskingError(
                    f"duplicate document id {doc_id!r}", where=path, line=line_no, fix="give every document a unique id"
                )
            seen.add(doc_id)
            text, _ = _clean_text(record.get("text") or "", undecodable, str(path), line_no)
            spans = record.get("spans") or []
            if not isinstance(spans, list):
                raise MaskingError("'spans' must be a list", where=path, line=line_no, fix="write spans as a JSON list")
            try:
                spans, _ = check_spans(text, spans, doc_id=doc_id, on_invalid="error")
            except MaskingError as error:
                raise MaskingError(f"{error.where}: {error.what}", where=path, line=line_no, fix=error.fix) from None
            yield {"id": doc_id, "title": str(record.get("title") or ""), "text": text, "spans": spans}


def _file_digest(path: Path) -> str:
    import xxhash

    digest = xxhash.xxh64()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _generate(path: str, digest: str, undecodable: str) -> Iterator[dict[str, Any]]:  # digest keys the cache
    yield from iter_documents(path, undecodable=undecodable)


def load_documents(path: str | Path, *, cache_dir: str | Path | None = None, undecodable: str = "error") -> Any:
    """``documents.jsonl`` -> ``datasets.Dataset`` (id, title, text, spans), cached by the file's content hash."""
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    path = Path(path)
    if not path.exists():
        raise MaskingError(
            "corpus file not found",
            where=path,
            fix="write corpus/documents.jsonl first (kept data ...) or pass the right run directory",
        )
    with path.open("rb") as handle:
        if not any(line.strip() for line in handle):
            raise MaskingError(
                "the corpus has no documents",
                where=path,
                fix="write one JSON document per line ({id, title, text, spans}) or rebuild the corpus",
            )
    digest = _file_digest(path)
    try:
        return Dataset.from_generator(
            _generate,
            features=document_features(),
            cache_dir=str(cache_dir) if cache_dir else None,
            gen_kwargs={"path": str(path), "digest": digest, "undecodable": undecodable},
            fingerprint=f"kept-docs-{digest}-{undecodable}",
        )
    except DatasetGenerationError as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, MaskingError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, MaskingError):
            raise cause from None
        raise


def documents_from_records(records: Sequence[Mapping[str, Any]]) -> Any:
    """A small in-memory corpus (list of {id, title, text, spans}) as a ``datasets.Dataset``."""
    from datasets import Dataset

    rows: list[dict[str, Any]] = [
        {
            "id": str(r.get("id", i)),
            "title": str(r.get("title") or ""),
            "text": r.get("text") or "",
            "spans": list(r.get("spans") or []),
        }
        for i, r in enumerate(records)
    ]
    for row in rows:
        row["spans"], _ = check_spans(row["text"], row["spans"], doc_id=row["id"], on_invalid="error")
    if not rows:
        return Dataset.from_dict({"id": [], "title": [], "text": [], "spans": []}, features=document_features())
    return Dataset.from_list(rows, features=document_features())


__all__ = ["document_features", "documents_from_records", "iter_documents", "load_documents", "span_features"]
