"""What a job costs: submit -> done for a 1,000-line file, beside /api/v1/batch for the same file.

Starts ``gunicorn 'app:create_app()'`` from the repository root (the integration tests' harness,
tests/servers.py) and a real ``python -m app.worker`` beside it, on a temporary DATA_DIR, as a
deploy runs them. For each worker poll interval (the default, 1 s, and a short one), it times:

- POST /api/v1/batch with the file: the synchronous answer, all lines at once;
- POST /api/v1/jobs with the same file until the worker has committed its last chunk (the store
  read every 10 ms), split into the 202 answer, the wait for a worker, and the run (from the
  store's own timestamps); then GET /api/v1/jobs/<id> checks that it is done. Each job is
  submitted after a random pause of up to one poll interval, so it lands anywhere in the idle
  worker's sleep (back to back, every job would wait the whole interval);

then one job of --large-lines lines (the default limit, 100,000) for the worker's throughput. The
query words are drawn from the model's vocabulary with a fixed seed, so runs are comparable.

Run from the repository root (Linux):

    .venv/bin/python benchmarks/jobs.py                   # builds the demo model into a temp dir
    .venv/bin/python benchmarks/jobs.py --model DIR -n 10 # DIR from: python -m app.model build --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.jobs import JobStore  # noqa: E402
from app.model import build, load  # noqa: E402
from tests.servers import ROOT, get, gunicorn  # noqa: E402  (the integration tests' harness)
from benchlib import bounded_int  # noqa: E402

CLIENT_POLL_SECONDS = 0.01


def post_file(url: str, text: str, topn: int) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of a multipart upload of text as the file field."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"topn\"\r\n\r\n{topn}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.txt\"\r\n"
            f"Content-Type: text/plain\r\n\r\n{text}\r\n--{boundary}--\r\n").encode()
    request = urllib.request.Request(url, data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, dict(response.headers), json.load(response)


def run_job(base: str, store: JobStore, text: str, topn: int) -> dict:
    """Seconds from submit to done (the worker's commit of the last chunk), with its parts, from the
    store's own timestamps: watched in the store, so that polling over HTTP does not take CPU from
    the worker on a small machine."""
    began = time.time()
    status, headers, job = post_file(f"{base}/api/v1/jobs", text, topn)
    answered = time.time()
    assert status == 202, job
    times = "SELECT created_at, started_at, finished_at FROM jobs WHERE id = ?"
    while (stored := store.connection().execute(times, (job["id"],)).fetchone())["finished_at"] is None:
        time.sleep(CLIENT_POLL_SECONDS)
    body = json.loads(get(f"{base}{headers['Location']}")[1])
    assert body["status"] == "done" and len(body["results"]) == min(body["progress"]["total"], 1000), body
    return {"total": stored["finished_at"] - began, "submit": answered - began,
            "wait": stored["started_at"] - stored["created_at"], "run": stored["finished_at"] - stored["started_at"],
            "lines": body["progress"]["total"]}


def start_worker(env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as output:
        worker = subprocess.Popen([sys.executable, "-m", "app.worker"], cwd=ROOT, env=env, stdout=output,
                                  stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "job worker" not in log.read_text():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return worker


def stop_worker(worker: subprocess.Popen) -> float:
    began = time.monotonic()
    worker.terminate()
    worker.wait(timeout=30)
    return time.monotonic() - began


def poll_seconds(text: str) -> float:
    """An argparse type: a poll interval the worker accepts (FLASK_JOBS_POLL_SECONDS)."""
    value = float(text)
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 60, got {value}")
    return value


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, metavar="DIR", help="model to serve (default: build the demo model)")
    parser.add_argument("-n", "--runs", type=bounded_int(1, 100), default=5, help="runs of each (default 5)")
    parser.add_argument("--lines", type=bounded_int(1, 1000), default=1000, help="lines of the file (default 1000)")
    parser.add_argument("--large-lines", type=bounded_int(0, 100_000), default=100_000,
                        help="lines of the one large job (default 100000; 0: none)")
    parser.add_argument("--polls", type=poll_seconds, nargs="+", default=[1.0, 0.1], metavar="SECONDS",
                        help="worker poll intervals to compare (default 1.0 0.1)")
    parser.add_argument("--topn", type=bounded_int(1, 100), default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="modelhost-jobs-") as tmp:
        model = args.model or Path(tmp, "model")
        if args.model is None:
            build(model, "demo", None)
        vocabulary = load(model).vectors.index_to_key
        pauses = random.Random(args.seed)
        words = random.Random(args.seed).choices(vocabulary, k=max(args.lines, args.large_lines))
        text = "\n".join(words[:args.lines])
        data = Path(tmp, "data")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}, "DATA_DIR": str(data),
               "FLASK_MODEL_PATH": str(model), "FLASK_SECRET_KEY": "benchmark"}
        store = JobStore(data / "jobs.sqlite3")
        print(f"model {model.name}: {len(vocabulary)} words; a file of {args.lines} lines, topn={args.topn}, "
              f"{args.runs} runs each; median (min-max) in ms\n")
        with gunicorn(model, workers=2, env={"DATA_DIR": str(data)}) as (base, _):
            batch = []
            for _ in range(args.runs):
                began = time.time()
                status, _, body = post_file(f"{base}/api/v1/batch", text, args.topn)
                batch.append(time.time() - began)
                assert status == 200 and len(body["results"]) == args.lines
            print(f"{'/api/v1/batch (synchronous)':<34} {summary(batch)}")
            figures = {}
            for poll in args.polls:
                worker = start_worker({**env, "FLASK_JOBS_POLL_SECONDS": str(poll)}, Path(tmp, f"worker-{poll}.log"))
                try:
                    runs = []
                    for _ in range(args.runs):
                        time.sleep(pauses.uniform(0, poll))
                        runs.append(run_job(base, store, text, args.topn))
                finally:
                    term = stop_worker(worker)
                figures[poll] = statistics.median(r["total"] for r in runs)
                print(f"{f'job, worker poll {poll:g} s: total':<34} {summary([r['total'] for r in runs])}")
                for part, what in (("submit", "the 202 answer"), ("wait", "queued until a worker took it"),
                                   ("run", "the worker's run, checkpoints included")):
                    print(f"{'    ' + part:<34} {summary([r[part] for r in runs])}   {what}")
                print(f"{'    TERM to exit (idle worker)':<34} {ms(term)}")
            for poll, total in figures.items():
                print(f"ratio job (poll {poll:g} s) / batch: {total / statistics.median(batch):.1f}x")
            if args.large_lines:
                worker = start_worker({**env, "FLASK_JOBS_POLL_SECONDS": str(min(args.polls))},
                                      Path(tmp, "worker-large.log"))
                try:
                    large = run_job(base, store, "\n".join(words[:args.large_lines]), args.topn)
                finally:
                    stop_worker(worker)
                size = (data / "jobs.sqlite3").stat().st_size + (data / "jobs.sqlite3-wal").stat().st_size
                print(f"\none job of {large['lines']} lines: {large['total']:.1f} s submit -> done, run "
                      f"{large['run']:.1f} s ({large['lines'] / large['run']:,.0f} lines/s); "
                      f"store now {size / 2**20:.1f} MiB")
    return 0


def summary(seconds: list[float]) -> str:
    return f"{ms(statistics.median(seconds))} ({ms(min(seconds)).strip()}-{ms(max(seconds)).strip()})"


if __name__ == "__main__":
    raise SystemExit(main())
