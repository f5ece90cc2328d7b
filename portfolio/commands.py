"""Managers' commands of the ``dealrisk`` CLI (``rank``, ``team``, ``funnel``, ``forecast``). Wiring only."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the managers' commands to the root app."""
