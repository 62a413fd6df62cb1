"""The job worker: ``python -m app.worker``, run from the release directory beside gunicorn.

It reads the web app's settings (FLASK_* variables and DATA_DIR, app/config.py) through
create_app(), so it opens the same job store (app/jobs.py) and loads the same model, once. Then,
one job at a time: claim the oldest queued job, answer its lines in chunks (app/batch.py, as
/api/v1/batch does), checkpoint each chunk (its results and the job's progress in one transaction,
which also renews the claim's lease), and mark the job done. Every PRUNE_EVERY_SECONDS it deletes
the jobs that finished more than JOBS_RETENTION_SECONDS ago.

Any number of workers may run at once, from one release or two: claims are atomic, and each write
of a running job checks the claim it was made under.

SIGTERM (or SIGINT): the line in progress is finished, the chunk checkpointed, the job put back in
the queue as it is, and the process exits 0, within a second (the longest a chunk runs) plus one
commit. After kill -9 the job is taken up again by the next worker: app/jobs.py says how soon.

Exit status 1, with the reason on stderr or in the log, when a setting is wrong, the model does not
load or the store cannot be opened; the process manager's restarts and its log take it from there.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

from app import create_app, jobs
from app.batch import answer_line
from app.config import ConfigError
from app.state import EXTENSION

PRUNE_EVERY_SECONDS = 60
UNAVAILABLE_PAUSE_SECONDS = 5  # after the store failed (locked for long, disk full): wait, then try again


STOP_CHECK_SECONDS = 0.05  # an idle worker sees a stop this soon


class StopFlag:
    """Set by the signal handler. A plain attribute, not a threading.Event: Event.set() takes a lock
    that the interrupted code may hold (inside Event.wait), and would deadlock the handler."""

    def __init__(self):
        self.stopped = False

    def set(self, *_) -> None:
        self.stopped = True

    def is_set(self) -> bool:
        return self.stopped

    def wait(self, seconds: float) -> None:
        """Sleep, waking early once set (time.sleep resumes after a handler: so, in short steps)."""
        deadline = time.monotonic() + seconds
        while not self.stopped and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, STOP_CHECK_SECONDS))


class Worker:
    """Claims jobs from a store and answers them with a model until its stop flag is set."""

    def __init__(self, store: jobs.JobStore, model, config, logger, stopping: StopFlag | None = None):
        self.store = store
        self.model = model
        self.lease = config["JOBS_LEASE_SECONDS"]
        self.poll = config["JOBS_POLL_SECONDS"]
        self.retention = config["JOBS_RETENTION_SECONDS"]
        self.log = logger
        self.owner = jobs.owner_identity()
        # Once set: finish the line in progress, checkpoint, put the job back and return from run().
        self.stopping = stopping or StopFlag()

    def run(self) -> None:
        info = self.model.info
        self.log.info("job worker %s: jobs from %s, model %s %s", self.owner, self.store.path, info["name"],
                      info["version"])
        next_prune = 0.0
        while not self.stopping.is_set():
            try:
                if time.monotonic() >= next_prune:
                    if pruned := self.store.prune(self.retention):
                        self.log.info("deleted %d jobs that finished over %d s ago", pruned, self.retention)
                    next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                job = self.store.claim(self.owner, self.lease, info["sha256"])
                if job is None:
                    self.stopping.wait(self.poll)
                else:
                    self.run_job(job)
            except jobs.JobsUnavailable as exc:
                self.log.error("%s; trying again in %d s", exc, UNAVAILABLE_PAUSE_SECONDS)
                self.stopping.wait(UNAVAILABLE_PAUSE_SECONDS)
        self.log.info("job worker %s: stopped", self.owner)

    def run_job(self, job: jobs.Job) -> None:
        """Answer a claimed job's remaining lines, a checkpoint per chunk, until it is done or this
        worker stops (the job is put back) or loses its claim (it leaves the job to its new holder)."""
        self.log.info("job %s: %s at line %d of %d (attempt %d of %d)", job.id,
                      "resumed" if job.done else "started", job.done + 1, job.total, job.attempts, job.max_attempts)
        started = time.monotonic()
        try:
            while True:
                entries = self.answer_chunk(job)
                finished = job.done + len(entries) == job.total
                if not self.store.checkpoint(job, entries, self.lease, finished):
                    self.log.warning("job %s: another worker holds it now (this one's lease ran out); leaving it",
                                     job.id)
                    return
                if finished:
                    self.log.info("job %s: done, %d lines, %.2f s in this attempt", job.id, job.total,
                                  time.monotonic() - started)
                    return
                if self.stopping.is_set():
                    if self.store.release(job):
                        self.log.info("job %s: stopping after line %d of %d; queued again", job.id, job.done,
                                      job.total)
                    return
        except jobs.JobsUnavailable as exc:
            # Its lease runs out if the store stays unusable; the job is then queued again.
            self.log.error("job %s: %s; left to its lease", job.id, exc)
        except Exception as exc:
            self.log.exception("job %s: attempt %d of %d failed", job.id, job.attempts, job.max_attempts)
            status = self.store.fail(job, f"{type(exc).__name__}: {exc}")
            self.log.info("job %s: %s", job.id, "failed for good" if status == "failed" else "queued again")

    def answer_chunk(self, job: jobs.Job) -> list[dict]:
        """The next lines' entries: up to CHUNK_LINES, or as many as CHUNK_SECONDS allows (at least one),
        or fewer when the worker is stopping."""
        entries, started = [], time.monotonic()
        for number, word in job.queries[job.done:job.done + jobs.CHUNK_LINES]:
            entries.append(answer_line(self.model, number, word, job.topn))
            if self.stopping.is_set() or time.monotonic() - started >= jobs.CHUNK_SECONDS:
                break
        return entries


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m app.worker", description=__doc__.split("\n")[0]).parse_args(argv)
    # Handled from the start: a TERM while the model loads ends the worker with 0 before its first job.
    stopping = StopFlag()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopping.set)  # nothing more: no lock (logging's) in a signal handler
    try:
        app = create_app()
    except ConfigError as exc:
        print(f"app.worker: {exc}", file=sys.stderr)
        return 1
    model_state = app.extensions[EXTENSION]
    if model_state.model is None:
        app.logger.error("job worker: no model, so no jobs: %s", model_state.reason)
        return 1
    store = app.extensions[jobs.EXTENSION]
    try:
        store.connection()  # the file is made (or migrated) now, or the reason is logged
    except jobs.JobsUnavailable as exc:
        app.logger.error("job worker: %s", exc)
        return 1
    Worker(store, model_state.model, app.config, app.logger, stopping).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
