"""A simulated CRM export with its hidden ground truth, for the demo, the tests and the benchmarks.

Not part of the shipped service: nothing in ``features``, ``training`` or ``serving`` imports it
(checked by import-linter in ``make test``), and the Bento leaves it out.
"""
