"""The model artefact training writes and serving reads: bundle, encoding, prediction, explanations.

``bundle`` (boosters, linear halves, calibration, feature state, on disk), ``matrix`` and
``linear`` (the encoded inputs and the logistic half), ``predict`` (calibrated probabilities),
``contributions``, ``sentences``, ``risk_warnings``, ``grades`` and ``explain`` (explained scores)
and ``names`` (the registered model names and aliases both sides use).
"""
