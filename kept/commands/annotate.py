"""`kept annotate RUN_DIR`: find entity and phrase spans in the run's corpus (masking.annotate via kept.annotation)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

import typer

from kept.commands.common import stdout_console


def annotate_command(
    run_dir: Path = typer.Argument(..., help="Run directory with corpus/documents.jsonl (and kg/ for the gazetteer)."),
    detectors: Optional[str] = typer.Option(
        None,
        "--detectors",
        help="Comma-separated detectors: ner, noun_chunk, gazetteer, gold, npmi, "
        "pos_ner, pos_phrase or a registered plug-in's name (default: the --config file's, else ner,noun_chunk,gazetteer,gold).",
    ),
    config_file: Optional[Path] = typer.Option(
        None, "--config", help="YAML/JSON file with masking.AnnotationConfig fields (detector options, terms, regex)."
    ),
    num_proc: Optional[int] = typer.Option(None, "--num-proc", min=1, help="Worker processes for Dataset.map."),
    num_shards: int = typer.Option(1, "--num-shards", min=1, help="Split the corpus into this many shards."),
    shard_index: int = typer.Option(0, "--shard-index", min=0, help="Which shard this call annotates (0-based)."),
    spacy_model: Optional[str] = typer.Option(None, "--spacy-model", help="spaCy pipeline name or directory."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="nlp.pipe batch size."),
    case_insensitive: Optional[bool] = typer.Option(
        None, "--case-insensitive/--case-sensitive", help="Gazetteer matching of KG labels and aliases."
    ),
    merge: bool = typer.Option(
        False,
        "--merge",
        help="Only merge corpus/annotated.shards/ (written by --num-shards K runs, e.g. on other "
        "machines and copied here) into corpus/annotated/.",
    ),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local (datasets map, --num-proc workers) or datatrove (shards on datatrove's "
        "executor, --workers processes; the kept[datatrove] extra).",
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="--engine datatrove: worker processes (= shards)."),
) -> None:
    """Annotate RUN_DIR/corpus/documents.jsonl into RUN_DIR/corpus/annotated/ and annotation_stats.json."""
    import os

    from rich.console import Console

    from kept.rundir import RunLock
    from masking.errors import MaskingError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if not run_dir.is_dir():  # checked before the lock, which would create the directory
        raise MaskingError(
            "corpus not found (no such run directory)",
            where=run_dir / "corpus" / "documents.jsonl",
            fix="write the corpus first (kept data ... or kept corpus RUN_DIR) or check RUN_DIR",
        )
    console = Console(stderr=True)
    if engine not in ("local", "datatrove"):
        raise MaskingError(
            f"unknown engine {engine!r}", where="--engine", fix="use --engine local or --engine datatrove"
        )
    if engine == "datatrove" and (num_shards > 1 or merge):
        raise MaskingError(
            "--engine datatrove makes its own shards (one per worker)",
            where="--num-shards",
            fix="drop --num-shards/--merge, or use --engine local for hand-made shards",
        )
    # shards run side by side (kept.annotation.annotate_shard takes their locks); anything else holds the run
    sharded = num_shards > 1 and not merge
    with contextlib.nullcontext() if sharded else RunLock(run_dir, "kept annotate"):
        _annotate(
            run_dir,
            console,
            detectors,
            config_file,
            num_proc,
            num_shards,
            shard_index,
            spacy_model,
            batch_size,
            case_insensitive,
            merge,
            workers if engine == "datatrove" else None,
        )


def _annotate(
    run_dir: Path,
    console: Any,
    detectors: Optional[str],
    config_file: Optional[Path],
    num_proc: Optional[int],
    num_shards: int,
    shard_index: int,
    spacy_model: Optional[str],
    batch_size: Optional[int],
    case_insensitive: Optional[bool],
    merge: bool,
    datatrove_workers: Optional[int] = None,
) -> None:
    """The annotation itself (the caller holds the run directory's lock; a shard takes its own)."""
    import json

    import datasets
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from kept.annotation import annotate_run_dir, annotate_shard
    from masking.detectors.config import AnnotationConfig
    from masking.errors import MaskingError

    if merge:
        from kept.annotation import merge_annotated_shards

        if num_shards < 2:
            raise MaskingError(
                "--merge needs the number of shards",
                where="--num-shards",
                fix="pass --num-shards K as used when annotating the shards",
            )
        stats = merge_annotated_shards(run_dir, num_shards)
        console.print(
            f"merged {num_shards} shards ({stats['documents']} documents) into {run_dir / 'corpus' / 'annotated'}"
        )
        return
    if shard_index >= num_shards:
        raise MaskingError(
            f"--shard-index {shard_index} is not below --num-shards {num_shards}",
            where="--shard-index",
            fix="shard indices run from 0 to num_shards - 1",
        )
    base: dict = {}
    if config_file is not None:
        if config_file.suffix in (".yaml", ".yml"):
            from kept.config import read_yaml

            base = read_yaml(config_file)[0]  # the one YAML loader: file:line errors, no aliases or duplicate keys
        else:
            try:
                base = json.loads(config_file.read_text(encoding="utf-8"))
            except OSError as error:
                raise MaskingError(
                    f"cannot read the annotation config: {error.strerror}",
                    where=config_file,
                    fix="pass an existing YAML/JSON file",
                ) from None
            except UnicodeDecodeError as error:
                raise MaskingError(
                    f"the annotation config is not UTF-8 text (byte {error.start})",
                    where=config_file,
                    fix="save it as UTF-8",
                ) from None
            except json.JSONDecodeError as error:
                raise MaskingError(
                    f"not valid JSON: {error.msg}",
                    where=config_file,
                    line=error.lineno,
                    fix="fix the JSON syntax (or use a .yaml file)",
                ) from None
        if not isinstance(base, dict):
            raise MaskingError(
                "the annotation config must be a mapping of AnnotationConfig fields",
                where=config_file,
                fix="write e.g. `detectors: [{type: gold}]`",
            )
        base = base.get("annotation", base)
        if not isinstance(base, dict):
            raise MaskingError(
                "'annotation' must be a mapping of AnnotationConfig fields",
                where=config_file,
                fix="write e.g. `annotation: {detectors: [{type: gold}]}`",
            )
    overrides = {
        k: v
        for k, v in {
            "num_proc": num_proc,
            "spacy_model": spacy_model,
            "batch_size": batch_size,
            "case_insensitive": case_insensitive,
        }.items()
        if v is not None
    }
    from pydantic import ValidationError

    try:
        if detectors:
            config = AnnotationConfig.from_names(
                detectors, **{**{k: v for k, v in base.items() if k != "detectors"}, **overrides}
            )
        else:
            config = AnnotationConfig(**{**base, **overrides})
    except ValidationError as error:
        first = error.errors()[0]
        raise MaskingError(
            f"invalid annotation config: {'.'.join(map(str, first['loc']))}: {first['msg']}",
            where=config_file or "options",
            fix="see masking.AnnotationConfig for the fields",
        ) from None

    corpus = run_dir / "corpus" / "documents.jsonl"
    if not corpus.exists():
        raise MaskingError(
            "corpus not found",
            where=corpus,
            fix="write the corpus first (kept data ... or kept run CONFIG) or check RUN_DIR",
        )
    datasets.disable_progress_bars()
    if datatrove_workers is not None:
        from kept.annotation_datatrove import annotate_with_datatrove

        console.print(f"annotating on datatrove: {datatrove_workers} workers, one shard each")
        stats = annotate_with_datatrove(run_dir, config, workers=datatrove_workers)
        _print_stats(run_dir, stats, num_shards, shard_index, console)
        return
    columns = [
        TextColumn("[bold]annotating[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("annotate", total=None)
        annotate_fn = annotate_shard if num_shards > 1 else annotate_run_dir
        stats = annotate_fn(
            run_dir,
            config,
            num_shards=num_shards,
            shard_index=shard_index,
            progress=lambda n: progress.advance(task, n),
            on_total=lambda n: progress.update(task, total=n),
        )
        progress.update(task, completed=progress.tasks[0].total or 0)
    _print_stats(run_dir, stats, num_shards, shard_index, console)


def _print_stats(run_dir: Path, stats: dict, num_shards: int, shard_index: int, console: Any) -> None:
    """The annotation statistics as a table (stdout) and where they were written (stderr)."""
    from rich.table import Table

    table = Table(title=f"annotation of {run_dir}", show_header=False)
    for key in (
        "documents",
        "empty_documents",
        "spans",
        "spans_per_document",
        "linked_fraction",
        "ambiguous_mentions",
        "token_coverage",
        "overlaps_removed",
    ):
        table.add_row(key, str(stats.get(key)))
    table.add_row("spans_by_source", ", ".join(f"{k}={v}" for k, v in stats.get("spans_by_source", {}).items()))
    gold = stats.get("gold")
    if gold:
        table.add_row("gold recall (overlap)", ", ".join(f"{k}={v}" for k, v in gold["recall_overlap"].items()))
    stdout_console().print(table)
    shard = stats.get("shard", {})
    if num_shards > 1 and not shard.get("merged"):
        console.print(
            f"shard {shard_index + 1}/{num_shards} written to {run_dir / 'corpus' / 'annotated.shards'}; "
            "corpus/annotated/ appears when the last shard finishes"
        )
    else:
        console.print(f"wrote {run_dir / 'corpus' / 'annotated'} and {run_dir / 'corpus' / 'annotation_stats.json'}")


def register(app: typer.Typer) -> None:
    app.command("annotate")(annotate_command)
