"""The names under which training registers the model pair and serving finds it: one home for both.

Training registers the win and slip models under ``win_model`` / ``slip_model`` with the alias
``challenger``; the promotion gate moves ``champion``; serving loads ``champion``. The names are
settings read from the environment when asked (nothing at import time), so a service can serve
any registered pair:

| variable | default |
|---|---|
| ``DEALRISK_WIN_MODEL`` | ``deal-win`` |
| ``DEALRISK_SLIP_MODEL`` | ``deal-slip`` |
| ``DEALRISK_CHAMPION_ALIAS`` | ``champion`` |
| ``DEALRISK_CHALLENGER_ALIAS`` | ``challenger`` |

>>> RegisteredNames.from_env({"DEALRISK_WIN_MODEL": "acme-win"}).win_model
'acme-win'
>>> RegisteredNames.from_env({}).champion_alias
'champion'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

WIN_MODEL = "deal-win"
SLIP_MODEL = "deal-slip"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"

_ENVIRONMENT = {
    "win_model": "DEALRISK_WIN_MODEL",
    "slip_model": "DEALRISK_SLIP_MODEL",
    "champion_alias": "DEALRISK_CHAMPION_ALIAS",
    "challenger_alias": "DEALRISK_CHALLENGER_ALIAS",
}
# MLflow accepts more in a registered name; these keep names safe in URIs, filters and file names.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RegisteredNameError(ValueError):
    """A registered model name or alias from the environment is unusable."""


@dataclass(frozen=True)
class RegisteredNames:
    """Registered model names of the pair and the two aliases the hand-off uses."""

    win_model: str = WIN_MODEL
    slip_model: str = SLIP_MODEL
    champion_alias: str = CHAMPION_ALIAS
    challenger_alias: str = CHALLENGER_ALIAS

    def __post_init__(self) -> None:
        for attribute, variable in _ENVIRONMENT.items():
            value = getattr(self, attribute)
            if not _NAME.match(value):
                raise RegisteredNameError(
                    f"{variable}: {value!r} is not a usable name (letters, digits, '.', '_', '-'; at most 100)"
                )
        if self.win_model == self.slip_model:
            raise RegisteredNameError(f"the win and slip models need different names, both are {self.win_model!r}")
        if self.champion_alias == self.challenger_alias:
            raise RegisteredNameError(f"the champion and challenger aliases need different names, both are {self.champion_alias!r}")

    def describe(self, versions: Mapping[str, object]) -> str:
        """The served pair in words, for start-up lines: a win-only champion says so.

        >>> RegisteredNames().describe({"win": "3", "slip": "3"})
        'deal-win v3, deal-slip v3'
        >>> RegisteredNames().describe({"win": "4", "slip": None})
        'deal-win v4 (no deal-slip: the champion run trained no slip model)'
        """
        win = f"{self.win_model} v{versions.get('win')}"
        if versions.get("slip") in (None, ""):
            return f"{win} (no {self.slip_model}: the champion run trained no slip model)"
        return f"{win}, {self.slip_model} v{versions.get('slip')}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RegisteredNames":
        """Names from ``environ`` (default ``os.environ``); unset or empty variables keep the default."""
        env = os.environ if environ is None else environ
        given = {attribute: env[variable] for attribute, variable in _ENVIRONMENT.items() if env.get(variable)}
        return cls(**given)
