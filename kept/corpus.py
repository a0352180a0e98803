"""Corpus loading: txt / jsonl / parquet / HF dataset dir → ``corpus/documents.jsonl``.

A document is ``{"id": str, "title": str, "text": str, "spans": [Span]}`` (CONTRACTS.md);
``spans`` holds gold spans when the source has them (jsonl/parquet/HF rows with a ``spans``
column, Wikipedia links, FewRel heads/tails), else ``[]``.

Inputs:

* ``.txt`` file: documents separated by blank lines; a directory of ``.txt`` files: one per file.
* ``.jsonl`` (``.json`` lines): one object per line with ``text`` (and optional ``id``, ``title``, ``spans``).
* ``.parquet``: the same columns.
* a directory written by ``datasets.save_to_disk`` (a Dataset, or a DatasetDict: its ``train`` split).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kept.atomic_io import decode_utf8
from kept.errors import KeptError

#: Longest document accepted (characters). Longer texts are almost always a file read the wrong way
#: (a whole book on one line, a binary file); split them into documents.
MAX_DOCUMENT_CHARS = 10_000_000


def _decode(data: bytes, path: Path) -> str:
    """UTF-8 text of a corpus file; a wrong encoding names the file and line."""
    return decode_utf8(data, path, fix="re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE)")


def _check_spans(spans: Any, text: str, where: str) -> list[dict[str, Any]]:
    """Gold spans of a corpus row, checked with ``masking.spans.coerce_span`` (integer offsets, not
    booleans or floats; kind; integer entity id) and against the text."""
    from masking.errors import MaskingError
    from masking.spans import coerce_span

    if spans is None:
        return []
    if not isinstance(spans, list):
        raise KeptError("'spans' must be a list of span objects", where=where)
    out = []
    for index, raw in enumerate(spans):
        try:
            span = coerce_span(raw)
        except MaskingError as error:
            raise KeptError(f"spans[{index}]: {error.what}", where=where, fix=error.fix) from None
        start, end = span["start"], span["end"]
        if not 0 <= start < end <= len(text):
            raise KeptError(
                f"spans[{index}]: span [{start}, {end}) lies outside the text ({len(text)} characters)", where=where
            )
        _check_unicode(span["label"], f"spans[{index}].label", where)
        out.append(dict(span))
    return out


def _check_unicode(value: str, field: str, where: str) -> None:
    """Refuse a string that cannot be written as UTF-8: a lone surrogate (e.g. JSON ``"\\ud800"``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise KeptError(
            f"'{field}' holds a lone surrogate {value[error.start]!r} at character {error.start} "
            "(not a Unicode character)",
            where=where,
            fix="remove it, or write the character as a complete pair (e.g. \\ud83d\\ude00)",
        ) from None


def make_document(
    row: dict[str, Any],
    number: int,
    *,
    text_field: str = "text",
    id_field: str = "id",
    title_field: str = "title",
    where: str = "",
) -> dict[str, Any]:
    if text_field not in row:
        raise KeptError(
            f"record has no '{text_field}' field (fields: {', '.join(map(str, row))})",
            where=where,
            fix="set data.text_field to the column that holds the text",
        )
    text = row[text_field]
    if not isinstance(text, str):
        raise KeptError(
            f"'{text_field}' is a {type(text).__name__}, not text",
            where=where,
            fix=f"write the document text as a JSON string in '{text_field}'",
        )
    if len(text) > MAX_DOCUMENT_CHARS:
        raise KeptError(
            f"document has {len(text):,} characters, more than the {MAX_DOCUMENT_CHARS:,} allowed",
            where=where,
            fix="split it into smaller documents (one per line in JSONL, or blank-line separated in .txt)",
        )
    if "\x00" in text:
        raise KeptError(
            "the text holds NUL bytes (a binary file?)",
            where=where,
            fix="give a text corpus; remove the NUL characters",
        )
    doc_id = row.get(id_field)
    document = {
        "id": str(doc_id) if doc_id not in (None, "") else str(number),
        "title": str(row.get(title_field) or ""),
        "text": text,
    }
    for field, value in (("id", document["id"]), ("title", document["title"]), (text_field, text)):
        _check_unicode(value, field, where)
    return {**document, "spans": _check_spans(row.get("spans"), text, where)}


def _iter_txt(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    if path.is_dir():
        for file in sorted(path.rglob("*.txt")):
            yield (
                {
                    "id": str(file.relative_to(path)),
                    "title": file.stem,
                    "text": _decode(file.read_bytes(), file).strip(),
                },
                str(file),
            )
        return
    text = _decode(path.read_bytes(), path)
    for number, block in enumerate(b.strip() for b in re.split(r"\n\s*\n", text)):
        if block:
            yield {"id": f"{path.stem}-{number}", "title": "", "text": block}, f"{path}"


def _iter_jsonl(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise KeptError(
                    f"not UTF-8 text (byte {error.start} of the line)",
                    where=path,
                    line=line_number,
                    fix="re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE)",
                ) from None
            if line_number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as error:
                message = getattr(error, "msg", "nested too deeply")
                raise KeptError(
                    f"not valid JSON: {message}",
                    where=path,
                    line=line_number,
                    fix='write one JSON object per line: {"id": ..., "text": "...", "spans": []}',
                ) from None
            if not isinstance(row, dict):
                raise KeptError(
                    "each line must be a JSON object",
                    where=path,
                    line=line_number,
                    fix='write one JSON object per line: {"id": ..., "text": "...", "spans": []}',
                )
            yield row, f"{path}:{line_number}"


def _iter_table(rows: Iterable[dict[str, Any]], where: str) -> Iterator[tuple[dict[str, Any], str]]:
    for index, row in enumerate(rows):
        yield dict(row), f"{where}[{index}]"


def iter_records(path: str | Path) -> Iterator[tuple[dict[str, Any], str]]:
    """Raw records of a corpus source with a location for error messages."""
    path = Path(path)
    if not path.exists():
        raise KeptError(
            "corpus not found", where=path, fix="set data.corpus to a txt/jsonl/parquet file or a dataset dir"
        )
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            import datasets

            try:
                loaded = datasets.load_from_disk(str(path))
            except Exception as error:  # noqa: BLE001 - datasets/pyarrow raise many types for a damaged dir
                raise KeptError(
                    f"cannot read the saved dataset ({type(error).__name__}: {error})".splitlines()[0],
                    where=path,
                    fix="re-save it with datasets.Dataset.save_to_disk",
                ) from None
            if isinstance(loaded, datasets.DatasetDict):
                if "train" not in loaded:
                    raise KeptError(f"dataset dict has no 'train' split ({', '.join(loaded)})", where=path)
                loaded = loaded["train"]
            yield from _iter_table(loaded, str(path))
            return
        if any(path.rglob("*.txt")):
            yield from _iter_txt(path)
            return
        raise KeptError("directory is neither a saved HF dataset nor a folder of .txt files", where=path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        yield from _iter_txt(path)
    elif suffix in (".jsonl", ".ndjson") or (suffix == ".json" and _looks_like_jsonl(path)):
        yield from _iter_jsonl(path)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as error:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
            raise KeptError(
                f"not a readable Parquet file ({error})".splitlines()[0],
                where=path,
                fix="re-write it with pandas/pyarrow, or give the corpus as JSONL",
            ) from None
        yield from _iter_table(rows, str(path))
    else:
        raise KeptError(
            f"unsupported corpus format '{suffix}'",
            where=path,
            fix="use .txt, .jsonl, .parquet or a datasets.save_to_disk directory",
        )


def _looks_like_jsonl(path: Path) -> bool:
    with open(path, "rb") as handle:
        first = handle.readline().strip()
    return first.startswith(b"{") and first.endswith(b"}")


def read_corpus(
    path: str | Path,
    *,
    text_field: str = "text",
    id_field: str = "id",
    title_field: str = "title",
    max_documents: int | None = None,
) -> list[dict[str, Any]]:
    """Documents of a user's corpus file or directory in any supported format (ids made unique; empty texts
    dropped). A run's own ``corpus/documents.jsonl`` is read by :mod:`masking.documents`."""
    documents: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, (row, where) in enumerate(iter_records(path)):
        document = make_document(
            row, number, text_field=text_field, id_field=id_field, title_field=title_field, where=where
        )
        if not document["text"].strip():
            continue
        if document["id"] in seen:
            document["id"] = f"{document['id']}#{number}"
        seen.add(document["id"])
        documents.append(document)
        if max_documents is not None and len(documents) >= max_documents:
            break
    if not documents:
        raise KeptError("the corpus has no documents with text", where=path)
    return documents


def write_documents(documents: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write documents.jsonl atomically (streamed, one JSON object a line); returns the number written."""
    from kept.rundir import atomic_open

    count = 0
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for document in documents:
            handle.write(json.dumps(document, ensure_ascii=False) + "\n")
            count += 1
    return count


def documents_to_dataset(documents: list[dict[str, Any]]) -> Any:
    """A ``datasets.Dataset`` with columns id, title, text, spans."""
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "title": datasets.Value("string"),
            "text": datasets.Value("string"),
            "spans": datasets.List(
                {
                    "start": datasets.Value("int64"),
                    "end": datasets.Value("int64"),
                    "kind": datasets.Value("string"),
                    "label": datasets.Value("string"),
                    "entity_id": datasets.Value("int64"),
                    "source": datasets.Value("string"),
                }
            ),
        }
    )
    return datasets.Dataset.from_list(documents, features=features)
