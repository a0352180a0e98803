"""`kept kg ...`: knowledge-graph statistics and embeddings."""

from __future__ import annotations

import typer

kg_app = typer.Typer(help="Knowledge-graph statistics and embeddings.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(kg_app, name="kg")
