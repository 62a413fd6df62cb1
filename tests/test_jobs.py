"""The job queue: the store on its own (claims, retries, checkpoints, pruning), the API and the UI
through Flask's test client, and real `python -m app.worker` processes: a job done, a worker
killed with -9 mid-job, stopped with TERM, two workers on one queue."""
from __future__ import annotations

import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app import create_app, jobs
from app.batch import answer_line
from app.embeddings import WordModel
from app.model import load
from app.worker import Worker
from tests.conftest import DEV, CheckedClient
from tests.servers import ROOT

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


# --- the API --------------------------------------------------------------------------------------

@pytest.fixture
def job_app(demo_model, tmp_path):
    return create_app({**DEV, "MODEL_PATH": str(demo_model), "JOBS_DB": str(tmp_path / "jobs.sqlite3")})


@pytest.fixture
def job_api(job_app, openapi):
    return CheckedClient(job_app.test_client(), openapi)


def post_job(client, content: bytes, **form):
    data = {"file": (io.BytesIO(content), "queries.txt"), **form}
    return client.post("/api/v1/jobs", data=data, content_type="multipart/form-data")


def run_queued(app) -> None:
    """Every queued job answered by the worker's own code, in this process."""
    with app.app_context():
        store = jobs.store()
        worker = Worker(store, app.extensions["modelhost"].model, app.config, app.logger)
        while job := store.claim(worker.owner, 60, worker.model.info["sha256"]):
            worker.run_job(job)


def test_a_job_is_answered_202_with_its_url_and_queued(job_api):
    response = post_job(job_api, b"fire\n\npolice\n", topn="3")
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == f"/api/v1/jobs/{body['id']}"
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert (body["status"], body["progress"], body["topn"], body["attempts"]) == (
        "queued", {"done": 0, "total": 2}, 3, 0)
    assert "results" not in body
    assert job_api.get(response.headers["Location"]).get_json() == body


def test_a_job_s_url_keeps_the_prefix_the_app_is_served_under(job_api):
    response = job_api.client.post("/api/v1/jobs", data={"file": "fire"}, content_type="multipart/form-data",
                                   headers={"X-Forwarded-Prefix": "/words"})
    assert response.headers["Location"] == f"/words/api/v1/jobs/{response.get_json()['id']}"


def test_a_done_job_has_the_results_batch_gives_for_the_same_file(job_app, job_api):
    content = b"fire\n\npolice\nzzqqxx\n"
    location = post_job(job_api, content, topn="2").headers["Location"]
    run_queued(job_app)
    body = job_api.get(location).get_json()
    assert (body["status"], body["progress"], body["attempts"], body["error"]) == (
        "done", {"done": 3, "total": 3}, 1, None)
    assert body["finished_at"] >= body["started_at"] >= body["created_at"]
    batch = job_api.post("/api/v1/batch", data={"file": (io.BytesIO(content), "q.txt"), "topn": "2"},
                         content_type="multipart/form-data").get_json()
    assert body["results"] == batch["results"]
    assert (body["offset"], body["limit"], body["next"]) == (0, 1000, None)


def test_a_done_job_s_results_come_in_pages(job_app, job_api):
    location = post_job(job_api, "\n".join(WORDS[:5]).encode()).headers["Location"]
    run_queued(job_app)
    lines, url = [], f"{location}?limit=2"
    while url:
        body = job_api.get(url).get_json()
        assert len(body["results"]) <= 2
        lines += [r["line"] for r in body["results"]]
        url = body["next"]
    assert lines == [1, 2, 3, 4, 5]
    assert job_api.get(f"{location}?offset=5").get_json()["results"] == []


def test_a_job_takes_more_lines_than_batch_and_up_to_its_own_limit(demo_model, tmp_path, openapi):
    app = create_app({**DEV, "MODEL_PATH": str(demo_model), "JOBS_DB": str(tmp_path / "j.sqlite3"),
                      "BATCH_MAX_LINES": 3, "JOBS_MAX_LINES": 5})
    client = CheckedClient(app.test_client(), openapi)
    assert post_job(client, b"fire\n" * 5).status_code == 202
    error = post_job(client, b"fire\n" * 6).get_json()["error"]
    assert (error["code"], error["field"], error["message"]) == (
        "invalid_input", "file", "file: may hold at most 5 query lines, got 6")


