"""Where the page's data comes from: the score store and, when configured, an export folder.

The edge of the page: opening ``portfolio.store.ScoreStore`` (``DEALRISK_STORE_URL``, else
``portfolio.store``'s default), reading each deal's latest snapshots with their trend, one deal's
history, and the export ``DEALRISK_PAGE_EXPORT`` names (funnel, decision chains).

Caching, per worker process: the board (every deal's latest snapshot with its trend) is read once
per store write, keyed by the store's latest run id (one ``max(run_id)`` query per page view), so
a manager clicking through the views costs one store read, and a ``dealrisk score`` run or a
``/score`` call written to the store shows on the next view. The export is read once per change of
its files (name, size and modification time of each).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from features.contract.io import ExportFolderError
from features.contract.load import load_export
from features.contract.schema import Export
from features.contract.violations import ContractError
from features.pointintime.snapshots import export_end
from portfolio.store import ScoreStore, StoreError, scoring_runs
from portfolio.trend import add_trend
from serving.config import ServingConfig


# What the list, its header, the team and the forecast read of each snapshot (the store reads
# only these; the deal view reads a deal's whole rows).
BOARD_COLUMNS: tuple[str, ...] = (
    "owner_id", "stage", "amount", "expected_close_date", "win_probability", "slip_probability", "grade",
    "risk_level", "value_at_risk", "top_reason", "warning_codes", "actions",
)


@dataclass(frozen=True)
class Board:
    """Every current deal's latest snapshot with its trend (``portfolio.trend.add_trend``), as of
    the latest batch run (or the latest score when no batch run exists)."""

    trended: pd.DataFrame
    as_of: pd.Timestamp | None
    last_run: dict = field(default_factory=dict)  # the latest scoring run: run_id, source, deals, as_of, scored_at


@dataclass(frozen=True)
class ExportData:
    """A loaded export, its last event, and each deal's contact and activity rows by deal id."""

    export: Export
    end: pd.Timestamp
    folder: str
    contacts_by_deal: dict = field(repr=False, default_factory=dict)
    activities_by_deal: dict = field(repr=False, default_factory=dict)

    def deal_tables(self, deal_id: str) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        """The deal's contacts and activities (empty frames when it has none; None when the export
        has no such table)."""
        out = []
        for table, index in (("contacts", self.contacts_by_deal), ("activities", self.activities_by_deal)):
            frame = self.export.table(table)
            if frame is None:
                out.append(None)
            else:
                rows = index.get(deal_id)
                out.append(frame.iloc[rows] if rows is not None else frame.iloc[:0])
        return out[0], out[1]


class ExportUnavailable(RuntimeError):
    """``DEALRISK_PAGE_EXPORT`` is unset or cannot be read; the message says which and why."""


def export_signature(folder: Path) -> tuple:
    """Name, size and modification time of each file of ``folder``: changes when the export is replaced."""
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))


def read_export(folder: Path, mapping) -> ExportData:
    """Load and index an export folder; ``ExportUnavailable`` with the reason when it cannot be read."""
    try:
        export = load_export(folder, mapping=mapping)
    except ContractError as exc:
        first = exc.violations[0] if exc.violations else None
        where = f"{first.table}: {first.reason}" if first is not None else str(exc).splitlines()[0]
        raise ExportUnavailable(f"DEALRISK_PAGE_EXPORT={folder}: the export breaks the data contract ({where})") from None
    except (ExportFolderError, OSError) as exc:
        raise ExportUnavailable(f"DEALRISK_PAGE_EXPORT={folder}: {exc}") from None
    indexes = {}
    for table in ("contacts", "activities"):
        frame = export.table(table)
        indexes[table] = {} if frame is None else frame.groupby(frame["deal_id"].astype(str), sort=False).indices
    return ExportData(export=export, end=export_end(export), folder=str(folder),
                      contacts_by_deal=indexes["contacts"], activities_by_deal=indexes["activities"])


class PageData:
    """The page's reads, cached per process; thread-safe (Starlette runs the views in a thread pool).

    ``config`` is called once, at the first read, so that building the app (at import of the
    service) reads no setting and opens nothing.
    """

    def __init__(self, config: Callable[[], ServingConfig]) -> None:
        self._config_source = config
        self._config: ServingConfig | None = None
        self._store: ScoreStore | None = None
        self._lock = threading.Lock()
        self._board_lock = threading.Lock()
        self._board: tuple[object, Board] | None = None
        self._export: tuple[tuple, ExportData] | None = None
        self._derived: dict = {}

    @property
    def config(self) -> ServingConfig:
        if self._config is None:
            self._config = self._config_source()
        return self._config

    def store(self) -> ScoreStore:
        """The opened store; ``StoreError`` (with how to fill it) while it does not exist yet."""
        with self._lock:
            if self._store is None:
                self._store = ScoreStore.open(self.config.store_url, create=False)
            return self._store

    def last_run_id(self) -> int | None:
        store = self.store()
        try:
            with store.engine.connect() as conn:
                return conn.execute(sa.select(sa.func.max(scoring_runs.c.run_id))).scalar_one()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"score store {store.describe()} cannot be read: {str(exc).splitlines()[0]}") from None

    def board(self) -> Board:
        """Every current deal's latest snapshot with its trend; re-read after each store write.

        One read at a time: views arriving while the board is being read wait for that read
        instead of starting their own (on two cores, parallel reads only slow each other).
        """
        key = self.last_run_id()
        cached = self._board
        if cached is not None and cached[0] == key:
            return cached[1]
        with self._board_lock:
            cached = self._board
            if cached is not None and cached[0] == key:
                return cached[1]
            store = self.store()
            snapshots = store.snapshots(json_columns=False, columns=BOARD_COLUMNS)
            trended = add_trend(snapshots)
            as_of = store.latest_batch_as_of()
            if as_of is None and len(trended):
                as_of = trended["as_of"].max()
            runs = store.runs()
            last = {} if runs.empty else runs.iloc[-1].to_dict()
            board = Board(trended=trended, as_of=as_of, last_run=last)
            with self._lock:
                self._board = (key, board)
                self._derived = {k: v for k, v in self._derived.items() if k[0] != "board"}
        return board

    def deal_history(self, deal_id: str) -> pd.DataFrame:
        """Every stored score of one deal (``ScoreStore.history``), oldest first."""
        return self.store().history(deal_ids=[deal_id])

    def history(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """All stored scores and runs (the forecast's accuracy needs every batch forecast)."""
        store = self.store()
        return store.history(), store.runs()

    def export_data(self) -> ExportData:
        """The export ``DEALRISK_PAGE_EXPORT`` names; ``ExportUnavailable`` when unset or unreadable."""
        folder = self.config.page_export
        if not folder:
            raise ExportUnavailable("no export folder is configured (DEALRISK_PAGE_EXPORT)")
        path = Path(folder)
        if not path.is_dir():
            raise ExportUnavailable(f"DEALRISK_PAGE_EXPORT={folder}: not a folder")
        signature = (str(path.resolve()), export_signature(path))
        with self._lock:
            if self._export is not None and self._export[0] == signature:
                return self._export[1]
        data = read_export(path, self.config.mapping)
        with self._lock:
            self._export = (signature, data)
            self._derived = {k: v for k, v in self._derived.items() if k[0] != "export"}
        return data

    def derived(self, key: tuple, compute: Callable[[], object]):
        """``compute()`` cached under ``key`` until the board (key[0] "board") or the export
        (key[0] "export") it was computed from changes."""
        with self._lock:
            if key in self._derived:
                return self._derived[key]
        value = compute()
        with self._lock:
            self._derived[key] = value
        return value
