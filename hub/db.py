"""The database handle: one peewee proxy, bound at start to SQLite (embedded) or PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee
from playhouse.db_url import parse as db_url_parse
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from hub.config import ConfigError, Settings

db = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 15000,
    "foreign_keys": 1,
    "cache_size": -16000,
}


#: connections one process may hold to PostgreSQL at once
PG_POOL_SIZE = 24


def open_database(settings: Settings) -> peewee.Database:
    """Open the configured database and bind the models' proxy to it."""
    url = settings.database_url
    if settings.is_sqlite:
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Pooled: every request (a greenlet under gevent) would otherwise open a connection and
        # apply the pragmas again — a third of a webhook's cost when profiled.
        database = PooledSqliteDatabase(path, pragmas=SQLITE_PRAGMAS, check_same_thread=False,
                                        max_connections=64, stale_timeout=300, timeout=30)
    else:
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        # One pooled connection per thread (greenlet); returned at the end of each unit of work. At most
        # PG_POOL_SIZE per process: beyond it, callers wait (cooperatively under gevent) for a free one,
        # so several API and worker processes stay under PostgreSQL's max_connections (100 by default;
        # measured: two API processes at concurrency 64 exhausted it with a limit of 64 each).
        database = BatchingPostgresDatabase(**db_url_parse(url), max_connections=PG_POOL_SIZE,
                                            stale_timeout=300, timeout=30)
    db.initialize(database)
    return database


def check_database() -> None:
    """Raise ConfigError naming HOOKHUB_DATABASE_URL when the database cannot be reached."""
    try:
        with connection():
            db.execute_sql("SELECT 1")
    except peewee.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"HOOKHUB_DATABASE_URL: cannot connect: {first}") from None


@contextlib.contextmanager
def connection() -> Iterator[None]:
    """Hold a connection for one unit of work and hand it back afterwards (pools on PostgreSQL)."""
    opened = db.connect(reuse_if_open=True)
    try:
        yield
    finally:
        if opened:
            db.close()


def write_transaction():
    """A write transaction. SQLite takes the write lock up front (IMMEDIATE) so that two writers
    never deadlock upgrading read locks; PostgreSQL uses row locks (``select_for_update``)."""
    if isinstance(db.obj, peewee.SqliteDatabase):  # the pooled class is a subclass
        return _SqliteWrite()
    return db.atomic()


class _SqliteWrite:
    """``BEGIN IMMEDIATE``, waiting for the write lock in Python rather than in SQLite's busy handler.

    The busy handler sleeps inside C in steps that grow to 100 ms: under gevent (the API server) that
    froze every request of the process while one waited, and a waiter often slept long after the lock
    was free (embedded ingest p99 of seconds). Here the wait is ``time.sleep`` — cooperative under
    gevent — in steps of at most 2 ms, for as long as the busy timeout allows.
    """

    def __enter__(self):
        self._atomic = db.atomic("IMMEDIATE")
        if db.transaction_depth() > 0:  # nested: a savepoint inside a transaction holding the lock
            return self._atomic.__enter__()
        conn = db.connection()
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            deadline = time.monotonic() + SQLITE_PRAGMAS["busy_timeout"] / 1000
            delay = 0.0002
            while True:
                try:
                    return self._atomic.__enter__()
                except peewee.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        raise
                time.sleep(delay)
                delay = min(delay * 2, 0.002)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {SQLITE_PRAGMAS['busy_timeout']}")

    def __exit__(self, *exc):
        return self._atomic.__exit__(*exc)


