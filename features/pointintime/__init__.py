"""Point-in-time features: every feature of a deal as of a moment, from events at or before it.

``definitions`` (the ordered feature list with meaning and unit), ``events`` (the sorted event index
and other primitives), ``pipeline`` (``build_features``: the feature families), ``state`` (what is
fitted on training data: won-deal stage medians, win histories) and ``snapshots`` (training points
and labels).
"""
