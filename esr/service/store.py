"""The service's job store: one SQLite file (WAL) holding agencies, tokens, runs, their
events and the audit log.

Every thread opens its own connection (SQLite's rule); a write is one short transaction,
so a `kill -9` leaves either the whole of it or none. Events and audit entries are only
ever appended: they back the live stream's replay and the audit command.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from esr.run_directory import iso_at, now_iso

STORE_FILE = "esr.sqlite3"
# A newer service upgrades an older store by running the migrations it has not seen;
# the version is SQLite's own user_version.
MIGRATIONS = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY, agency TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
        policy TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT);
    CREATE TABLE runs (
        n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, agency TEXT NOT NULL,
        token_id TEXT NOT NULL, status TEXT NOT NULL, scenario_name TEXT NOT NULL,
        settings TEXT NOT NULL, idempotency_key TEXT, body_sha256 TEXT NOT NULL,
        run_dir TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, ended_at TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0, pids TEXT, live TEXT, verdict TEXT,
        reason TEXT);
    CREATE UNIQUE INDEX runs_idempotency ON runs (agency, idempotency_key);
    CREATE INDEX runs_by_agency ON runs (agency, n);
    CREATE INDEX runs_by_status ON runs (status, n);
    CREATE TABLE events (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL, type TEXT NOT NULL,
        data TEXT NOT NULL, PRIMARY KEY (run_id, seq));
    CREATE TABLE audit (
        n INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, action TEXT NOT NULL,
        agency TEXT, token_id TEXT, run_id TEXT, client TEXT, detail TEXT NOT NULL);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

QUEUED, STARTING, RUNNING, STOPPING, REPORTING = (
    "queued", "starting", "running", "stopping", "reporting")
PASSED, FAILED, CANCELLED, ERROR, INTERRUPTED = (
    "passed", "failed", "cancelled", "error", "interrupted")
# queued → starting → running → stopping → reporting → one of the ends
STATUSES = (QUEUED, STARTING, RUNNING, STOPPING, REPORTING,
            PASSED, FAILED, CANCELLED, ERROR, INTERRUPTED)
IN_PROGRESS = (STARTING, RUNNING, STOPPING, REPORTING)
ENDED = (PASSED, FAILED, CANCELLED, ERROR, INTERRUPTED)
NO_CURSOR = 2**62  # above every run's n: a listing from the newest run
# A run's place in the queue is read with its status, in one statement: one snapshot, so a
# queued run never shows without a position when the queue starts it meanwhile.
QUEUE_POSITION = (f"CASE WHEN runs.status = '{QUEUED}' THEN (SELECT COUNT(*) FROM runs AS ahead "
                  f"WHERE ahead.status = '{QUEUED}' AND ahead.n <= runs.n) END")
RUN_COLUMNS = f"runs.*, {QUEUE_POSITION} AS queue_position"
# A listed run as SQLite writes it, JSON columns embedded unparsed: a page of 200 runs took
# ~8 ms of Python as Run objects and models, well under 1 ms so.
LISTED_RUN = ("json_object('id', id, 'scenario', scenario_name, 'status', status, "
              f"'queue_position', {QUEUE_POSITION}, 'created_at', created_at, "
              "'started_at', started_at, 'ended_at', ended_at, 'settings', json(settings), "
              "'live', json(live), 'verdict', json(verdict), 'reason', reason)")


class StoreTooNew(Exception):
    """The store was written by a newer service than this one."""


@dataclass(frozen=True)
class Token:
    id: str
    agency: str
    policy: dict  # scopes, allowed targets, limits (agencies.Policy reads it)
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class Run:
    n: int
    id: str
    agency: str
    token_id: str
    status: str
    scenario_name: str
    settings: dict
    run_dir: Path
    created_at: str
    started_at: str | None
    ended_at: str | None
    cancel_requested: bool
    pids: list | None
    live: dict | None
    verdict: dict | None
    reason: str | None
    idempotency_key: str | None
    body_sha256: str
    queue_position: int | None = None  # 1 = next to start; None once out of the queue


@dataclass(frozen=True)
class Event:
    seq: int
    at: str
    type: str
    data: dict


class Store:
    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / STORE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()

    # ---- connections -------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # durable at each WAL checkpoint
            connection.execute("PRAGMA foreign_keys=ON")
            self._local.connection = connection
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, taken for writing at once (no upgrade deadlock between threads)."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _query(self, sql: str, *parameters) -> list[sqlite3.Row]:
        return self._connection().execute(sql, parameters).fetchall()

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreTooNew(f"{self.path} has schema version {version}; this service "
                                  f"knows up to {SCHEMA_VERSION}: run a newer esr-locust")
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def schema_version(self) -> int:
        return self._query("PRAGMA user_version")[0][0]

    def integrity(self) -> str:
        return self._query("PRAGMA integrity_check")[0][0]

    def secret(self, name: str) -> bytes:
        """A random key kept in the store (signing links and page sessions), made once."""
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
            if row is None:
                value = secrets.token_hex(32)
                db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (name, value))
                return bytes.fromhex(value)
        return bytes.fromhex(row["value"])

    # ---- tokens ------------------------------------------------------------------------------

    def add_token(self, token_id: str, agency: str, secret_hash: str, policy: dict) -> Token:
        with self._write() as db:
            db.execute("INSERT INTO tokens (id, agency, hash, policy, created_at) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (token_id, agency, secret_hash, json.dumps(policy), now_iso()))
        return self.token(token_id)

    def token(self, token_id: str) -> Token | None:
        rows = self._query("SELECT * FROM tokens WHERE id = ?", token_id)
        return _token(rows[0]) if rows else None

    def token_by_hash(self, secret_hash: str) -> Token | None:
        rows = self._query("SELECT * FROM tokens WHERE hash = ?", secret_hash)
        return _token(rows[0]) if rows else None

    def tokens(self) -> list[Token]:
        return [_token(row) for row in self._query("SELECT * FROM tokens ORDER BY created_at")]

    def revoke_token(self, token_id: str) -> bool:
        with self._write() as db:
            done = db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at "
                              "IS NULL", (now_iso(), token_id))
        return done.rowcount == 1

    # ---- runs --------------------------------------------------------------------------------

    def add_run(self, *, run_id: str, agency: str, token_id: str, scenario_name: str,
                settings: dict, run_dir: Path, body_sha256: str,
                idempotency_key: str | None) -> Run:
        with self._write() as db:
            db.execute(
                "INSERT INTO runs (id, agency, token_id, status, scenario_name, settings, "
                "idempotency_key, body_sha256, run_dir, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, agency, token_id, QUEUED, scenario_name, json.dumps(settings),
                 idempotency_key, body_sha256, str(run_dir), now_iso()))
            self._append_event(db, run_id, "status", {"status": QUEUED})
        return self.run(run_id)

    def run(self, run_id: str, agency: str | None = None) -> Run | None:
        """A run by id; with an agency, only that agency's (another's answers as unknown)."""
        runs = self._runs("id = ?", run_id)
        if not runs or (agency is not None and runs[0].agency != agency):
            return None
        return runs[0]

    def run_by_idempotency_key(self, agency: str, key: str) -> Run | None:
        runs = self._runs("agency = ? AND idempotency_key = ?", agency, key)
        return runs[0] if runs else None

    def runs(self, agency: str, *, before: int | None = None, limit: int = 50) -> list[Run]:
        """An agency's runs, newest first; `before` is the cursor (a run's n)."""
        return self._runs("agency = ? AND n < ? ORDER BY n DESC LIMIT ?",
                          agency, before if before is not None else NO_CURSOR, limit)

    def listed_runs(self, agency: str, *, before: int | None = None, limit: int = 50
                    ) -> list[tuple[int, str, str]]:
        """`runs`, as (n, id, the run's stored fields as JSON text) for the API's listing."""
        return [tuple(row) for row in self._query(
            f"SELECT n, id, {LISTED_RUN} FROM runs WHERE agency = ? AND n < ? "
            "ORDER BY n DESC LIMIT ?", agency, before if before is not None else NO_CURSOR, limit)]

    def runs_with_status(self, *statuses: str) -> list[Run]:
        marks = ",".join("?" * len(statuses))
        return self._runs(f"status IN ({marks}) ORDER BY n", *statuses)

    def runs_in_view(self, ended_within_s: float) -> list[Run]:
        """Every agency's runs in progress, and those ended in the last `ended_within_s`."""
        since = iso_at(time.time() - ended_within_s)  # stamps compare as text: one format
        marks = ",".join("?" * len(IN_PROGRESS))
        return self._runs(f"status IN ({marks}) OR ended_at >= ? ORDER BY n", *IN_PROGRESS,
                          since)

    def status_counts(self) -> dict[str, int]:
        return dict(self._query("SELECT status, COUNT(*) FROM runs GROUP BY status"))

    def _runs(self, where: str, *parameters) -> list[Run]:
        return [_run(row) for row in
                self._query(f"SELECT {RUN_COLUMNS} FROM runs WHERE {where}", *parameters)]

    def count_runs(self, agency: str, *statuses: str) -> int:
        marks = ",".join("?" * len(statuses))
        return self._query(f"SELECT COUNT(*) FROM runs WHERE agency = ? AND status IN ({marks})",
                           agency, *statuses)[0][0]

    def set_status(self, run_id: str, status: str, *, reason: str | None = None,
                   verdict: dict | None = None, event: dict | None = None,
                   only_from: tuple[str, ...] | None = None) -> bool:
        """Move a run on and record it as a `status` event, in one transaction; with
        `only_from`, only if it still stands there (a queued run is started or cancelled once)."""
        stamps = {STARTING: "started_at", **dict.fromkeys(ENDED, "ended_at")}
        with self._write() as db:
            if only_from is not None:
                now = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
                if now is None or now["status"] not in only_from:
                    return False
            assignments, values = ["status = ?"], [status]
            if status in stamps:
                assignments.append(f"{stamps[status]} = COALESCE({stamps[status]}, ?)")
                values.append(now_iso())
            if reason is not None:
                assignments.append("reason = ?")
                values.append(reason)
            if verdict is not None:
                assignments.append("verdict = ?")
                values.append(json.dumps(verdict))
            db.execute(f"UPDATE runs SET {', '.join(assignments)} WHERE id = ?",
                       (*values, run_id))
            self._append_event(db, run_id, "status", {
                "status": status, **({"reason": reason} if reason else {}), **(event or {})})
        return True

    def request_cancel(self, run_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))

    def set_pids(self, run_id: str, pids: list[int]) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET pids = ? WHERE id = ?", (json.dumps(pids), run_id))

    def set_live(self, run_id: str, live: dict) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET live = ? WHERE id = ?", (json.dumps(live), run_id))

    # ---- events ------------------------------------------------------------------------------

    def append_event(self, run_id: str, type_: str, data: dict) -> int:
        with self._write() as db:
            return self._append_event(db, run_id, type_, data)

    @staticmethod
    def _append_event(db: sqlite3.Connection, run_id: str, type_: str, data: dict) -> int:
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?",
                         (run_id,)).fetchone()[0]
        db.execute("INSERT INTO events (run_id, seq, at, type, data) VALUES (?, ?, ?, ?, ?)",
                   (run_id, seq, now_iso(), type_, json.dumps(data)))
        return seq

    def events(self, run_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        rows = self._query("SELECT seq, at, type, data FROM events WHERE run_id = ? AND seq > ? "
                           "ORDER BY seq LIMIT ?", run_id, after, limit)
        return [Event(row["seq"], row["at"], row["type"], json.loads(row["data"]))
                for row in rows]

    # ---- audit -------------------------------------------------------------------------------

    def audit(self, action: str, *, agency: str | None = None, token_id: str | None = None,
              run_id: str | None = None, client: str | None = None, **detail) -> None:
        with self._write() as db:
            db.execute("INSERT INTO audit (at, action, agency, token_id, run_id, client, detail) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (now_iso(), action, agency, token_id, run_id, client, json.dumps(detail)))

    def audit_log(self, limit: int | None = None) -> list[dict]:
        rows = self._query("SELECT * FROM audit ORDER BY n DESC LIMIT ?", limit or -1)
        return [{**dict(row), "detail": json.loads(row["detail"])} for row in reversed(rows)]


def _token(row: sqlite3.Row) -> Token:
    return Token(row["id"], row["agency"], json.loads(row["policy"]), row["created_at"],
                 row["revoked_at"])


def _run(row: sqlite3.Row) -> Run:
    def loaded(key):
        return json.loads(row[key]) if row[key] is not None else None

    return Run(n=row["n"], id=row["id"], agency=row["agency"], token_id=row["token_id"],
               status=row["status"], scenario_name=row["scenario_name"],
               settings=json.loads(row["settings"]), run_dir=Path(row["run_dir"]),
               created_at=row["created_at"], started_at=row["started_at"],
               ended_at=row["ended_at"], cancel_requested=bool(row["cancel_requested"]),
               pids=loaded("pids"), live=loaded("live"), verdict=loaded("verdict"),
               reason=row["reason"], idempotency_key=row["idempotency_key"],
               body_sha256=row["body_sha256"], queue_position=row["queue_position"])
