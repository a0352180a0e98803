"""`kept data ...`: build corpora and knowledge graphs from bundled sources into a run directory.

The functions here are what the commands call; ``kept demo`` and notebooks call them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from kept.commands.common import stdout_console

data_app = typer.Typer(help="Build corpora and knowledge graphs from bundled sources.", no_args_is_help=True)

DOCUMENTS_FILE = Path("corpus") / "documents.jsonl"
ALIASES_FILE = Path("kg") / "aliases.tsv"


def build_wikipedia_sample(out_dir: str | Path, *, source: str | Path | None = None,
                           max_documents: int | None = None, sample: Any = None) -> dict[str, Any]:
    """Parse the enwiki sample (gensim's wheel, or ``source``) into ``out_dir``.

    Writes corpus/documents.jsonl (gold link spans: kind "entity", label "WIKI_LINK", source "gold"),
    kg/entities.tsv, relations.tsv, triples.tsv, aliases.tsv, stats.json, metadata.json and
    kg/wikipedia_stats.json. Returns the sample's numbers (documents, words, links, entities, ...)
    plus ``out_dir``. ``sample`` may be an already parsed :class:`kg.wikipedia.WikipediaSample`.
    """
    from kept.corpus import write_documents
    from kg._io import atomic_write_json
    from kg.wikipedia import load_wikipedia_sample

    out = Path(out_dir)
    if sample is None:
        sample = load_wikipedia_sample(source, max_documents=max_documents)
    write_documents((doc.to_dict() for doc in sample.documents), out / DOCUMENTS_FILE)
    sample.graph.save(out / "kg")
    sample.alias_index.save(out / ALIASES_FILE)
    atomic_write_json(out / "kg" / "wikipedia_stats.json", sample.stats)
    return {**sample.stats, "out_dir": str(out)}


def build_pykeen_run(name: str, out_dir: str | Path) -> dict[str, Any]:
    """Put PyKEEN's bundled ``name`` (nations, kinships, umls) into ``out_dir/kg/`` (+ alias index)."""
    from kg import load_pykeen_dataset

    graph = load_pykeen_dataset(name)
    return _write_graph(graph, Path(out_dir))


def build_triples_run(path: str | Path, out_dir: str | Path, *, labels: str | Path | None = None,
                      aliases: str | Path | None = None, strict: bool = False, delimiter: str | None = None,
                      header: bool | None = None) -> dict[str, Any]:
    """Load a triples TSV/CSV (+ optional label/alias files) into ``out_dir/kg/``; returns counts and the load report."""
    from kg import load_triples

    graph = load_triples(path, labels=labels, aliases=aliases, strict=strict, delimiter=delimiter, header=header)
    result = _write_graph(graph, Path(out_dir))
    result["load_report"] = graph.load_report.to_dict() if graph.load_report else None
    return result


def _write_graph(graph: Any, out: Path) -> dict[str, Any]:
    from kg import AliasIndex

    graph.save(out / "kg")
    AliasIndex.from_graph(graph).save(out / ALIASES_FILE)
    return {"entities": graph.num_entities, "relations": graph.num_relations, "triples": graph.num_triples,
            "out_dir": str(out)}


def _print_numbers(title: str, numbers: dict[str, Any]) -> None:
    from rich.console import Console
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

    from kg.wikipedia import load_wikipedia_sample
    from kept.rundir import RunLock

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
    from kg import load_pykeen_dataset
    from kept.rundir import RunLock

    graph = load_pykeen_dataset(name)
    with RunLock(out, "kept data pykeen"):
        numbers = _write_graph(graph, Path(out))
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
    from kg import load_triples
    from kept.rundir import RunLock

    graph = load_triples(path, labels=labels, aliases=aliases, strict=strict, delimiter=delimiter)
    with RunLock(out, "kept data triples"):  # the input was read and checked before anything is written
        result = _write_graph(graph, Path(out))
    report = graph.load_report.to_dict() if graph.load_report else {}
    _print_numbers(f"{path} -> {out}", result)
    for reason, count in report.get("skipped", {}).items():
        lines = ", ".join(str(n) for n in report["skipped_lines"].get(reason, []))
        typer.echo(f"skipped {count} rows ({reason}; first lines: {lines})")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