@pytest.mark.parametrize("content, form, field", [
    (b"", {}, "file"),
    (b"\xff\xfe\x00bad", {}, "file"),
    (b"fire\n", {"topn": "0"}, "topn"),
])
def test_a_bad_upload_is_422_naming_the_field_and_queues_nothing(job_app, job_api, content, form, field):
    response = post_job(job_api, content, **form)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == field
    with job_app.app_context():
        assert jobs.store().counts()["queued"] == 0


def test_a_job_needs_multipart(job_api):
    response = job_api.post("/api/v1/jobs", json={"file": "fire"})
    assert response.status_code == 415 and "curl -F" in response.get_json()["error"]["message"]


def test_a_full_queue_is_503_with_retry_after(demo_model, tmp_path, openapi):
    app = create_app({**DEV, "MODEL_PATH": str(demo_model), "JOBS_DB": str(tmp_path / "j.sqlite3"),
                      "JOBS_MAX_QUEUED": 2})
    client = CheckedClient(app.test_client(), openapi)
    assert [post_job(client, b"fire").status_code for _ in range(2)] == [202, 202]
    response = post_job(client, b"fire")
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert response.get_json()["error"]["code"] == "queue_full"


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job", "A" * 32])
def test_an_unknown_job_is_a_json_404(job_api, job_id):
    response = job_api.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "job_not_found"


@pytest.mark.parametrize("query, field", [
    ("offset=-1", "offset"), ("offset=x", "offset"), ("limit=0", "limit"), ("limit=1001", "limit"),
    ("limit=1_0", "limit"), ("offset=99999999999999999999", "offset"),
])
def test_bad_paging_is_422_naming_the_parameter(job_api, query, field):
    location = post_job(job_api, b"fire").headers["Location"]
    response = job_api.get(f"{location}?{query}")
    assert response.status_code == 422 and response.get_json()["error"]["field"] == field


def test_an_unusable_store_is_a_json_503_and_an_html_503(demo_model, tmp_path):
    (tmp_path / "file").write_text("")
    app = create_app({**DEV, "MODEL_PATH": str(demo_model), "JOBS_DB": str(tmp_path / "file" / "jobs.sqlite3")})
    client = app.test_client()
    response = post_job(client, b"fire")
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "jobs_unavailable"
    assert client.get("/jobs/" + "0" * 32).status_code == 503
    assert client.get("/metrics").status_code == 200


def test_the_store_is_in_data_dir_when_it_is_set_else_in_the_instance_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert create_app(DEV).extensions[jobs.EXTENSION].path == tmp_path / "jobs.sqlite3"
    monkeypatch.delenv("DATA_DIR")
    app = create_app(DEV)
    assert app.extensions[jobs.EXTENSION].path == Path(app.instance_path) / "jobs.sqlite3"
    assert create_app({**DEV, "JOBS_DB": "/srv/q.db"}).extensions[jobs.EXTENSION].path == Path("/srv/q.db")


def test_metrics_count_jobs_by_status(job_app, job_api):
    post_job(job_api, b"fire")
    post_job(job_api, b"police")
    text = job_api.get("/metrics").get_data(as_text=True)
    assert 'modelhost_jobs{status="queued"} 2.0' in text
    assert 'modelhost_jobs{status="done"} 0.0' in text


# --- the UI ---------------------------------------------------------------------------------------

def page_text(response) -> str:
    return re.sub(r"\s+", " ", response.get_data(as_text=True))


def test_the_home_page_has_a_form_for_a_file_job(job_app):
    page = page_text(job_app.test_client().get("/"))
    assert 'action="/jobs" method="post" enctype="multipart/form-data"' in page
    assert 'type="file"' in page


def test_a_job_s_page_refreshes_itself_while_it_runs_then_shows_the_results(job_app):
    client = job_app.test_client()
    response = client.post("/jobs", data={"file": (io.BytesIO(b"fire\nzzqqxx\n"), "q.txt"), "topn": "3"},
                           content_type="multipart/form-data")
    assert response.status_code == 303
    location = response.headers["Location"]
    assert re.fullmatch(r"/jobs/[0-9a-f]{32}", location)
    waiting = page_text(client.get(location))
    assert '<meta http-equiv="refresh" content="2">' in waiting and "<script" not in waiting
    assert "Waiting for a worker" in waiting and "0 of 2 lines answered" in waiting
    assert '<progress id="progress" value="0" max="2">' in waiting
    run_queued(job_app)
    done = page_text(client.get(location))
    assert "http-equiv" not in done
    assert "Done. 2 of 2 lines answered (100 %)" in done
    assert done.count("<tr><td>") == 2 and "not in the vocabulary: zzqqxx" in done


