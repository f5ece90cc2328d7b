"""CLI commands for training: ``train``, ``promote``, ``models``. Wiring only."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the training commands to the root app (filled in by the training work)."""
