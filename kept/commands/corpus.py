"""`kept corpus RUN_DIR`: load a corpus (txt / jsonl / parquet / HF dataset dir, FewRel, bundled) into a run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kept.commands.common import CONFIG_OPTION, SET_OPTION, console, flag_overrides, quiet_libraries


def corpus_command(
    run_dir: Path = typer.Argument(..., help="Run directory to write corpus/documents.jsonl (and kg/) into."),
    config: Optional[Path] = CONFIG_OPTION,
    source: Optional[str] = typer.Option(
        None, "--source", help="data.source: wikipedia_sample | pykeen | files | fewrel."
    ),
    corpus: Optional[Path] = typer.Option(
        None, "--corpus", help="data.corpus: a txt/jsonl/parquet file, HF dataset dir or FewRel file."
    ),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="data.text_field."),
    max_documents: Optional[int] = typer.Option(None, "--max-documents", help="data.max_documents."),
    kg_triples: Optional[Path] = typer.Option(None, "--kg-triples", help="data.kg_triples (files source)."),
    kg_labels: Optional[Path] = typer.Option(None, "--kg-labels", help="data.kg_labels (files source)."),
    kg_aliases: Optional[Path] = typer.Option(None, "--kg-aliases", help="data.kg_aliases (files source)."),
    pykeen_dataset: Optional[str] = typer.Option(None, "--pykeen-dataset", help="data.pykeen_dataset (pykeen source)."),
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Write RUN_DIR/corpus/documents.jsonl (gold spans when the source has them) and the KG if any."""
    quiet_libraries()
    from kept.config import resolve_run_config, save_config
    from kept.datasources import prepare_data
    from kept.rundir import RunLock

    overrides = flag_overrides(
        {
            "data.source": source,
            "data.corpus": str(corpus) if corpus else None,
            "data.text_field": text_field,
            "data.max_documents": max_documents,
            "data.kg_triples": str(kg_triples) if kg_triples else None,
            "data.kg_labels": str(kg_labels) if kg_labels else None,
            "data.kg_aliases": str(kg_aliases) if kg_aliases else None,
            "data.pykeen_dataset": pykeen_dataset,
        },
        set_,
    )
    cfg = resolve_run_config(run_dir, config, overrides)
    with RunLock(run_dir, "kept corpus"):
        info = prepare_data(run_dir, cfg)
        save_config(cfg, run_dir)  # after the data was read: a bad input leaves config.yaml as it was
    console.print(
        f"[green]corpus[/] {info.get('documents', '?')} documents"
        + (f", KG {info['entities']} entities / {info.get('triples', '?')} triples" if "entities" in info else "")
        + f" -> {run_dir / 'corpus' / 'documents.jsonl'}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("corpus")(corpus_command)
