"""Total memory (PSS) of gunicorn with 1 worker vs 5 workers on a 100000x300 model.

For each worker count, starts ``.venv/bin/gunicorn 'app:create_app()'`` in the repository root
(so gunicorn.conf.py applies: preload_app, the model memory-mapped once in the master), waits for
/readyz, sends concurrent GET /api/v1/similar queries so that every worker reads the vectors,
then sums the PSS (proportional set size: shared pages divided among the processes that map
them) of the master and all its descendants from /proc/PID/smaps_rollup. If the workers share the
mapped vectors, each extra worker costs its private memory only, not another copy of the vectors.

Run from the repository root (Linux only; needs /proc):

    .venv/bin/python benchmarks/memory.py               # builds the synthetic model into a temp dir
    .venv/bin/python benchmarks/memory.py --model DIR   # DIR from: python -m app.model build --out DIR --synthetic 100000x300
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.model import VECTORS, build

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
SYNTHETIC_SIZE = (100_000, 300)
STOP_TIMEOUT = 45  # gunicorn.conf.py gives workers graceful_timeout = 30 s
MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")  # header line of one mapping in /proc/PID/smaps


def bounded_int(low: int, high: int):
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value
    return parse


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of pid, from the ppid field of /proc/*/stat."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            # The command name (field 2) may hold spaces and parentheses: split after the last ")".
            parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def mapped_kib(pid: int, path: Path) -> tuple[int, int]:
    """(Rss, Pss) in KiB of pid's mappings of the file at path."""
    kib = {"Rss:": 0, "Pss:": 0}
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if MAPPING.match(line):
            inside = line.endswith(str(path))
        elif inside and line.split()[0] in kib:
            kib[line.split()[0]] += int(line.split()[1])
    return kib["Rss:"], kib["Pss:"]


def status(url: str) -> int | None:
    """HTTP status of GET url, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def wait_ready(server: subprocess.Popen, base: str, workers: int, timeout: float) -> None:
    """Until /readyz answers 200 and all workers are forked (readyz may come from the first one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {server.returncode}")
        if status(f"{base}/readyz") == 200 and len(descendants(server.pid)) == workers:
            return
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn not ready with {workers} workers after {timeout:.0f} s")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        # Its own session (start_new_session): the group is the master and its workers only.
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(STOP_TIMEOUT)


def measure(model: Path, workers: int, args, tmp: Path) -> dict:
    """Start gunicorn with this many workers, query it, and return its processes' memory in KiB."""
    log, metrics_dir = tmp / f"gunicorn-{workers}.log", tmp / f"metrics-{workers}"
    metrics_dir.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("FLASK_", "MODELHOST_", "PROMETHEUS_"))}
    env.update(FLASK_MODEL_PATH=str(model), FLASK_SECRET_KEY="bench",
               MODELHOST_BIND=f"127.0.0.1:{port}", MODELHOST_WORKERS=str(workers),
               # Ours, in the temp dir: gunicorn.conf.py's own is left behind if the app fails to load.
               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    with open(log, "w") as output:
        server = subprocess.Popen([str(GUNICORN), "app:create_app()"], cwd=ROOT, env=env,
                                  stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(server, base, workers, args.ready_timeout)
        # Concurrent requests, so that all workers get some (idle sync workers race for accept()).
        url = f"{base}/api/v1/similar?word={args.word}"
        with ThreadPoolExecutor(2 * workers) as pool:
            failed = [s for s in pool.map(status, [url] * args.queries) if s != 200]
        if failed:
            raise RuntimeError(f"{len(failed)} of {args.queries} queries failed (status {failed[0]}): {url}")
        children = descendants(server.pid)
        vectors = [mapped_kib(pid, model / f"{VECTORS}.vectors.npy") for pid in [server.pid, *children]]
        return {
            "master": pss_kib(server.pid),
            "workers": sum(pss_kib(pid) for pid in children),
            "count": len(children),
            "vectors_pss": sum(pss for _, pss in vectors),
            "workers_with_vectors": sum(rss > 0 for rss, _ in vectors[1:]),
        }
    except Exception:
        print(f"gunicorn log ({log}), last lines:\n" + "\n".join(log.read_text().splitlines()[-20:]),
              file=sys.stderr)
        raise
    finally:
        stop(server)


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, metavar="DIR",
                        help="model to serve (default: build a synthetic 100000x300 model into a temp dir)")
    parser.add_argument("--workers", type=bounded_int(1, 32), nargs=2, default=[1, 5], metavar=("FEW", "MANY"),
                        help="the two worker counts to compare (default 1 5)")
    parser.add_argument("--queries", type=bounded_int(1, 10_000), default=50,
                        help="GET /api/v1/similar requests per run (default 50)")
    parser.add_argument("--word", default="word0000001", help="query word, in the model's vocabulary")
    parser.add_argument("--ready-timeout", type=bounded_int(1, 600), default=120,
                        help="seconds to wait for /readyz (default 120)")
    args = parser.parse_args(argv)
    few, many = args.workers
    if few >= many:
        parser.error("--workers: FEW must be less than MANY")

    with tempfile.TemporaryDirectory(prefix="modelhost-memory-") as tmp:
        model = args.model
        if model is None:
            model = Path(tmp, "model")
            build(model, "synthetic-{}x{}".format(*SYNTHETIC_SIZE), None, SYNTHETIC_SIZE)
        model = model.resolve()  # smaps lists the absolute path
        vectors_kib = (model / f"{VECTORS}.vectors.npy").stat().st_size / 1024
        print(f"model {model}\nvectors file {VECTORS}.vectors.npy: {mib(vectors_kib)}\n")

        totals = {}
        for workers in args.workers:
            run = measure(model, workers, args, Path(tmp))
            totals[workers] = run["master"] + run["workers"]
            print(f"{workers} worker(s): total PSS {mib(totals[workers]):>10} | master {mib(run['master']):>10} | "
                  f"per worker {mib(run['workers'] / run['count']):>10}")
            print(f"    vectors mapping: PSS summed over processes {mib(run['vectors_pss'])}, "
                  f"resident in {run['workers_with_vectors']}/{run['count']} workers")

        copies = (many - 1) * vectors_kib
        print(f"\nratio total({many})/total({few}): {totals[many] / totals[few]:.2f}")
        print(f"each extra worker adds {mib((totals[many] - totals[few]) / (many - few))}")
        print(f"with {many} private copies of the vectors the total would be about {mib(totals[many] + copies)}: "
              f"sharing saves about {mib(copies)} ({many - 1} x the vectors file)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