class BatchingPostgresDatabase(PooledPostgresqlDatabase):
    """Pooled PostgreSQL that sends a transaction's deferred writes with its next statement.

    A write whose result nobody reads (:meth:`defer`, :meth:`Prepared.execute_later`) waits in the
    transaction; the next statement, or the COMMIT, carries it to the server in the same round trip
    (psycopg2 binds parameters client-side, so the batch is the same SQL the server would have seen
    one statement at a time). ``BEGIN`` waits the same way for the transaction's first statement.
    Measured per node: 16 round trips became 8. An error in a deferred write surfaces at the
    statement that carried it, inside the same transaction, which then rolls back as before.
    """

    def _pending(self) -> list[bytes]:
        pending = getattr(self._state, "hub_pending", None)
        if pending is None:
            pending = self._state.hub_pending = []
        return pending

    def defer(self, sql: str, params: Any = None) -> None:
        """Run a write later in this transaction (now, outside one)."""
        if self.transaction_depth() == 0:
            self.execute_sql(sql, params)
            return
        self._pending().append(self.cursor().mogrify(sql, params or ()))

    def begin(self, isolation_level: Any = None) -> None:
        stmt = "BEGIN"
        level = isolation_level if isolation_level is not None else self._isolation_level
        if level:
            stmt += " TRANSACTION ISOLATION LEVEL " + self._adapter.isolation_level_str(level)
        self._pending().append(stmt.encode())

    def _send(self, last: bytes):
        """Send the pending statements and ``last`` (all bound already) in one round trip."""
        pending = self._pending()
        batch = b";".join([*pending, last])
        pending.clear()
        self._log_query(batch, None)
        with peewee.__exception_wrapper__:
            cursor = self.cursor()
            cursor.execute(batch)  # no parameters: a '%' in a bound value must stay as it is
        return cursor

    def execute_sql(self, sql: str, params: Any = None):
        if not self._pending():
            return super().execute_sql(sql, params)
        return self._send(self.cursor().mogrify(sql, params or ()))  # as peewee binds: `params or ()`

    def _begun(self) -> bool:
        """Whether the server has seen this transaction's BEGIN (a deferred one is still pending)."""
        pending = self._pending()
        return not (pending and pending[0].startswith(b"BEGIN"))

    def commit(self) -> None:
        if not self._begun() and len(self._pending()) == 1:  # nothing was sent: nothing to commit
            self._pending().clear()
            return
        self._send(b"COMMIT")

    def rollback(self) -> None:
        begun = self._begun()
        self._pending().clear()
        if begun:
            super().rollback()

    #: a connection checked in less than this ago is handed out again without peewee's liveness
    #: check, a ``SELECT 1`` round trip on every checkout (≈ 5 % of a webhook's API time, and one more
    #: round trip per queue message). A connection that died within the window fails its first
    #: statement instead, which the caller's error handling sees as it would a failure a moment later.
    trust_checked_in_seconds = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._checked_in: dict[int, float] = {}  # id(connection) -> when it was last handed back
        super().__init__(*args, **kwargs)

    def _is_closed(self, conn) -> bool:
        at = self._checked_in.pop(id(conn), None)
        if (at is not None and not conn.closed and time.monotonic() - at < self.trust_checked_in_seconds
                and self._adapter.txn_status(conn) == self._adapter.txn_idle):
            return False
        return super()._is_closed(conn)

    def _close(self, conn, close_conn: bool = False) -> None:
        self._pending().clear()
        if close_conn:
            self._checked_in.pop(id(conn), None)
        else:
            self._checked_in[id(conn)] = time.monotonic()
        super()._close(conn, close_conn)


#: compiled multi-row INSERTs by (model, columns, row count, RETURNING column); see :func:`insert_rows`
_INSERTS: dict[tuple[Any, ...], Prepared] = {}
_INSERT_MAX_ROWS = 64  # larger inserts are compiled each time: rare, and each size would be a new entry


def insert_rows(model: type[peewee.Model], rows: list[dict[str, Any]], returning: peewee.Field | None = None,
                ) -> list[Any] | None:
    """INSERT ``rows`` (dicts keyed by field name, all with the same keys) in one statement, compiled
    once per shape like :class:`Prepared` (compiling a 32-row insert costs more than sending it).
    With ``returning``, run it now and give the returned rows; without, :func:`defer` it."""
    if not rows:
        return [] if returning is not None else None
    names = tuple(rows[0])
    if len(rows) > _INSERT_MAX_ROWS or any(tuple(row) != names for row in rows):
        query = model.insert_many(rows)
        if returning is None:
            defer(query.as_rowcount())
            return None
        return list(query.returning(returning).execute())
    key = (model, names, len(rows), returning)
    prepared = _INSERTS.get(key)
    if prepared is None:
        fields = [model._meta.fields[name] for name in names]

        def build(n: int = len(rows)) -> peewee.Query:
            query = model.insert_many([{f: param(f"{i}:{f.name}", f) for f in fields} for i in range(n)])
            return query.returning(returning) if returning is not None else query.as_rowcount()

        if len(_INSERTS) >= 1024:
            _INSERTS.clear()
        prepared = _INSERTS[key] = Prepared(build)
    values = {f"{i}:{name}": row[name] for i, row in enumerate(rows) for name in names}
    if returning is None:
        prepared.execute_later(**values)
        return None
    return prepared.rows(**values)


