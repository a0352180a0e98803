"""`kept data ...`: build corpora and knowledge graphs from bundled sources into a run directory.

The functions behind them live in :mod:`kept.datasources` (``build_wikipedia_sample``, ``build_pykeen_run``,
``build_triples_run``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from kept.commands.common import stdout_console
from kept.datasources import build_wikipedia_sample, write_graph

data_app = typer.Typer(help="Build corpora and knowledge graphs from bundled sources.", no_args_is_help=True)


def _print_numbers(title: str, numbers: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in numbers.items():
        if isinstance(value, (dict, list)):
            continue
        table.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else str(value))
    stdout_console().print(table)


@data_app.command("wikipedia-sample")
def wikipedia_sample_command(
    out: Path = typer.Option(..., "--out", help="Run directory to write corpus/ and kg/ into."),
    source: Optional[Path] = typer.Option(None, "--source", help="Another MediaWiki XML dump (.xml or .xml.bz2)."),
    max_documents: Optional[int] = typer.Option(None, "--max-documents", help="Keep only the first N articles."),
) -> None:
    """Parse the enwiki sample shipped in gensim's wheel: documents with gold links, and a KG."""
    from rich.console import Console

    from kept.rundir import RunLock
    from kg.wikipedia import load_wikipedia_sample

    with Console(stderr=True).status("parsing the Wikipedia sample ..."):
        sample = load_wikipedia_sample(source, max_documents=max_documents)  # read before anything is written
        with RunLock(out, "kept data wikipedia-sample"):
            numbers = build_wikipedia_sample(out, sample=sample)
    _print_numbers(f"Wikipedia sample -> {out}", numbers)


@data_app.command("pykeen")
def pykeen_command(
    name: str = typer.Argument(..., help="nations, kinships or umls (bundled in the pykeen wheel)."),
    out: Path = typer.Option(..., "--out", help="Run directory; the graph goes to RUN_DIR/kg/."),
) -> None:
    """Put one of PyKEEN's bundled datasets into a run directory's kg/."""
    from kept.rundir import RunLock
    from kg import load_pykeen_dataset

    graph = load_pykeen_dataset(name)
    with RunLock(out, "kept data pykeen"):
        numbers = write_graph(graph, Path(out))
    _print_numbers(f"PyKEEN {name} -> {out}", numbers)


@data_app.command("triples")
def triples_command(
    path: Path = typer.Argument(..., help="Triples file: head, relation, tail per row (TSV or CSV, header optional)."),
    out: Path = typer.Option(..., "--out", help="Run directory; the graph goes to RUN_DIR/kg/."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="name<TAB>label rows."),
    aliases: Optional[Path] = typer.Option(None, "--aliases", help="name<TAB>alias rows ('|' separates several)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on duplicate triples and rows for unknown entities."),
    delimiter: Optional[str] = typer.Option(None, "--delimiter", help="Column separator (default: by extension)."),
) -> None:
    """Load a triples file (+ labels/aliases) into a run directory's kg/."""
    from kept.rundir import RunLock
    from kg import load_triples

    graph = load_triples(path, labels=labels, aliases=aliases, strict=strict, delimiter=delimiter)
    with RunLock(out, "kept data triples"):  # the input was read and checked before anything is written
        result = write_graph(graph, Path(out))
    report = graph.load_report.to_dict() if graph.load_report else {}
    _print_numbers(f"{path} -> {out}", result)
    for reason, count in report.get("skipped", {}).items():
        lines = ", ".join(str(n) for n in report["skipped_lines"].get(reason, []))
        typer.echo(f"skipped {count} rows ({reason}; first lines: {lines})")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
