"""What a sales manager sees: stored scores with their history, and the views built on them.

The score store (every explained score, one row per deal, as-of and model pair), the trend and
alerts since the previous run, the ranked list by value at risk, the forecast against the stage
table, the team (per owner) and the funnel (per stage, channel and segment). Pure functions on
frames; the database sits at the edge (``portfolio.store``). Knows nothing of MLflow, BentoML or
training: the scores it stores come from ``serving`` (``dealrisk score`` and ``POST /score``).
"""
