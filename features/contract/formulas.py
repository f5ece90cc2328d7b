"""Text cells a spreadsheet would run as formulas (CSV injection), made plain text for CSV files people open.

A spreadsheet takes a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula, and a tab
or carriage return at the start as a way around a filter for those (OWASP, "CSV Injection"): a
deal name, an owner or a CRM picklist value such as ``=HYPERLINK("http://...")`` would run when
a manager opens the file. Such cells get a leading apostrophe, which spreadsheets show as text;
numbers and other types are left alone.

One function for every CSV the project writes for people to open: ``dealrisk score --out``,
``rank/forecast/team/funnel --csv`` (``portfolio.files.write_table``) and the Salesforce
importer's comparison file. Files that programs read back as data (an export, the generator's
files, ``dealrisk features --out``, ``python -m serving.request --tables`` uploads) keep their
values as they are: an apostrophe there would change the data.
"""

from __future__ import annotations

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(text):
    """A text cell a spreadsheet will not run as a formula; other values unchanged.

    >>> neutralise_formula("=HYPERLINK(\\"http://x\\")"), neutralise_formula("-3 days"), neutralise_formula("ok")
    ('\\'=HYPERLINK("http://x")', "'-3 days", 'ok')
    >>> neutralise_formula("\\t=1+1"), neutralise_formula(-3.5)
    ("'\\t=1+1", -3.5)
    """
    if isinstance(text, str) and text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def neutralise_text_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell passed through ``neutralise_formula`` (a new frame).

    Text columns of any dtype: object, ``str``/``string`` and categorical (its categories).
    """
    text = [name for name in frame.columns
            if frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name])
            or isinstance(frame[name].dtype, pd.CategoricalDtype)]
    return frame.assign(**{name: frame[name].map(neutralise_formula) for name in text})
