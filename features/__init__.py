"""The shared core: raw CRM export -> checked tables -> point-in-time features -> the model artefact.

- ``features.contract``: the data contract (schema, name mapping, reading, checks, reports);
- ``features.pointintime``: features as of a moment (definitions, events, pipeline, fitted state,
  training snapshots);
- ``features.model``: what training writes and serving reads (bundle, matrix encoding, prediction,
  explanations, sentences, warnings, registered names).

It knows nothing of MLflow, HTTP or training (import-linter checks it in ``make test``).
"""
