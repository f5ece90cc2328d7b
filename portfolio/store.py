"""The score store: every explained score kept with its history, one row per deal, as-of and model pair.

Why a store: a score answered to a CRM's HTTP call is gone once answered, and a manager's Monday
list needs history (how did this deal move since last week?). ``dealrisk score`` and, when
switched on, ``POST /score`` write here; ``dealrisk rank`` and the views of ``portfolio`` read.

SQLAlchemy Core on any database it speaks: a SQLite file by default (``data/scores.db`` under the
current folder, created on first use), a server database by URL
(``DEALRISK_STORE_URL=postgresql://user@host/db``; ``postgresql://`` is read as
``postgresql+psycopg://``, the driver this project installs).

Two tables:

``scoring_runs``: one row per write (a ``dealrisk score`` run or a batch of ``/score`` calls),
so "since the last run" has a meaning. Columns of ``ScoreStore.runs()``:

| column | meaning |
|---|---|
| ``run_id`` | int, increasing with every write |
| ``scored_at`` | UTC timestamp of the write |
| ``as_of`` | UTC timestamp the deals were scored as of (the latest one when an API batch mixes several) |
| ``source`` | ``batch`` (``dealrisk score``) or ``api`` (``POST /score``) |
| ``origin`` | what was scored: the export folder as given, or the route |
| ``deals`` | number of deals written |
| ``win_version``, ``slip_version`` | registry versions of the models |

``deal_scores``: the key is (``deal_id``, ``as_of``, ``win_version``, ``slip_version``); writing
the same key again replaces the row (re-scoring is idempotent), never duplicates it. Columns of
the frames ``ScoreStore.history()``, ``latest()`` and ``snapshots()`` return (``SCORE_COLUMNS``):

| column | dtype | meaning |
|---|---|---|
| ``deal_id`` | str | the CRM's deal id |
| ``as_of`` | datetime64[us, UTC] | the moment the deal was scored as of |
| ``win_version``, ``slip_version`` | str | registry versions of the win and slip models (``slip_version`` "" when the champion has no slip model) |
| ``run_id`` | int64 | the ``scoring_runs`` row that last wrote it |
| ``scored_at`` | datetime64[us, UTC] | when it was written |
| ``source`` | str | ``batch`` or ``api`` (the run's) |
| ``owner_id`` | str | the deal's owner as the export or request has it (not tracked over time) |
| ``stage`` | str | canonical stage as of ``as_of`` (from the stage history; the deals row's without one) |
| ``amount`` | float64 | amount as of ``as_of`` (from the field history); NaN when unknown |
| ``expected_close_date`` | datetime64[us, UTC] | expected close date known at ``as_of``; NaT when unknown |
| ``segment``, ``lead_source`` | str | the deal's segment and lead source (channel) |
| ``win_probability``, ``slip_probability`` | float64 | calibrated probabilities (slip missing without a slip model) |
| ``score`` | int64 | win probability in percent, 1-99 |
| ``grade`` | str | A-D (``features.model.grades``) |
| ``risk_level`` | str | as ``features.model.grades`` defines it at scoring time |
| ``value_at_risk`` | float64 | amount x (1 - win probability) |
| ``top_reason`` | str | sentence of the factor lowering the win probability most ("" when none) |
| ``warning_codes`` | str | the warnings' codes, sorted, comma-separated ("" when none) |
| ``factors_up``, ``factors_down`` | list of dict | ``feature, value, contribution, sentence`` (the service's factors) |
| ``warnings`` | list of dict | ``code, message`` |
| ``actions`` | list of dict or None | next best actions when the scorer computed them (``features.model.actions``); None otherwise |

``snapshots()`` adds ``snapshot``: 0 for each deal's latest as-of, 1 for the one before it (see
``portfolio.trend``). Rows to write come from ``score_rows`` (``WRITE_COLUMNS``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic_core
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

DEFAULT_STORE_URL = "sqlite:///data/scores.db"
STORE_URL_VARIABLE = "DEALRISK_STORE_URL"
SOURCES = ("batch", "api")
# Rows per INSERT statement: bounded memory and statement size whatever the run's size.
WRITE_CHUNK = 5000
# A write of at least this many rows refreshes PostgreSQL's table statistics (``ScoreStore._analyze``).
ANALYZE_AFTER_ROWS = 10_000

metadata = sa.MetaData()

scoring_runs = sa.Table(
    "scoring_runs",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("origin", sa.String(1000), nullable=False),
    sa.Column("deals", sa.Integer, nullable=False),
    sa.Column("win_version", sa.String(64), nullable=False),
    sa.Column("slip_version", sa.String(64), nullable=False),
)

KEY_COLUMNS = ("deal_id", "as_of", "win_version", "slip_version")

deal_scores = sa.Table(
    "deal_scores",
    metadata,
    sa.Column("deal_id", sa.String(200), primary_key=True),
    sa.Column("as_of", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("win_version", sa.String(64), primary_key=True),
    sa.Column("slip_version", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("scoring_runs.run_id"), nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("owner_id", sa.String(200)),
    sa.Column("stage", sa.String(64)),
    sa.Column("amount", sa.Float),
    sa.Column("expected_close_date", sa.DateTime(timezone=True)),
    sa.Column("segment", sa.String(200)),
    sa.Column("lead_source", sa.String(200)),
    sa.Column("win_probability", sa.Float, nullable=False),
    sa.Column("slip_probability", sa.Float, nullable=True),  # null: the champion has no slip model
    sa.Column("score", sa.Integer, nullable=False),
    sa.Column("grade", sa.String(8), nullable=False),
    sa.Column("risk_level", sa.String(16), nullable=False),
    sa.Column("value_at_risk", sa.Float, nullable=False),
    sa.Column("top_reason", sa.Text, nullable=False),
    sa.Column("warning_codes", sa.Text, nullable=False),
    sa.Column("factors_up", sa.JSON, nullable=False),
    sa.Column("factors_down", sa.JSON, nullable=False),
    sa.Column("warnings", sa.JSON, nullable=False),
    sa.Column("actions", sa.JSON(none_as_null=True), nullable=True),
    sa.Index("ix_deal_scores_as_of", "as_of"),
    sa.Index("ix_deal_scores_run_id", "run_id"),
)

# Columns a caller hands to ``ScoreStore.write`` (``score_rows`` builds them).
WRITE_COLUMNS: tuple[str, ...] = tuple(c.name for c in deal_scores.columns if c.name not in ("run_id", "scored_at"))
# Columns of the frames the store returns, in this order.
SCORE_COLUMNS: tuple[str, ...] = (
    *KEY_COLUMNS, "run_id", "scored_at", "source", *[c for c in WRITE_COLUMNS if c not in KEY_COLUMNS],
)
RUN_COLUMNS: tuple[str, ...] = tuple(c.name for c in scoring_runs.columns)
TIME_COLUMNS = ("as_of", "scored_at", "expected_close_date")
JSON_COLUMNS = ("factors_up", "factors_down", "warnings", "actions")
TEXT_COLUMNS = ("deal_id", "win_version", "slip_version", "source", "owner_id", "stage", "segment", "lead_source",
                "grade", "risk_level", "top_reason", "warning_codes")


def _dump_json(value) -> str:
    """JSON text of a cell (pydantic-core's writer: 5x the standard library's on factor lists)."""
    return pydantic_core.to_json(value, inf_nan_mode="null").decode()


# The engine's JSON codec for the JSON columns (SQLAlchemy's default is the json module).
JSON_CODEC = {"json_serializer": _dump_json, "json_deserializer": pydantic_core.from_json}


class StoreError(RuntimeError):
    """The score store cannot be opened, read or written; the message says which store and why."""


# --- rows to write (pure) -----------------------------------------------------------------------


def score_rows(explained: pd.DataFrame, features: pd.DataFrame, deals: pd.DataFrame, versions: dict,
               actions: list | None = None) -> pd.DataFrame:
    """Store rows from one scoring pass: ``WRITE_COLUMNS``, one row per scored deal.

    The three frames are aligned by position, as the scoring path produces them:
    ``explain_scores`` output (``deal_id``, ``as_of``, the explanation, ``amount``), the
    ``build_features`` frame it was computed from (``current_stage``,
    ``days_to_expected_close``) and the contract's ``deals`` rows of the same deals
    (``owner_id``, ``segment``, ``lead_source``). ``versions`` holds ``win`` and ``slip``;
    ``actions`` (one list per deal, or None) the next best actions when computed.

    >>> import pandas as pd
    >>> at = pd.Series(pd.to_datetime(["2026-03-01"], utc=True))
    >>> explained = pd.DataFrame({"deal_id": ["D1"], "as_of": at, "win_probability": [0.25], "score": [25],
    ...     "grade": ["C"], "slip_probability": [0.5], "risk_level": ["medium"], "value_at_risk": [750.0],
    ...     "factors_up": [[]], "factors_down": [[{"feature": "days_in_stage", "sentence": "In stage for 41 days"}]],
    ...     "warnings": [[{"code": "no_activity", "message": "..."}, {"code": "ghosted", "message": "..."}]],
    ...     "amount": [1000.0]})
    >>> features = pd.DataFrame({"current_stage": ["negotiate"], "days_to_expected_close": [10.0]})
    >>> deals = pd.DataFrame({"owner_id": ["O1"], "segment": ["smb"], "lead_source": ["web"]})
    >>> row = score_rows(explained, features, deals, {"win": "3", "slip": "3"}).iloc[0]
    >>> row["stage"], str(row["expected_close_date"].date()), row["top_reason"], row["warning_codes"]
    ('negotiate', '2026-03-11', 'In stage for 41 days', 'ghosted,no_activity')
    """
    n = len(explained)
    if len(features) != n or len(deals) != n:
        raise ValueError(f"score_rows: explained ({n} rows), features ({len(features)}) and deals "
                         f"({len(deals)}) must be the same deals in the same order")
    if actions is not None and len(actions) != n:
        raise ValueError(f"score_rows: {len(actions)} action lists for {n} deals")
    as_of = _utc_series(explained["as_of"])
    days = pd.to_numeric(pd.Series(np.asarray(features["days_to_expected_close"], dtype=float)), errors="coerce")
    # Back from days to a time: rounded to the second, what float days lose (23:59:59.999999).
    close = (as_of + pd.to_timedelta(days.to_numpy(), unit="D")).dt.round("s")
    # Without field_history the feature is unknown (the training rule); a request's deal is the deal as
    # of its as_of, so its row's date is the one known then, as the answer's amount is (with_current_amount).
    if "expected_close_date" in deals:
        close = close.fillna(pd.Series(pd.to_datetime(np.asarray(deals["expected_close_date"]), utc=True), index=close.index))
    # The stage history's stage at as_of; the deals row's stage when the export has no history.
    stage = pd.Series(np.asarray(features["current_stage"], dtype=object))
    if "stage" in deals:
        stage = stage.fillna(pd.Series(np.asarray(deals["stage"], dtype=object)))
    factors_down = explained["factors_down"].tolist()
    warnings = explained["warnings"].tolist()
    columns = {
        "deal_id": explained["deal_id"].astype(str).to_numpy(dtype=object),
        "as_of": as_of.to_numpy(),
        "win_version": np.full(n, str(versions.get("win", "")), dtype=object),
        # A win-only champion (no slip model trained: features.pointintime.inputs) keys its rows by "".
        "slip_version": np.full(n, str(versions.get("slip") or ""), dtype=object),
        "owner_id": _texts(deals["owner_id"]),
        "stage": _texts(stage),
        "amount": explained["amount"].to_numpy(dtype=float, na_value=np.nan),
        "expected_close_date": close.to_numpy(),
        "segment": _texts(deals["segment"]),
        "lead_source": _texts(deals["lead_source"]),
        "win_probability": explained["win_probability"].to_numpy(dtype=float),
        "slip_probability": explained["slip_probability"].to_numpy(dtype=float),
        "score": explained["score"].to_numpy(dtype=np.int64),
        "grade": explained["grade"].astype(str).to_numpy(dtype=object),
        "risk_level": explained["risk_level"].astype(str).to_numpy(dtype=object),
        "value_at_risk": explained["value_at_risk"].to_numpy(dtype=float, na_value=np.nan),
        "top_reason": [str(down[0].get("sentence", "")) if down else "" for down in factors_down],
        "warning_codes": [",".join(sorted(w["code"] for w in items)) if items else "" for items in warnings],
        "factors_up": explained["factors_up"].tolist(),
        "factors_down": factors_down,
        "warnings": warnings,
        "actions": list(actions) if actions is not None else [None] * n,
    }
    return pd.DataFrame(columns, columns=list(WRITE_COLUMNS))


def _texts(values) -> np.ndarray:
    """Text cells as Python str, missing as None (what the database gets)."""
    series = pd.Series(values)
    return np.where(series.isna().to_numpy(), None, series.astype(str).to_numpy(dtype=object))


def _utc_series(values) -> pd.Series:
    """A column of times as UTC timestamps (microseconds); naive times are read as UTC."""
    series = pd.Series(pd.to_datetime(pd.Series(values).reset_index(drop=True), utc=True))
    return series.astype("datetime64[us, UTC]")


# --- the store (the edge) -------------------------------------------------------------------------


def store_url(environ: dict[str, str] | None = None) -> str:
    """The store's URL: ``DEALRISK_STORE_URL``, else ``sqlite:///data/scores.db``.

    >>> store_url({"DEALRISK_STORE_URL": "postgresql://scores@db/scores"})
    'postgresql+psycopg://scores@db/scores'
    >>> store_url({})
    'sqlite:///data/scores.db'
    """
    env = os.environ if environ is None else environ
    url = (env.get(STORE_URL_VARIABLE) or "").strip() or DEFAULT_STORE_URL
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def describe_url(url: str) -> str:
    """The URL with any password hidden, for messages.

    >>> describe_url("postgresql+psycopg://me:secret@db:5432/scores")
    'postgresql+psycopg://me:***@db:5432/scores'
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable store URL)"


