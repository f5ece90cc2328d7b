"""The ``dealrisk`` command line: one Typer app, a subcommand per job. Wiring only."""

from __future__ import annotations

import typer

from features import cli as features_cli
from training import commands as training_commands

app = typer.Typer(
    name="dealrisk",
    help="Explained deal-risk and win-probability models for B2B pipelines.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
features_cli.register(app)

training_commands.register(app)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(3000, help="Port to listen on."),
) -> None:
    """Start the scoring service (BentoML) with the champion models from the MLflow registry."""
    from serving.run import run_serve  # serving never imports training; the CLI only starts it

    run_serve(host=host, port=port)


if __name__ == "__main__":
    app()
