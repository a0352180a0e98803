"""`kept data ...`: build corpora and knowledge graphs from bundled sources."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Build corpora and knowledge graphs from bundled sources.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