@dataclass(frozen=True)
class ScoreStore:
    """An opened score store; ``ScoreStore.open(url)`` creates its tables when missing."""

    engine: sa.Engine
    url: str

    @classmethod
    def open(cls, url: str | None = None, create: bool = True) -> "ScoreStore":
        """Connect, create the tables if missing (``create``), check an existing store's layout.

        A SQLite file's folder is created; SQLite runs in WAL mode so ``rank`` can read while
        ``score`` or the service writes, and waits up to 30 s for another writer's lock.
        ``create=False`` (readers) never creates anything: a store that does not exist yet is a
        ``StoreError`` saying how to fill it.
        """
        url = url or store_url()
        shown = describe_url(url)
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise StoreError(f"score store URL {url!r} is not a database URL: {exc}") from None
        empty = StoreError(f"the score store {shown} holds no scores yet; fill it with 'dealrisk score --data EXPORT_FOLDER'")
        try:
            if parsed.get_backend_name() == "sqlite":
                on_disk = parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:")
                if on_disk and not create and not Path(parsed.database).exists():
                    raise empty
                if on_disk:
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(parsed, connect_args={"timeout": 30}, **JSON_CODEC)
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = sa.create_engine(parsed, pool_pre_ping=True, **JSON_CODEC)
            if create:
                _create_tables(engine)
            elif not all(sa.inspect(engine).has_table(table.name) for table in (scoring_runs, deal_scores)):
                engine.dispose()
                raise empty
            _check_layout(engine)
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            raise StoreError(f"score store {shown}: no driver for this database ({exc})") from None
        except SQLAlchemyError as exc:
            raise StoreError(f"score store {shown} cannot be opened: {_short(exc)}") from None
        except OSError as exc:
            raise StoreError(f"score store {shown} cannot be opened: {exc}") from None
        return cls(engine=engine, url=url)

    def close(self) -> None:
        self.engine.dispose()

    def describe(self) -> str:
        """The store's URL for messages, password hidden."""
        return describe_url(self.url)

    # --- writing ---

    def write(self, rows: pd.DataFrame, source: str, origin: str, now: pd.Timestamp | None = None) -> int:
        """Record one run and upsert its rows, all in ONE transaction; return the run id.

        ``rows`` has ``WRITE_COLUMNS`` (``score_rows``). A row whose key (deal, as-of, model
        versions) is already stored replaces it; a key twice in ``rows`` keeps the last. Any
        failure rolls the whole write back: the store never holds half a run.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        missing = [c for c in WRITE_COLUMNS if c not in rows.columns]
        if missing:
            raise ValueError(f"rows to store lack columns {missing}; build them with portfolio.store.score_rows")
        rows = rows.drop_duplicates(list(KEY_COLUMNS), keep="last")
        scored_at = _utc_datetime(pd.Timestamp.now(tz="UTC") if now is None else now)
        as_ofs = _utc_series(rows["as_of"])
        versions = rows[["win_version", "slip_version"]].drop_duplicates()
        run = {
            "scored_at": scored_at,
            "as_of": _utc_datetime(as_ofs.max()) if len(rows) else None,
            "source": source,
            "origin": str(origin)[:1000],
            "deals": int(len(rows)),
            "win_version": ",".join(sorted(set(versions["win_version"].astype(str)))),
            "slip_version": ",".join(sorted(set(versions["slip_version"].astype(str)))),
        }
        try:
            with self.engine.begin() as conn:
                run_id = int(conn.execute(scoring_runs.insert().returning(scoring_runs.c.run_id), run).scalar_one())
                sql, order = self._upsert_sql(conn)
                for start in range(0, len(rows), WRITE_CHUNK):
                    chunk = rows.iloc[start:start + WRITE_CHUNK]
                    conn.exec_driver_sql(sql, _driver_rows(chunk, run_id, scored_at, conn.dialect.name, order))
        except SQLAlchemyError as exc:
            raise StoreError(f"score store {describe_url(self.url)}: nothing written, the write failed: {_short(exc)}") from None
        if self.engine.dialect.name == "postgresql" and len(rows) >= ANALYZE_AFTER_ROWS:
            self._analyze()
        return run_id

    def _analyze(self) -> None:
        """Refresh PostgreSQL's statistics after a large write. Without them, right after the first
        ``dealrisk score`` run (autovacuum has not run yet), the planner guessed 27k rows for 200k
        and read each deal's snapshots by 200k index look-ups: 5.0 s against 2.4 s analysed."""
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE deal_scores")
                conn.exec_driver_sql("ANALYZE scoring_runs")
        except SQLAlchemyError:
            pass  # only the planner's estimates are stale: the write is committed, reads stay right

    def _upsert_sql(self, conn) -> tuple[str, tuple[str, ...] | None]:
        """The upsert compiled once by the dialect, and the column order of its parameters
        (None: named parameters).

        The rows then go to the driver's ``executemany`` as plain tuples or dicts, already in the
        form each column binds (``_driver_rows``): SQLAlchemy's per-row parameter processing
        took half of a 20,000-row write.
        """
        names = [c.name for c in deal_scores.columns]
        compiled = self._upsert().compile(dialect=conn.dialect, column_keys=names)
        if set(compiled.binds) != set(names):
            raise StoreError(f"score store: unexpected parameters of the upsert: {sorted(compiled.binds)}")
        return compiled.string, tuple(compiled.positiontup) if compiled.positional else None

    def _upsert(self):
        """INSERT that replaces a row with the same key (SQLite, PostgreSQL: ON CONFLICT DO UPDATE)."""
        dialect = self.engine.dialect.name
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
        if insert is None:
            raise StoreError(f"score store {describe_url(self.url)}: {dialect} is not supported; use SQLite or PostgreSQL")
        statement = insert(deal_scores)
        replaced = {c.name: statement.excluded[c.name] for c in deal_scores.columns if c.name not in KEY_COLUMNS}
        return statement.on_conflict_do_update(index_elements=list(KEY_COLUMNS), set_=replaced)

    # --- reading ---

    def runs(self) -> pd.DataFrame:
        """Every scoring run, oldest first (``RUN_COLUMNS``)."""
        statement = sa.select(scoring_runs).order_by(scoring_runs.c.run_id)
        return _frame(self._read(statement), RUN_COLUMNS)

    def history(self, deal_ids=None, as_of_from=None, as_of_to=None) -> pd.DataFrame:
        """Stored scores (``SCORE_COLUMNS``), optionally of some deals and an as-of range (both
        ends included), ordered by deal and as-of."""
        statement = self._select()
        if deal_ids is not None:
            statement = statement.where(deal_scores.c.deal_id.in_([str(d) for d in deal_ids]))
        if as_of_from is not None:
            statement = statement.where(deal_scores.c.as_of >= _utc_datetime(as_of_from))
        if as_of_to is not None:
            statement = statement.where(deal_scores.c.as_of <= _utc_datetime(as_of_to))
        statement = statement.order_by(deal_scores.c.deal_id, deal_scores.c.as_of, deal_scores.c.run_id)
        return _frame(self._read(statement), SCORE_COLUMNS)

    def snapshots(self, current_only: bool = True, json_columns: bool = True,
                  columns: tuple[str, ...] | None = None) -> pd.DataFrame:
        """Each deal's latest snapshot (``snapshot`` 0) and the one before it (1).

        A deal's latest snapshot is its row with the latest ``as_of`` (of several model pairs
        at that as-of, the one written last); the previous one is its latest row with an
        earlier ``as_of``. ``current_only`` keeps the deals still in the pipeline: those whose
        latest as-of is at or after the latest as-of of any ``batch`` run (a deal that closed
        is no longer in a full scoring run), all deals when no batch run exists; the database
        leaves the others out, so a store holding years of closed deals reads as fast as a new one.
        ``json_columns=False`` leaves ``factors_up``, ``factors_down`` and ``warnings`` out
        (None), which is what reading 100k deals for a table costs most; ``columns`` reads only
        those of ``SCORE_COLUMNS`` (the key, ``run_id`` and ``scored_at`` always; the rest None).
        """
        return self._snapshots(current_only, json_columns, columns, depth=2)

    def latest(self, current_only: bool = True, json_columns: bool = True,
               columns: tuple[str, ...] | None = None) -> pd.DataFrame:
        """Each deal's latest snapshot (``snapshots``' ``snapshot == 0`` rows), one row per deal."""
        frame = self._snapshots(current_only, json_columns, columns, depth=1)
        return frame.drop(columns="snapshot")

    def _snapshots(self, current_only: bool, json_columns: bool, columns, depth: int) -> pd.DataFrame:
        # Per deal, its latest as-of and the latest one before it, found by aggregates that walk
        # the primary key (deal_id, as_of, ...) in order; window functions sorted every row.
        cutoff = self.latest_batch_as_of() if current_only else None
        newest = sa.func.max(deal_scores.c.as_of)
        latest = sa.select(deal_scores.c.deal_id, newest.label("as_of")).group_by(deal_scores.c.deal_id)
        if cutoff is not None:
            latest = latest.having(newest >= _utc_datetime(cutoff))
        latest = latest.cte("latest")
        levels = [latest]
        if depth > 1:
            earlier = deal_scores.alias("earlier")
            levels.append(
                sa.select(earlier.c.deal_id, sa.func.max(earlier.c.as_of).label("as_of"))
                .join(latest, sa.and_(earlier.c.deal_id == latest.c.deal_id, earlier.c.as_of < latest.c.as_of))
                .group_by(earlier.c.deal_id)
                .cte("previous")
            )
        always = {*KEY_COLUMNS, "run_id", "scored_at"}
        picked = [c for c in deal_scores.columns
                  if c.name in always or ((columns is None or c.name in columns)
                                          and (json_columns or c.name not in ("factors_up", "factors_down", "warnings")))]
        # One statement, so the database computes the latest as-ofs once.
        wanted = sa.union_all(*(
            sa.select(level.c.deal_id, level.c.as_of, sa.literal_column(str(snapshot)).label("snapshot"))
            for snapshot, level in enumerate(levels)
        )).cte("wanted") if len(levels) > 1 else sa.select(
            latest.c.deal_id, latest.c.as_of, sa.literal_column("0").label("snapshot")).cte("wanted")
        statement = (
            sa.select(*picked, wanted.c.snapshot, scoring_runs.c.source)
            .join(wanted, sa.and_(deal_scores.c.deal_id == wanted.c.deal_id, deal_scores.c.as_of == wanted.c.as_of))
            .join(scoring_runs, scoring_runs.c.run_id == deal_scores.c.run_id)
        )
        frame = _frame(self._read(statement), (*SCORE_COLUMNS, "snapshot"))
        # Of several model pairs scored at one as-of, the row written last.
        return (frame.sort_values(["deal_id", "snapshot", "scored_at", "run_id"], ascending=[True, True, False, False],
                                  kind="stable")
                .drop_duplicates(["deal_id", "snapshot"])
                .reset_index(drop=True))

    def latest_batch_as_of(self) -> pd.Timestamp | None:
        """The latest as-of any ``dealrisk score`` run scored (None before the first)."""
        statement = sa.select(sa.func.max(scoring_runs.c.as_of)).where(scoring_runs.c.source == "batch")
        _, rows = self._read(statement)
        value = rows[0][0] if rows else None
        return None if value is None else _utc_timestamp(value)

    def _select(self):
        return (
            sa.select(deal_scores, scoring_runs.c.source)
            .join(scoring_runs, scoring_runs.c.run_id == deal_scores.c.run_id)
        )

    def _read(self, statement) -> list:
        try:
            with self.engine.connect() as conn:
                result = conn.execute(statement)
                return [result.keys(), result.all()]
        except SQLAlchemyError as exc:
            raise StoreError(f"score store {describe_url(self.url)} cannot be read: {_short(exc)}") from None


