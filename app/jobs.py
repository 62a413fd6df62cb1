"""The job queue's store: batch scoring of large files, kept in SQLite, run by app/worker.py.

Where it lives: FLASK_JOBS_DB, or jobs.sqlite3 in $DATA_DIR when DATA_DIR is set (a deploy sets it
to the app's data directory, the same for every release), or else in the Flask instance folder.

Who uses it: the web processes (gunicorn's workers, each with threads) insert jobs and read them;
worker processes (``python -m app.worker``: one or more, and an old and a new release's side by
side for a moment during a deploy) claim, checkpoint and finish them. SQLite's WAL mode lets reads
go on while one writer writes, and every write here is one short ``BEGIN IMMEDIATE`` transaction,
so two claims are serialized and never take the same job. Each thread of each process has its own
connection (a forked child opens its own). Commits are synchronous=FULL: a job answered with 202
is on disk, and so is every checkpoint, through a power cut.

A job's life: queued -> running (claimed by one worker, under a lease) -> done, or failed.

- Progress is checkpointed a chunk at a time (CHUNK_LINES lines, or CHUNK_SECONDS of work): the
  chunk's results and the job's new progress are one transaction, fenced by the claim's token, so
  every line's result is written exactly once, and a job that stops continues after its last
  checkpoint rather than from the start. A worker that lost its claim (below) writes nothing more.
- A worker stopped with SIGTERM checkpoints and puts its job back in the queue (not an attempt).
- A worker killed (kill -9, the OOM killer, a power cut) leaves its job "running". It is queued
  again, and taken by the next worker that looks (within JOBS_POLL_SECONDS):
  - at once, when its claimant is known to be gone: a claim names its host, boot, pid namespace,
    pid and the pid's start time, so a worker on the same host sees that the process is gone,
    even after a reboot (another boot id) or with its pid reused (another start time); or else
  - when its lease runs out, JOBS_LEASE_SECONDS after its last checkpoint: a claimant on another
    host, in another pid namespace, or without /proc, or alive but stuck (stopped, swapping).
  So a killed worker's job is running again within JOBS_POLL_SECONDS of a worker starting on the
  same host (the kit restarts it), and within JOBS_LEASE_SECONDS + JOBS_POLL_SECONDS anywhere, and
  it loses at most the chunk in progress.
- Each claim is an attempt. A job whose worker was killed JOBS_MAX_ATTEMPTS times fails rather than
  taking every worker down with it; an error while it runs is retried after RETRY_DELAY_SECONDS
  times the attempts so far, JOBS_MAX_ATTEMPTS runs in all.
- A job answered by one model is answered by it alone: a job resumed by a worker with another
  model (a deploy changed it) starts again from its first line.
- Finished jobs and their results are deleted JOBS_RETENTION_SECONDS after they finished; at most
  JOBS_MAX_QUEUED jobs wait or run at once, so the store stays bounded.

For a fleet (web or worker processes on several hosts) one SQLite file on one disk is not enough
(never put it on NFS: its locks are not reliable there). The same design maps onto PostgreSQL:
claims with ``SELECT ... FOR UPDATE SKIP LOCKED``, leases and claim tokens as here (a pid means
nothing across hosts), results in a table or object storage. Or Redis with RQ (or Celery), whose
workers already have heartbeats, retries and result expiry.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from flask import current_app

EXTENSION = "modelhost.jobs"
FILE_NAME = "jobs.sqlite3"
STATUSES = ("queued", "running", "done", "failed")
ACTIVE = ("queued", "running")
JOB_ID = re.compile(r"[0-9a-f]{32}")
CHUNK_LINES = 500
CHUNK_SECONDS = 1.0
RETRY_DELAY_SECONDS = 5
RESULTS_PAGE = 1000  # the most lines of results one answer holds (/api/v1/batch's default limit)
MAX_OFFSET = 2**31 - 1
BUSY_TIMEOUT_SECONDS = 10  # how long a write waits for another one's lock before it gives up

# The schema, one script per version: MIGRATIONS[n] takes version n - 1 to n. The file's
# user_version says which it has; a release that finds a newer one refuses it (a rollback across a
# migration) rather than guess.
MIGRATIONS = {
    1: [
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
            topn INTEGER NOT NULL,
            queries TEXT NOT NULL,           -- JSON: [[line number, word], ...]
            total INTEGER NOT NULL,          -- query lines
            done INTEGER NOT NULL DEFAULT 0, -- lines answered (checkpointed)
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            error TEXT,                      -- why the last attempt ended, if it did not finish
            owner TEXT,                      -- the claimant: host, boot id, pid namespace, pid, start time
            claim TEXT,                      -- the claim's token: every write of a running job checks it
            lease_until REAL,                -- a claim not renewed by then is abandoned
            not_before REAL NOT NULL,        -- not claimed before (a retry's delay)
            model_sha256 TEXT,               -- the model that answered its lines so far
            created_at REAL NOT NULL,
            started_at REAL,
            updated_at REAL NOT NULL,
            finished_at REAL
        )""",
        "CREATE INDEX jobs_by_status ON jobs (status, created_at)",
        "CREATE INDEX jobs_by_finish ON jobs (finished_at) WHERE finished_at IS NOT NULL",
        """CREATE TABLE job_results (
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,       -- index into the job's queries: one row per line, once
            result TEXT NOT NULL,            -- JSON: the line's entry, as /api/v1/batch answers it
            PRIMARY KEY (job_id, position)
        ) WITHOUT ROWID""",
    ],
}
SCHEMA_VERSION = max(MIGRATIONS)


