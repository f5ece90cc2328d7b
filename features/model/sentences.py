"""One plain sentence per factor, from the feature definitions' templates (cached per value)."""

from __future__ import annotations

import functools
import string

from features.pointintime.definitions import FEATURE_NAMES, FEATURES_BY_NAME, TEMPLATE_BUILTINS, describe_feature

# --- sentences -------------------------------------------------------------------------------


def describe_factor(feature: str, value, row: dict) -> str:
    """One plain sentence for a feature's value in a deal, in the registry's manager phrasing.

    >>> describe_factor("days_in_stage_vs_won", 2.3, {"current_stage": "negotiate", "days_in_stage": 41})
    'In negotiate for 41 days, 2.3x what won deals take'
    >>> describe_factor("decision_maker_engaged_30d", 0.0, {})
    'No decision maker engaged in the last 30 days'
    >>> describe_factor("not_in_registry", 4.0, {})
    'not_in_registry = 4.0'
    """
    fields = template_fields_of(feature)
    if fields is None:
        return f"{feature} = {value}"
    try:
        return _cached_sentence(feature, value, tuple((f, row.get(f)) for f in fields))
    except TypeError:  # an unhashable value: phrase it without the cache
        return describe_feature(feature, value, row)


def factor_phrase(feature: str, value, context: tuple) -> str:
    """``describe_factor`` of a registry feature, given its template fields' ``(name, cell)`` pairs."""
    try:
        return _cached_sentence(feature, value, context)
    except TypeError:  # an unhashable value: phrase it without the cache
        return describe_feature(feature, value, dict(context))


@functools.lru_cache(maxsize=None)
def template_fields_of(feature: str) -> tuple[str, ...] | None:
    """Other features that ``feature``'s templates use; None for a feature not in the registry."""
    if feature not in FEATURES_BY_NAME:
        return None
    return tuple(sorted({
        name
        for template in FEATURES_BY_NAME[feature].phrases.values()
        for _, name, _, _ in string.Formatter().parse(template)
        if name and name not in TEMPLATE_BUILTINS
    }))


@functools.lru_cache(maxsize=65536)
def _cached_sentence(feature: str, value, context: tuple) -> str:
    # Counts, flags and categories repeat across deals: each sentence is phrased once.
    return describe_feature(feature, value, dict(context))


@functools.lru_cache(maxsize=1)
def template_fields() -> frozenset[str]:
    """Names of other features that the registry's sentence templates use (besides ``value``).

    >>> "current_stage" in template_fields()
    True
    """
    return frozenset(field for name in FEATURE_NAMES for field in template_fields_of(name))