def _sqlite_pragmas(connection, _record) -> None:
    """WAL: readers do not block the writer (``rank`` during a ``score`` or service write)."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _short(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's statement dump."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _utc_timestamp(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _utc_datetime(value):
    """A UTC-aware ``datetime`` for the database: SQLite keeps the wall time and drops the
    offset, so every time is bound in UTC (PostgreSQL's timestamptz gets the same instant)."""
    if value is None or pd.isna(value):
        return None
    return _utc_timestamp(value).to_pydatetime()


# SQLAlchemy's storage format of a DateTime on SQLite (text): rows written here read back like its own.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def _driver_rows(rows: pd.DataFrame, run_id: int, scored_at, dialect: str, order: tuple[str, ...] | None) -> list:
    """Rows as the driver binds them, column by column: None for missing, JSON as text, times in
    UTC (SQLite: SQLAlchemy's text format; PostgreSQL: aware datetimes for timestamptz)."""
    n = len(rows)
    columns: dict[str, list] = {}
    for name in WRITE_COLUMNS:
        values = rows[name]
        if name in TIME_COLUMNS:
            stamps = _utc_series(values)
            missing = stamps.isna().to_numpy()
            if dialect == "sqlite":
                cells = stamps.dt.tz_localize(None).dt.strftime(SQLITE_TIME_FORMAT).to_numpy(dtype=object, na_value=None)
            else:
                cells = np.array(stamps.dt.to_pydatetime(), dtype=object) if n else np.array([], dtype=object)
            columns[name] = np.where(missing, None, cells).tolist() if n else []
        elif values.dtype.kind == "f":
            array = values.to_numpy(dtype=float)
            columns[name] = np.where(np.isfinite(array), array, None).tolist() if n else []
        elif values.dtype.kind in "iu":
            columns[name] = values.to_numpy().tolist()
        elif name in JSON_COLUMNS:
            columns[name] = [None if v is None else _dump_json(v) for v in values.tolist()]
        else:
            columns[name] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values.tolist()]
    columns["run_id"] = [run_id] * n
    stamp = pd.Timestamp(scored_at)
    columns["scored_at"] = [stamp.tz_convert("UTC").tz_localize(None).strftime(SQLITE_TIME_FORMAT)
                            if dialect == "sqlite" else scored_at] * n
    if order is not None:
        return list(zip(*(columns[name] for name in order)))
    names = list(columns)
    return [dict(zip(names, cells)) for cells in zip(*columns.values())]