class JobsUnavailable(Exception):
    """The store cannot be opened or written (answered with 503); the message names the file."""


class QueueFull(Exception):
    """JOBS_MAX_QUEUED jobs are queued or running already (answered with 503 and Retry-After)."""


@dataclass
class Job:
    id: str
    status: str
    topn: int
    total: int
    done: int
    attempts: int
    max_attempts: int
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    queries: list | None = None  # on a claimed job only: [[line number, word], ...]
    claim: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        keys = row.keys()
        return cls(id=row["id"], status=row["status"], topn=row["topn"], total=row["total"], done=row["done"],
                   attempts=row["attempts"], max_attempts=row["max_attempts"], error=row["error"],
                   created_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"],
                   queries=json.loads(row["queries"]) if "queries" in keys else None,
                   claim=row["claim"] if "claim" in keys else None)


SUMMARY = "id, status, topn, total, done, attempts, max_attempts, error, created_at, started_at, finished_at"


def timestamp(seconds: float | None) -> str | None:
    """A stored time as RFC 3339 in UTC, to the second."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---- who holds a claim ----------------------------------------------------------------------------

def read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip()
    except OSError:
        return ""


def start_time(pid: int) -> str:
    """When the process started, in clock ticks since boot (/proc/PID/stat); "" if there is none."""
    stat = read_text(f"/proc/{pid}/stat")
    # The command name (field 2) is in parentheses and may hold spaces; start time is field 22.
    return stat.rsplit(")", 1)[1].split()[19] if stat else ""


def pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def owner_identity(pid: int | None = None) -> str:
    """This process as a claimant: "host boot-id pid-namespace pid start-time"."""
    pid = pid or os.getpid()
    return " ".join([socket.gethostname(), read_text("/proc/sys/kernel/random/boot_id") or "-",
                     pid_namespace() or "-", str(pid), start_time(pid) or "-"])


def owner_gone(owner: str | None) -> bool:
    """Whether the claimant is known to have exited; False when that cannot be told from here."""
    try:
        host, boot, namespace, pid, started = (owner or "").split(" ")
    except ValueError:
        return False
    here_boot = read_text("/proc/sys/kernel/random/boot_id")
    if host != socket.gethostname() or "-" in (boot, namespace, started) or not here_boot:
        return False
    if boot != here_boot:
        return True  # the host rebooted since: every process of that boot is gone
    if namespace != pid_namespace():
        return False  # another container's pids are not ours to look up
    return start_time(int(pid)) != started  # exited, or its pid now names another process


# ---- the store -------------------------------------------------------------------------------------

def unavailable_on_error(method):
    """sqlite3's errors (a locked, unwritable or damaged file) as JobsUnavailable, naming the file."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise JobsUnavailable(f"the job store {self.path}: {exc}") from exc
    return guarded


