"""What one request may hold: the text rule both scoring routes apply, and the size limits.

The text rule: an id, name or other text value has at most ``MAX_TEXT_CHARS`` characters and no
control character (C0, DEL, C1: NUL, line breaks, tabs, escape sequences). ``POST /score``
applies it through its request schema (``serving.schemas``: ``max_length`` and ``TEXT_PATTERN``,
so the OpenAPI spec says it too), ``POST /score/tables`` to every text cell of the uploaded tables
(``serving.scoring.check_upload_text``, with ``CONTROL_CHARACTER``). Both read the rule from here.

Nothing here reads the environment: ``serving.config.ServingConfig.limits`` builds the limits
from its settings.
"""

from __future__ import annotations

from dataclasses import dataclass

# The longest id, name or text value, in characters (/score's ids and names had this limit first).
MAX_TEXT_CHARS = 200
# Control characters (Unicode category Cc): C0, DEL and C1. One character class for three regex
# engines: pydantic's (Rust), the JSON Schema reader's (ECMA 262) and pyarrow's (RE2).
_CONTROL_RANGES = r"\x00-\x1f\x7f-\x9f"
CONTROL_CHARACTER = f"[{_CONTROL_RANGES}]"
# A whole value without a control character (what /score's schema and spec require).
TEXT_PATTERN = f"^[^{_CONTROL_RANGES}]*$"


@dataclass(frozen=True)
class RequestLimits:
    """The sizes a request may reach (``serving.config``: ``DEALRISK_MAX_*``); over one: 413.

    ``max_table_rows`` bounds each uploaded event table (the deals table by ``max_deals``),
    counted from the Parquet footer or the CSV's line ends before anything is read;
    ``max_deal_events`` bounds one deal's stage_history, field_history, contacts and activities
    rows together, on both routes; ``max_body_bytes`` also bounds what an uploaded Parquet part
    decodes to, so a small compressed file cannot unpack to more than the body could carry.
    """

    max_deals: int = 2000
    max_table_rows: int = 250_000
    max_deal_events: int = 20_000
    max_body_bytes: int = 32 * 1024 * 1024
