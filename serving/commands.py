"""The ``dealrisk serve`` command. Wiring only: ``serving.run`` checks the champion and starts BentoML."""

from __future__ import annotations

import typer

from serving.run import run_serve


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(3000, help="Port to listen on."),
) -> None:
    """Start the scoring service (BentoML) with the champion models from the MLflow registry."""
    run_serve(host=host, port=port)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command()(serve)
