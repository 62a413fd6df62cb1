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
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.model import VECTORS, build  # noqa: E402
from tests.servers import children, get, gunicorn  # noqa: E402  (the integration tests' harness)
from benchlib import SYNTHETIC_SIZE, bounded_int  # noqa: E402

MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")  # header line of one mapping in /proc/PID/smaps


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


def measure(model: Path, workers: int, args, tmp: Path) -> dict:
    """Start gunicorn with this many workers, query it, and return its processes' memory in KiB."""
    log, metrics_dir = tmp / f"gunicorn-{workers}.log", tmp / f"metrics-{workers}"
    metrics_dir.mkdir()
    try:
        with gunicorn(model, workers, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, log=log) as (base, server):
            # Concurrent requests, so that every worker gets some and reads the vectors.
            url = f"{base}/api/v1/similar?word={args.word}"
            with ThreadPoolExecutor(2 * workers) as pool:
                failed = [s for s in pool.map(lambda u: get(u)[0], [url] * args.queries) if s != 200]
            if failed:
                raise RuntimeError(f"{len(failed)} of {args.queries} queries failed (status {failed[0]}): {url}")
            workers_pids = children(server.pid)
            vectors = [mapped_kib(pid, model / f"{VECTORS}.vectors.npy") for pid in [server.pid, *workers_pids]]
            return {
                "master": pss_kib(server.pid),
                "workers": sum(pss_kib(pid) for pid in workers_pids),
                "count": len(workers_pids),
                "vectors_pss": sum(pss for _, pss in vectors),
                "workers_with_vectors": sum(rss > 0 for rss, _ in vectors[1:]),
            }
    except Exception:
        if log.exists():
            print(f"gunicorn log ({log}), last lines:\n" + "\n".join(log.read_text().splitlines()[-20:]),
                  file=sys.stderr)
        raise


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
