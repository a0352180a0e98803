"""`kept kg ...`: knowledge-graph statistics, embeddings, neighbourhoods and alias look-ups.

The functions behind them live in :mod:`kept.graphs` (``embed_run_dir``, ``load_graph``, ``kg_dir``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from kept.commands.common import stdout_console
from kept.graphs import embed_run_dir, kg_dir, load_graph

kg_app = typer.Typer(help="Knowledge-graph statistics and embeddings.", no_args_is_help=True)


def _table(title: str, rows: list[tuple[str, str]]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in rows:
        table.add_row(key, value)
    return table


@kg_app.command("stats")
def stats_command(
    path: Path = typer.Argument(..., help="A run directory, a kg/ directory, or a triples file."),
    as_json: bool = typer.Option(False, "--json", help="Print stats.json instead of tables."),
    top: int = typer.Option(10, "--top", help="How many relations and entities to list."),
) -> None:
    """Entities, relations, triples, degrees, components and relation frequencies."""

    graph = load_graph(path)
    stats = graph.stats(top=top)
    if as_json:
        typer.echo(json.dumps(stats.to_dict(), indent=2, ensure_ascii=False))
        return
    console = stdout_console()
    console.print(
        _table(
            f"Knowledge graph {path}",
            [
                ("entities", f"{stats.num_entities:,}"),
                ("relations", f"{stats.num_relations:,}"),
                ("triples", f"{stats.num_triples:,}"),
                ("isolated entities", f"{stats.num_isolated_entities:,}"),
                ("self loops", f"{stats.num_self_loops:,}"),
                (
                    "degree min / median / mean / max",
                    f"{stats.degree_min} / {stats.degree_median:g} / {stats.degree_mean:.2f} / {stats.degree_max}",
                ),
                ("weakly connected components", f"{stats.num_components:,}"),
                ("largest component", f"{stats.largest_component_size:,}"),
            ],
        )
    )
    console.print(_table("Degree distribution", [(b, f"{n:,}") for b, n in stats.degree_histogram.items()]))
    console.print(
        _table(f"Top {top} relations", [(r, f"{n:,}") for r, n in list(stats.relation_frequencies.items())[:top]])
    )
    console.print(_table(f"Top {top} entities by degree", [(e, f"{d:,}") for e, d in stats.top_entities_by_degree]))


@kg_app.command("embed")
def embed_command(
    run_dir: Path = typer.Argument(..., help="Run directory (or kg/ directory) holding the graph."),
    model: str = typer.Option("TransE", "--model", help="Any PyKEEN model name (TransE, DistMult, RotatE, ...)."),
    dim: int = typer.Option(100, "--dim", help="Embedding dimension."),
    epochs: int = typer.Option(100, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(256, "--batch-size"),
    learning_rate: float = typer.Option(0.01, "--lr"),
    seed: int = typer.Option(42, "--seed"),
    split: str = typer.Option("auto", "--split", help="auto, random, predefined (PyKEEN sets) or none."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage type: float32, float16 or bfloat16."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
) -> None:
    """Train KG embeddings with PyKEEN; write kg/embeddings.safetensors and kg/kg_metrics.json."""
    import logging
    import warnings

    import pykeen.pipeline  # noqa: F401 - creates PyKEEN's loggers so that they can be quieted
    import pykeen.triples.splitting  # noqa: F401
    from rich.console import Console

    from kg import EmbeddingConfig

    for name in list(logging.root.manager.loggerDict):  # PyKEEN's chatter (CPU fallback, batch sizes, ratios)
        if name.startswith(("pykeen", "torch_max_mem")):
            logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    config = EmbeddingConfig(
        model=model,
        dim=dim,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        split=split,
        device=device,
    )
    from kept.rundir import RunLock

    directory = kg_dir(run_dir)  # a missing graph is reported before the lock creates anything
    lock_dir = directory.parent  # the run directory
    with (
        RunLock(lock_dir, "kept kg embed"),
        Console(stderr=True).status(f"training {model} (dim {dim}, {epochs} epochs) ..."),
    ):
        metrics = embed_run_dir(run_dir, config, dtype=dtype)
    rows = [(k, f"{metrics[k]:.4f}") for k in ("mrr", "hits_at_1", "hits_at_3", "hits_at_10")]
    rows += [
        ("split", str(metrics.get("split"))),
        ("training triples", f"{metrics['num_training']:,}"),
        ("testing triples", f"{metrics['num_testing']:,}"),
        ("seconds", f"{metrics['pipeline_seconds']:.1f}"),
        ("written", metrics["embeddings"]),
    ]
    if metrics.get("split_note"):
        rows.append(("note", metrics["split_note"]))
    stdout_console().print(_table(f"{metrics['model']} on {run_dir}", rows))


@kg_app.command("neighbours")
def neighbours_command(
    path: Path = typer.Argument(..., help="A run directory, a kg/ directory, or a triples file."),
    entity: str = typer.Argument(..., help="Entity name (as in entities.tsv)."),
    hops: int = typer.Option(1, "--hops"),
    limit: int = typer.Option(50, "--limit", help="Print at most this many triples."),
) -> None:
    """The triples around an entity."""
    graph = load_graph(path)
    hood = graph.neighbourhood(entity, hops=hops)
    typer.echo(f"{len(hood.entities)} entities and {len(hood.triples)} triples within {hops} hop(s) of {entity!r}")
    for head, relation, tail in hood.triple_names(graph)[:limit]:
        typer.echo(f"{head}\t{relation}\t{tail}")


@kg_app.command("lookup")
def lookup_command(
    run_dir: Path = typer.Argument(..., help="Run directory (or kg/ directory) with aliases.tsv."),
    mention: str = typer.Argument(..., help="A mention string."),
    exact: bool = typer.Option(False, "--exact", help="Match the alias as written (no normalisation)."),
    limit: int = typer.Option(10, "--limit"),
) -> None:
    """Candidate entities for a mention, with priors, from kg/aliases.tsv."""
    from kg import AliasIndex, KGError, KnowledgeGraph

    directory = kg_dir(run_dir)
    graph = KnowledgeGraph.load(directory)
    if not (directory / "aliases.tsv").exists():
        raise KGError("no aliases.tsv", where=directory, fix="build the run with `kept data ...`")
    index = AliasIndex.load(directory / "aliases.tsv", num_entities=graph.num_entities)
    candidates = index.lookup(mention, exact=exact, limit=limit)
    if not candidates:
        typer.echo(f"no entity for {mention!r}")
        return
    for candidate in candidates:
        typer.echo(
            f"{candidate.prior:.3f}\t{candidate.entity_id}\t{graph.entities[candidate.entity_id]}\t"
            f"(alias {candidate.alias!r}, {candidate.count} links)"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(kg_app, name="kg")
