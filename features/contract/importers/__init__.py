"""Importers: a CRM's own export -> a contract export (``dealrisk import salesforce``, ``dealrisk import table``).

``sources`` holds what both share: reading source files as text, parsing dates and numbers in
the CRM's formats, where each output row came from, and the last step (the contract check,
with every problem named by source file, column and row, then an atomic write). ``salesforce``
and ``table`` build the contract's tables from their sources; ``titles`` is the documented rule
from job titles to seniority; ``run`` is the edge the CLI calls (files, console). docs/importers.md
says what each reads, what it leaves out and why.
"""
