"""``python -m dealrisk``: the same as the ``dealrisk`` command."""

from dealrisk.cli import app

app()