def defer(query: peewee.Query) -> None:
    """Run a write whose result is not needed with the transaction's next statement (PostgreSQL;
    SQLite runs it now: there is no round trip to save)."""
    _defer_sql(*query.sql())


def _defer_sql(sql: str, params: Any) -> None:
    database = db.obj
    if isinstance(database, BatchingPostgresDatabase):
        database.defer(sql, params)
    else:
        database.execute_sql(sql, params)


def is_postgres() -> bool:
    return isinstance(db.obj, peewee.PostgresqlDatabase)


class _Slot:
    """A parameter of a :class:`Prepared` statement: its name and what converts its value."""

    __slots__ = ("name", "convert")

    def __init__(self, name: str, convert: Callable[[Any], Any]) -> None:
        self.name = name
        self.convert = convert


def param(name: str, field: peewee.Field | None = None) -> peewee.Node:
    """A placeholder in a :class:`Prepared` statement, bound by keyword when it runs; ``field``
    converts the value as peewee would."""
    if isinstance(field, peewee.JSONField) and not is_postgres():
        # peewee writes JSON to SQLite as json(?): the function stays in the SQL text, the text is bound
        return peewee.fn.json(peewee.Value(_Slot(name, _json_text), converter=False))
    convert = field.db_value if field is not None else _as_is
    return peewee.Value(_Slot(name, convert), converter=False)  # compiled as a parameter, unconverted


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _as_is(value: Any) -> Any:
    return value


class Prepared:
    """A peewee query compiled once per database, then run with fresh parameters.

    Compiling is pure Python and costs more than running the statement on SQLite (measured: 0.8 ms
    for the claim's UPDATE … RETURNING, 0.2–0.3 ms for each of the others, ≈ 2.5 ms per node in
    all). The runtime's hot statements are built once with :func:`param` placeholders; each run only
    binds the values, converted by the fields the placeholders name. ``build`` must give the same
    SQL text every time for one database (the dialect may differ between databases).
    """

    def __init__(self, build: Callable[[], peewee.Query]) -> None:
        self._build = build
        self._compiled: weakref.WeakKeyDictionary[peewee.Database, tuple[peewee.Query, str, list[Any]]] = (
            weakref.WeakKeyDictionary())

    def _bind(self, values: dict[str, Any]) -> tuple[peewee.Query, str, list[Any]]:
        database = db.obj
        compiled = self._compiled.get(database)
        if compiled is None:
            query = self._build()
            compiled = self._compiled[database] = (query, *query.sql())
        query, sql, params = compiled
        return query, sql, [p.convert(values[p.name]) if isinstance(p, _Slot) else p for p in params]

    def bind(self, **values: Any) -> tuple[str, list[Any]]:
        """The SQL text and its parameters for these values."""
        return self._bind(values)[1:]

    def rows(self, **values: Any) -> list[Any]:
        """Run a SELECT or a statement with RETURNING: its rows as the query itself gives them (model
        instances, joined models attached)."""
        query, sql, params = self._bind(values)
        return list(query._get_cursor_wrapper(db.execute_sql(sql, params)))  # peewee's own row reader

    def first(self, **values: Any) -> Any:
        found = self.rows(**values)
        return found[0] if found else None

    def execute(self, **values: Any) -> int:
        """Run a write without RETURNING: the number of rows it changed."""
        _query, sql, params = self._bind(values)
        return db.execute_sql(sql, params).rowcount

    def execute_later(self, **values: Any) -> None:
        """Run a write whose row count nobody reads with the transaction's next statement (see
        :class:`BatchingPostgresDatabase`); SQLite runs it now."""
        _defer_sql(*self.bind(**values))
