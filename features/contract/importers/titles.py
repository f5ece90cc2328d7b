"""Seniority from a job title: the documented rule both importers use.

A CRM keeps a contact's job title as free text ("VP Sales EMEA", "Head of Procurement"); the
contract wants one of ``individual, manager, director, vp, c_level``. The rule, first match wins:

1. the whole title is a name in the mapping's ``seniority`` section (``VP: vp``, ``Head of: director``,
   or a user's own line such as ``Geschaeftsfuehrer: c_level``);
2. ``vp``: "vice president", "VP", "SVP", "EVP", "AVP" (checked before c_level: "Vice President"
   contains "President");
3. ``c_level``: "chief", a C-suite abbreviation (CEO, CFO, COO, CTO, CIO, CISO, CMO, CRO, CPO, CDO),
   "president", "founder", "owner", "managing director", "managing partner";
4. ``director``: "director", "head of", "head";
5. ``manager``: "manager", "mgr", "lead", "supervisor";
6. ``individual``: any other non-blank title (engineer, analyst, specialist, buyer, assistant, ...);
7. a blank title: missing (the contract's seniority is nullable).

Words are matched whole and case-insensitively. It is a rule, not a model: "Assistant to the CEO"
comes out c_level. Titles it gets wrong go into the mapping's ``seniority`` section (step 1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from features.contract.mapping import normalize_name

TITLE_RULES: tuple[tuple[str, re.Pattern], ...] = (
    ("vp", re.compile(r"\b(vice[\s-]*president|vp|svp|evp|avp)\b", re.IGNORECASE)),
    ("c_level", re.compile(
        r"\b(chief|ceo|cfo|coo|cto|cio|ciso|cmo|cro|cpo|cdo|president|founder|co-founder|owner|"
        r"managing\s+director|managing\s+partner)\b", re.IGNORECASE)),
    ("director", re.compile(r"\b(director|head)\b", re.IGNORECASE)),
    ("manager", re.compile(r"\b(manager|mgr|lead|supervisor)\b", re.IGNORECASE)),
)


def seniority_of_title(title: object, names: Mapping[str, str] | None = None) -> str | None:
    """The seniority of one job title by the rule above (None for a blank title).

    >>> [seniority_of_title(t) for t in ["Vice President Sales", "CFO", "Head of IT", "Sales Manager",
    ...                                  "Buyer", "", None]]
    ['vp', 'c_level', 'director', 'manager', 'individual', None, None]
    >>> seniority_of_title("Geschaeftsfuehrer", {"geschaeftsfuehrer": "c_level"})
    'c_level'
    """
    if not isinstance(title, str) or not title.strip():
        return None
    if names:
        mapped = names.get(normalize_name(title))
        if mapped is not None:
            return mapped
    for level, pattern in TITLE_RULES:
        if pattern.search(title):
            return level
    return "individual"


def seniority_of_titles(titles: pd.Series, names: Mapping[str, str] | None = None) -> pd.Series:
    """Seniority of a column of titles, each distinct title worked out once."""
    codes, uniques = pd.factorize(titles, use_na_sentinel=True)
    levels = np.array([seniority_of_title(t, names) for t in uniques] + [None], dtype=object)
    return pd.Series(levels[codes], index=titles.index, dtype=object)
