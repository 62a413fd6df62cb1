"""In-process latency of WordModel.similar([word], topn=10): the demo model vs a 100000x300 one.

Loads each model the way the app does (app.model.load, memory-mapped, then WordModel), warms it
up, then times single-word queries with time.perf_counter and prints p50/p95/p99/mean in
milliseconds per model and the synthetic/demo ratio of the p50s. The query words are drawn
from each vocabulary with a fixed seed, so runs are comparable. No HTTP, no gunicorn.

The large model's query is a matrix-vector product that OpenBLAS may spread over threads; on
small or busy machines that makes its figures vary between runs, and OPENBLAS_NUM_THREADS=1
gives steadier (single-core) ones.

Run from the repository root:

    .venv/bin/python benchmarks/latency.py                  # builds both models into a temp dir
    .venv/bin/python benchmarks/latency.py --demo DIR --synthetic-model DIR -n 1000

DIRs are models built by ``python -m app.model build --out DIR [--synthetic 100000x300]``.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from app.embeddings import WordModel
from app.model import build, load
from benchlib import SYNTHETIC_SIZE, bounded_int

MAX_QUERIES = 100_000


def time_queries(model: WordModel, queries: int, warmup: int, seed: int) -> np.ndarray:
    """Milliseconds per similar() call, over `queries` words drawn from the vocabulary with `seed`."""
    words = random.Random(seed).choices(model.kv.index_to_key, k=warmup + queries)
    for word in words[:warmup]:
        model.similar([word], topn=10)
    timings = []
    for word in words[warmup:]:
        started = time.perf_counter()
        model.similar([word], topn=10)
        timings.append(time.perf_counter() - started)
    return np.array(timings) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, metavar="DIR", help="demo model to use instead of building one")
    parser.add_argument("--synthetic-model", type=Path, metavar="DIR",
                        help="100000x300 synthetic model to use instead of building one")
    parser.add_argument("-n", "--queries", type=bounded_int(1, MAX_QUERIES), default=200,
                        help="timed queries per model (default 200)")
    parser.add_argument("--warmup", type=bounded_int(0, MAX_QUERIES), default=20,
                        help="untimed queries per model first (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed for drawing the query words (default 0)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="modelhost-latency-") as tmp:
        paths = {"demo": args.demo, "synthetic": args.synthetic_model}
        if paths["demo"] is None:
            paths["demo"] = Path(tmp, "demo")
            build(paths["demo"], "demo", None)
        if paths["synthetic"] is None:
            paths["synthetic"] = Path(tmp, "synthetic")
            build(paths["synthetic"], "synthetic-{}x{}".format(*SYNTHETIC_SIZE), None, SYNTHETIC_SIZE)

        print(f"{args.queries} queries per model after {args.warmup} warm-up, topn=10, times in ms")
        print(f"{'model':<10} {'vocabulary x dims':>18} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8}")
        p50 = {}
        for name, path in paths.items():
            model = WordModel(load(path))
            ms = time_queries(model, args.queries, args.warmup, args.seed)
            p50[name], p95, p99 = np.percentile(ms, [50, 95, 99])
            size = f"{len(model.kv.index_to_key)} x {model.kv.vector_size}"
            print(f"{name:<10} {size:>18} {p50[name]:8.3f} {p95:8.3f} {p99:8.3f} {ms.mean():8.3f}")
        print(f"p50 ratio synthetic/demo: {p50['synthetic'] / p50['demo']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
