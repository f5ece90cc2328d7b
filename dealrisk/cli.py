"""The ``dealrisk`` command line: one Typer app assembling each package's subcommands. Wiring only.

The only module that imports both ``training`` and ``serving`` (import-linter checks it): the two
never import each other, and the MLflow registry is their only hand-off.
"""

from __future__ import annotations

import typer

from features import commands as data_commands
from generator import commands as generator_commands
from portfolio import commands as portfolio_commands
from serving import commands as serving_commands
from training import commands as training_commands


def build_app() -> typer.Typer:
    """The root app with every subcommand registered."""
    root = typer.Typer(
        name="dealrisk",
        help="Explained deal-risk and win-probability models for B2B pipelines.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )
    generator_commands.register(root)
    data_commands.register(root)
    training_commands.register(root)
    serving_commands.register(root)
    portfolio_commands.register(root)
    return root


app = build_app()

if __name__ == "__main__":
    app()