class JobStore:
    """The jobs and their results in one SQLite file; safe to share between threads and processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.local = threading.local()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened (and the schema made or migrated) on first use."""
        local = self.local
        if getattr(local, "pid", None) != os.getpid():  # none yet, or one inherited across a fork
            local.connection = self.open()
            local.pid = os.getpid()
        return local.connection

    def open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; each write says BEGIN IMMEDIATE itself.
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA synchronous = FULL")
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode = WAL")  # kept in the file: once per database
            self.migrate(connection)
        except (OSError, sqlite3.Error) as exc:
            raise JobsUnavailable(f"the job store {self.path} cannot be opened: {exc}") from exc
        return connection

    def migrate(self, connection: sqlite3.Connection) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        with self.transaction(connection):
            version = connection.execute("PRAGMA user_version").fetchone()[0]  # another process may have
            if version > SCHEMA_VERSION:
                raise JobsUnavailable(
                    f"the job store {self.path} has schema version {version}, newer than this release's "
                    f"{SCHEMA_VERSION}: a newer release made it. Run that release, or move the file away "
                    "to start with an empty queue")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def transaction(self, connection: sqlite3.Connection | None = None):
        """A write transaction: it holds the database's write lock from its first statement."""
        connection = connection or self.connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    # ---- the web processes' side ----

    @unavailable_on_error
    def submit(self, queries: list[tuple[int, str]], topn: int, max_attempts: int, max_queued: int) -> Job:
        """Queue a job; QueueFull if max_queued jobs are queued or running already."""
        now = time.time()
        job_id = secrets.token_hex(16)
        with self.transaction() as db:
            active = db.execute("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0]
            if active >= max_queued:
                raise QueueFull(f"{active} jobs are queued or running, the most this app takes at once")
            db.execute("INSERT INTO jobs (id, status, topn, queries, total, max_attempts, not_before, created_at, "
                       "updated_at) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                       (job_id, topn, json.dumps(queries, separators=(",", ":")), len(queries), max_attempts,
                        now, now, now))
        return self.get(job_id)

    @unavailable_on_error
    def get(self, job_id: str) -> Job | None:
        row = self.connection().execute(f"SELECT {SUMMARY} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    @unavailable_on_error
    def results(self, job_id: str, offset: int, limit: int) -> list[dict]:
        """Lines offset .. offset + limit - 1 of a job's results, in the order of its file."""
        rows = self.connection().execute(
            "SELECT result FROM job_results WHERE job_id = ? AND position >= ? ORDER BY position LIMIT ?",
            (job_id, offset, limit))
        return [json.loads(result) for (result,) in rows]

    @unavailable_on_error
    def counts(self) -> dict[str, int]:
        """Jobs by status; all 0 while there is no store yet (so a scrape does not make one)."""
        counts = dict.fromkeys(STATUSES, 0)
        if self.path.exists():
            rows = self.connection().execute("SELECT status, count(*) FROM jobs GROUP BY status")
            counts.update({status: count for status, count in rows})
        return counts

    # ---- the worker's side ----

    @unavailable_on_error
    def claim(self, owner: str, lease_seconds: float, model_sha256: str) -> Job | None:
        """The oldest queued job, now running under this owner's claim; first, abandoned jobs are
        queued again (or failed, after their last attempt)."""
        now = time.time()
        with self.transaction() as db:
            self.requeue_abandoned(db, now)
            row = db.execute(
                "UPDATE jobs SET status = 'running', owner = ?, claim = ?, lease_until = ?, attempts = attempts + 1,"
                " started_at = coalesce(started_at, ?), updated_at = ?"
                " WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND not_before <= ?"
                "             ORDER BY created_at, rowid LIMIT 1)"
                " RETURNING *", (owner, secrets.token_hex(16), now + lease_seconds, now, now, now)).fetchone()
            if row is None:
                return None
            if row["model_sha256"] != model_sha256:
                if row["done"]:  # another model answered the lines so far: answer them all with this one
                    db.execute("DELETE FROM job_results WHERE job_id = ?", (row["id"],))
                row = db.execute("UPDATE jobs SET model_sha256 = ?, done = 0 WHERE id = ? RETURNING *",
                                 (model_sha256, row["id"])).fetchone()
        return Job.from_row(row)

    def requeue_abandoned(self, db: sqlite3.Connection, now: float) -> None:
        running = db.execute("SELECT id, owner, lease_until, attempts, max_attempts FROM jobs "
                             "WHERE status = 'running'").fetchall()
        for job in running:
            if job["lease_until"] >= now and not owner_gone(job["owner"]):
                continue
            failed = job["attempts"] >= job["max_attempts"]
            error = (f"its worker stopped while running it (killed, or out of memory?), in attempt {job['attempts']} "
                     f"of {job['max_attempts']}" + ("" if failed else "; queued again"))
            db.execute("UPDATE jobs SET status = ?, error = ?, owner = NULL, claim = NULL, lease_until = NULL,"
                       " updated_at = ?, finished_at = ? WHERE id = ?",
                       ("failed" if failed else "queued", error, now, now if failed else None, job["id"]))

    @unavailable_on_error
    def checkpoint(self, job: Job, entries: list[dict], lease_seconds: float, finished: bool = False) -> bool:
        """Store the next lines' results, renew the lease (and with finished, mark the job done);
        False, with nothing written, if this claim is no longer the job's."""
        now = time.time()
        with self.transaction() as db:
            renewed = db.execute(
                "UPDATE jobs SET done = done + ?, lease_until = ?, updated_at = ?"
                " WHERE id = ? AND claim = ? AND done = ?",
                (len(entries), now + lease_seconds, now, job.id, job.claim, job.done)).rowcount
            if not renewed:
                return False
            db.executemany("INSERT INTO job_results (job_id, position, result) VALUES (?, ?, ?)",
                           [(job.id, job.done + i, json.dumps(entry, separators=(",", ":")))
                            for i, entry in enumerate(entries)])
            if finished:
                db.execute("UPDATE jobs SET status = 'done', error = NULL, owner = NULL, claim = NULL,"
                           " lease_until = NULL, finished_at = ? WHERE id = ?", (now, job.id))
        job.done += len(entries)
        return True

    @unavailable_on_error
    def release(self, job: Job) -> bool:
        """Put a job back in the queue as it is (its worker is stopping); not counted as an attempt."""
        with self.transaction() as db:
            return bool(db.execute(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, owner = NULL, claim = NULL,"
                " lease_until = NULL, updated_at = ? WHERE id = ? AND claim = ?",
                (time.time(), job.id, job.claim)).rowcount)

    @unavailable_on_error
    def fail(self, job: Job, error: str) -> str | None:
        """An attempt ended in an error: queue the job again after a delay, or fail it after its
        last attempt. Its new status, or None if this claim is no longer the job's."""
        now = time.time()
        with self.transaction() as db:
            row = db.execute(
                "UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,"
                " error = ?, not_before = ? + ? * attempts, owner = NULL, claim = NULL, lease_until = NULL,"
                " updated_at = ?, finished_at = CASE WHEN attempts >= max_attempts THEN ? END"
                " WHERE id = ? AND claim = ? RETURNING status",
                (error, now, RETRY_DELAY_SECONDS, now, now, job.id, job.claim)).fetchone()
        return row["status"] if row else None

    @unavailable_on_error
    def prune(self, retention_seconds: float) -> int:
        """Delete the jobs (and their results) that finished more than retention_seconds ago."""
        with self.transaction() as db:
            return db.execute("DELETE FROM jobs WHERE finished_at < ?", (time.time() - retention_seconds,)).rowcount


# ---- the app's store -------------------------------------------------------------------------------

def database_path(config, instance_path: str) -> Path:
    """FLASK_JOBS_DB, or jobs.sqlite3 in $DATA_DIR, or in the instance folder."""
    if config["JOBS_DB"]:
        return Path(config["JOBS_DB"])
    return Path(os.environ.get("DATA_DIR") or instance_path) / FILE_NAME


def init_app(app) -> None:
    """The app's store; nothing is opened until a request (or the worker) uses it."""
    app.extensions[EXTENSION] = JobStore(database_path(app.config, app.instance_path))


def store() -> JobStore:
    return current_app.extensions[EXTENSION]