def _frame(read: list, columns: tuple[str, ...]) -> pd.DataFrame:
    """Database rows as a frame with the documented dtypes (UTC times, str text, lists for JSON)."""
    keys, rows = read
    # Column by column from the row tuples: DataFrame.from_records probes every Row object.
    cells = dict(zip(list(keys), (np.fromiter(column, dtype=object, count=len(rows)) for column in zip(*rows))))
    empty = np.array([], dtype=object)
    out = {}
    for name in columns:
        if rows and name not in cells:  # a column not read: None whatever its type
            out[name] = pd.Series(np.full(len(rows), None, dtype=object), dtype=object)
            continue
        values = pd.Series(cells.get(name, empty), dtype=object)
        if name in TIME_COLUMNS:
            out[name] = _utc_series(values) if len(values) else pd.Series([], dtype="datetime64[us, UTC]")
        elif name in ("run_id", "score", "deals", "snapshot"):
            out[name] = values.astype("int64")
        elif name in ("amount", "win_probability", "slip_probability", "value_at_risk"):
            out[name] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif name in JSON_COLUMNS:
            out[name] = values.astype(object)
        else:
            out[name] = values.astype("str") if name in TEXT_COLUMNS or name in ("origin",) else values
    return pd.DataFrame(out, columns=list(columns))


def _create_tables(engine, attempts: int = 5) -> None:
    """``metadata.create_all``, safe when several processes open a new store at the same moment.

    Each service worker opens the store at start-up. On a new PostgreSQL database two of them can
    both see no table and both send ``CREATE TABLE``; the slower one fails with a duplicate key in
    ``pg_type`` (an ``IntegrityError``) or "already exists" (``ProgrammingError``) and its worker
    stopped the service. ``create_all`` checks first, so trying again skips what the other made.
    """
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _check_layout(engine: sa.Engine) -> None:
    """An existing store must have every column this version reads and writes."""
    inspector = sa.inspect(engine)
    for table in (scoring_runs, deal_scores):
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in present]
        if missing:
            raise StoreError(
                f"table {table.name} of the score store lacks columns {missing} (written by an older version); "
                "move the store aside or point DEALRISK_STORE_URL at a new one"
            )