@pytest.mark.parametrize("data, message", [
    ({"file": (io.BytesIO(b"\n \n"), "q.txt")}, "Has no query words: put one word per line."),
    ({"topn": "5"}, "Choose a file."),
    ({"file": (io.BytesIO(b"fire"), "q.txt"), "topn": "500"}, "Must be from 1 to 100, got 500."),
])
def test_the_job_form_explains_bad_input(job_app, data, message):
    response = job_app.test_client().post("/jobs", data=data, content_type="multipart/form-data")
    assert response.status_code == 422
    assert message in page_text(response)


def test_an_unknown_job_s_page_is_an_html_404(job_app):
    response = job_app.test_client().get("/jobs/" + "0" * 32)
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "There is no job with this address" in page_text(response)


# --- real worker processes ------------------------------------------------------------------------

class WorkerProcess:
    """`python -m app.worker` from the checkout, as the kit runs it: FLASK_* settings and DATA_DIR."""

    def __init__(self, env: dict, log: Path):
        self.log = log
        with open(log, "ab") as output:
            self.process = subprocess.Popen([sys.executable, "-m", "app.worker"], cwd=ROOT, env=env,
                                            stdout=output, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text()

    def wait_started(self, timeout: float = 60) -> None:
        wait_until(lambda: f"job worker {jobs.owner_identity(self.process.pid)}" in self.text()
                   or self.process.poll() is not None, "the worker started", timeout)
        assert self.process.poll() is None, self.text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def wait_until(check, what: str, timeout: float = 60, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (answer := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(every)
    return answer


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A data directory the web app (this process) and the workers share through DATA_DIR."""
    directory = tmp_path / "data"
    directory.mkdir()
    monkeypatch.setenv("DATA_DIR", str(directory))
    return directory


@pytest.fixture
def workers(data_dir, demo_model, tmp_path):
    """Starts workers on data_dir (lease long enough that only dead-owner detection can requeue
    a killed worker's job in time); every one is killed and reaped at the end."""
    started = []
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}, "DATA_DIR": str(data_dir),
           "FLASK_ENVIRONMENT": "development", "FLASK_MODEL_PATH": str(demo_model),
           "FLASK_JOBS_POLL_SECONDS": "0.1", "FLASK_JOBS_LEASE_SECONDS": "600"}

    def start(env_extra: dict | None = None) -> WorkerProcess:
        worker = WorkerProcess({**env, **(env_extra or {})}, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def web(data_dir, demo_model, openapi):
    app = create_app({**DEV, "MODEL_PATH": str(demo_model)})
    assert app.extensions[jobs.EXTENSION].path == data_dir / "jobs.sqlite3"
    return app, CheckedClient(app.test_client(), openapi)


def check_every_line_once(client, location: str, lines: list[str], model, topn: int) -> dict:
    """The done job's results, page by page: each line once, in order, each the answer /batch gives.
    The first page is checked against the OpenAPI document, the others only read (checking a page of
    1,000 lines takes seconds)."""
    results, url = [], location
    body = client.get(url).get_json()
    while url:
        body = client.client.get(url).get_json()
        assert body["status"] == "done", body
        results += body["results"]
        url = body["next"]
    assert [r["line"] for r in results] == list(range(1, len(lines) + 1))
    assert results[::97] == [answer_line(model, n, w, topn) for n, w in enumerate(lines, 1)][::97]
    return body


def test_a_worker_process_answers_a_submitted_job(workers, web, model):
    app, client = web
    worker = workers()
    lines = WORDS * 20
    location = post_job(client, "\n".join(lines).encode(), topn="4").headers["Location"]
    wait_until(lambda: client.get(location).get_json()["status"] == "done", "the job was done", timeout=60)
    body = check_every_line_once(client, location, lines, model, 4)
    assert body["attempts"] == 1
    assert re.search(r"job [0-9a-f]{32}: started at line 1 of 120 \(attempt 1 of 3\)", worker.text())


def test_a_worker_without_a_model_exits_1_saying_why(workers, tmp_path):
    worker = workers({"FLASK_MODEL_PATH": str(tmp_path / "no-model")})
    assert worker.process.wait(timeout=60) == 1
    assert "job worker: no model, so no jobs" in worker.text()


def job_progress(app, job_id: str) -> jobs.Job:
    with app.app_context():
        return jobs.store().get(job_id)


@pytest.mark.slow
def test_a_job_survives_kill_9_of_its_worker_and_is_done_once_it_starts_again(workers, web, model):
    """The worker killed mid-job (its lease is 600 s: only seeing that the claimant's process is gone
    can bring the job back in time); started again, it takes the job up at once, after its last
    checkpoint, and every line has its result exactly once."""
    app, client = web
    lines = [WORDS[i % len(WORDS)] for i in range(20_000)]
    job_id = post_job(client, "\n".join(lines).encode(), topn="3").get_json()["id"]
    first = workers()
    killed_at = wait_until(lambda: job_progress(app, job_id).done >= 2 * jobs.CHUNK_LINES and job_progress(app, job_id),
                           "the first checkpoints", timeout=60, every=0.01)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    abandoned = job_progress(app, job_id)
    assert abandoned.status == "running" and abandoned.done < len(lines), "killed too late: make the job longer"
    second = workers()
    second.wait_started()
    restarted = time.monotonic()
    wait_until(lambda: "resumed at line" in second.text(), "the job resumed", timeout=5)
    print(f"killed after {abandoned.done} of {len(lines)} lines; running again "
          f"{time.monotonic() - restarted:.2f} s after the new worker started")
    resumed_at = int(re.search(r"resumed at line (\d+) of 20000 \(attempt 2 of 3\)", second.text()).group(1))
    assert resumed_at - 1 >= killed_at.done  # continued: nothing before the kill's checkpoint was redone
    wait_until(lambda: job_progress(app, job_id).status == "done", "the job was done", timeout=120)
    body = check_every_line_once(client, f"/api/v1/jobs/{job_id}", lines, model, 3)
    assert body["attempts"] == 2 and body["error"] is None
    assert result_rows(app.extensions[jobs.EXTENSION].path, job_id) == list(range(len(lines)))


@pytest.mark.slow
def test_term_stops_a_worker_within_seconds_and_the_job_resumes_at_the_next_start(workers, web, model):
    app, client = web
    lines = [WORDS[i % len(WORDS)] for i in range(20_000)]
    job_id = post_job(client, "\n".join(lines).encode()).get_json()["id"]
    first = workers()
    wait_until(lambda: job_progress(app, job_id).done > 0, "the first checkpoint", timeout=60, every=0.01)
    began = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=5) == 0, first.text()
    print(f"TERM to exit: {time.monotonic() - began:.2f} s")
    stopped = job_progress(app, job_id)
    assert (stopped.status, stopped.attempts) == ("queued", 0) and 0 < stopped.done < len(lines)
    assert f"stopping after line {stopped.done} of 20000; queued again" in first.text()
    second = workers()
    wait_until(lambda: job_progress(app, job_id).status == "done", "the job was done", timeout=120)
    assert f"resumed at line {stopped.done + 1} of 20000 (attempt 1 of 3)" in second.text()
    check_every_line_once(client, f"/api/v1/jobs/{job_id}", lines, model, 10)


@pytest.mark.slow
def test_two_workers_on_one_queue_run_each_job_once(workers, web, model):
    app, client = web
    lines = [WORDS[i % len(WORDS)] for i in range(3000)]
    ids = [post_job(client, "\n".join(lines).encode(), topn="2").get_json()["id"] for _ in range(8)]
    pair = [workers(), workers()]
    wait_until(lambda: all(job_progress(app, i).status == "done" for i in ids), "every job was done", timeout=120)
    logs = pair[0].text() + pair[1].text()
    for job_id in ids:
        assert logs.count(f"job {job_id}: started") == 1 and logs.count(f"job {job_id}: done") == 1
        body = check_every_line_once(client, f"/api/v1/jobs/{job_id}", lines, model, 2)
        assert body["attempts"] == 1
