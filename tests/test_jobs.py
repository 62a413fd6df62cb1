"""The job queue's store on its own: claims, leases, retries, checkpoints, pruning."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app import jobs
from app.batch import answer_line
from app.embeddings import WordModel
from app.model import load

WORDS = ["fire", "police", "zzqqxx", "cricket", "Sydney", "government"]


def queries(count: int) -> list[tuple[int, str]]:
    return [(number, WORDS[number % len(WORDS)]) for number in range(1, count + 1)]


@pytest.fixture
def store(tmp_path):
    return jobs.JobStore(tmp_path / "jobs.sqlite3")


@pytest.fixture(scope="module")
def model(demo_model):
    return WordModel(load(demo_model))


def submit(store, count: int = 3, max_attempts: int = 3, max_queued: int = 100) -> jobs.Job:
    return store.submit(queries(count), 2, max_attempts, max_queued)


def answers(model, job: jobs.Job, count: int) -> list[dict]:
    return [answer_line(model, number, word, job.topn) for number, word in job.queries[job.done:job.done + count]]


def result_rows(path: Path, job_id: str) -> list[int]:
    with sqlite3.connect(path) as db:
        return [p for (p,) in db.execute("SELECT position FROM job_results WHERE job_id = ? ORDER BY position",
                                         (job_id,))]


# --- the store ------------------------------------------------------------------------------------

def test_the_store_is_made_on_first_use_in_wal_mode_with_its_schema_version(store):
    assert not store.path.exists()
    submit(store)
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == jobs.SCHEMA_VERSION


def test_a_store_made_by_a_newer_release_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {jobs.SCHEMA_VERSION + 1}")
    with pytest.raises(jobs.JobsUnavailable, match=f"{path} has schema version {jobs.SCHEMA_VERSION + 1}, newer"):
        jobs.JobStore(path).get("0" * 32)


def test_an_unwritable_store_is_unavailable_naming_the_file(tmp_path):
    path = tmp_path / "not-a-directory" / "jobs.sqlite3"
    path.parent.write_text("a file where the directory should be")
    with pytest.raises(jobs.JobsUnavailable, match="not-a-directory/jobs.sqlite3 cannot be opened"):
        jobs.JobStore(path).get("0" * 32)


def test_claims_from_many_connections_take_every_job_exactly_once(tmp_path):
    """Four threads, each with its own store (its own connection), claim from one queue at once."""
    path = tmp_path / "jobs.sqlite3"
    ids = {submit(jobs.JobStore(path), count=1, max_queued=1000).id for _ in range(200)}
    claimed, errors = [], []

    def claim_all(name: str) -> None:
        store = jobs.JobStore(path)
        try:
            while job := store.claim(name, 60, "sha"):
                claimed.append(job.id)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=claim_all, args=(f"worker-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(claimed) == sorted(ids)


def test_a_claimed_job_is_not_claimed_again_while_its_lease_holds(store):
    submit(store)
    assert store.claim("worker-a", 60, "sha") is not None
    assert store.claim("worker-b", 60, "sha") is None


def test_an_expired_lease_queues_the_job_again_and_the_old_claim_writes_nothing(store, model):
    job = submit(store, count=4)
    first = store.claim("host-elsewhere", 0, "sha")  # an owner this host cannot look up: its lease decides
    assert store.checkpoint(first, answers(model, first, 1), 0)
    second = store.claim("worker-b", 60, "sha")
    assert second.id == job.id and second.attempts == 2 and second.done == 1
    assert store.get(job.id).error.startswith("its worker stopped while running it")
    assert not store.checkpoint(first, answers(model, first, 1), 60)
    assert store.fail(first, "late") is None and not store.release(first)
    assert result_rows(store.path, job.id) == [0]


def test_a_resumed_job_continues_after_its_last_checkpoint_with_each_line_once(store, model):
    job = submit(store, count=5)
    first = store.claim("host-elsewhere", 0, "sha")
    assert store.checkpoint(first, answers(model, first, 2), 0)
    assert store.checkpoint(first, answers(model, first, 1), 0)
    resumed = store.claim("worker-b", 60, "sha")
    assert resumed.done == 3
    assert store.checkpoint(resumed, answers(model, resumed, 2), 60, finished=True)
    done = store.get(job.id)
    assert (done.status, done.done, done.error) == ("done", 5, None)
    assert result_rows(store.path, job.id) == [0, 1, 2, 3, 4]
    assert [r["line"] for r in store.results(job.id, 0, 10)] == [1, 2, 3, 4, 5]
    assert store.results(job.id, 3, 10) == [answer_line(model, n, w, 2) for n, w in queries(5)[3:]]


def test_a_job_resumed_by_another_model_starts_again_from_its_first_line(store, model):
    job = submit(store, count=3)
    first = store.claim("worker-a", 60, "old-model")
    assert store.checkpoint(first, answers(model, first, 2), 60)
    assert store.release(first)
    again = store.claim("worker-a", 60, "new-model")
    assert again.done == 0 and result_rows(store.path, job.id) == []


def test_an_error_is_retried_after_a_delay_then_the_job_fails_after_its_last_attempt(store, monkeypatch):
    monkeypatch.setattr(jobs, "RETRY_DELAY_SECONDS", 0.3)
    job = submit(store, max_attempts=2)
    assert store.fail(store.claim("worker", 60, "sha"), "ValueError: one") == "queued"
    assert store.claim("worker", 60, "sha") is None  # not before the retry delay
    time.sleep(0.35)
    second = store.claim("worker", 60, "sha")
    assert second.attempts == 2
    assert store.fail(second, "ValueError: two") == "failed"
    failed = store.get(job.id)
    assert (failed.status, failed.error, failed.attempts) == ("failed", "ValueError: two", 2)
    assert failed.finished_at is not None
    assert store.claim("worker", 60, "sha") is None


def test_a_job_whose_worker_is_killed_at_every_attempt_fails_after_the_last(store, tmp_path):
    """A job that kills its worker (say, out of memory) must not take every worker after it down."""
    job = submit(store, max_attempts=2)
    for attempt in (1, 2):
        dead = dead_process_identity()
        claimed = store.claim(dead, 3600, "sha")
        assert (claimed.id, claimed.attempts) == (job.id, attempt)
    assert store.claim("worker", 60, "sha") is None
    failed = store.get(job.id)
    assert failed.status == "failed"
    assert failed.error == "its worker stopped while running it (killed, or out of memory?), in attempt 2 of 2"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_job_claimed_before_a_reboot_is_taken_at_once_after_it(store):
    job = submit(store)
    host, _, namespace, pid, started = jobs.owner_identity().split(" ")
    before_reboot = " ".join([host, "boot-before-the-reboot", namespace, pid, started])  # the same pid, even
    assert store.claim(before_reboot, 3600, "sha").id == job.id
    again = store.claim(jobs.owner_identity(), 60, "sha")
    assert (again.id, again.attempts) == (job.id, 2)


def test_stopping_gracefully_puts_the_job_back_without_counting_an_attempt(store, model):
    job = submit(store, count=3)
    claimed = store.claim("worker", 60, "sha")
    assert store.checkpoint(claimed, answers(model, claimed, 1), 60)
    assert store.release(claimed)
    back = store.get(job.id)
    assert (back.status, back.attempts, back.done) == ("queued", 0, 1)


def test_the_queue_takes_at_most_max_queued_jobs_queued_or_running(store, model):
    first = submit(store, count=1, max_queued=2)
    submit(store, count=1, max_queued=2)
    with pytest.raises(jobs.QueueFull, match="2 jobs are queued or running"):
        submit(store, count=1, max_queued=2)
    claimed = store.claim("worker", 60, "sha")
    assert claimed.id == first.id  # oldest first
    with pytest.raises(jobs.QueueFull):
        submit(store, count=1, max_queued=2)
    assert store.checkpoint(claimed, answers(model, claimed, 1), 60, finished=True)
    submit(store, count=1, max_queued=2)


def test_finished_jobs_and_their_results_are_deleted_after_the_retention_period(store, model):
    finished = submit(store, count=2)
    queued = submit(store, count=2)
    claimed = store.claim("worker", 60, "sha")
    assert store.checkpoint(claimed, answers(model, claimed, 2), 60, finished=True)
    assert store.prune(3600) == 0
    time.sleep(0.01)
    assert store.prune(0) == 1
    assert store.get(finished.id) is None and result_rows(store.path, finished.id) == []
    assert store.get(queued.id).status == "queued"


def test_counts_by_status_do_not_make_a_store(store):
    assert store.counts() == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    assert not store.path.exists()
    submit(store)
    submit(store)
    store.claim("worker", 60, "sha")
    assert store.counts() == {"queued": 1, "running": 1, "done": 0, "failed": 0}


def dead_process_identity() -> str:
    """The claimant identity of a process that has exited (its pid is free, or taken by another)."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    identity = jobs.owner_identity(child.pid)
    child.communicate(b"")
    return identity


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_claimant_is_gone_when_its_process_is_or_the_host_rebooted_and_unknown_elsewhere():
    me = jobs.owner_identity()
    host, boot, namespace, pid, started = me.split(" ")
    assert not jobs.owner_gone(me)
    assert jobs.owner_gone(dead_process_identity())
    assert jobs.owner_gone(" ".join([host, "another-boot", namespace, pid, started]))
    assert jobs.owner_gone(" ".join([host, boot, namespace, pid, str(int(started) + 1)]))  # pid reused
    assert not jobs.owner_gone(" ".join(["another-host", "another-boot", namespace, "1", "1"]))
    assert not jobs.owner_gone(" ".join([host, boot, "pid:[1]", "999999", "1"]))  # another container
    assert not jobs.owner_gone("worker-a") and not jobs.owner_gone(None)
