"""How many gunicorn workers: 2 x cores + 1, capped by the memory the host can give them.

Each worker is a process that serves one request at a time per thread. The 2n+1 rule (gunicorn's
docs) keeps every core busy while some workers wait on I/O. On a small board the rule's count
times the memory of a worker is more than the board has, and the kernel kills workers (or they
time out while swapping): memory caps the count.

A model memory-mapped by the master (`preload_app` with `mmap="r"`) is in memory once, whatever the
number of workers; a model each worker loads for itself is in memory once per worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024


class ModelSizeError(Exception):
    """The model's size cannot be read; the message says how to fix it."""


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    explanation: str  # one line: the rule, the memory cap and the decision, in words


def plan_workers(*, cores: int, memory_total_mb: int, memory_available_mb: int, model_mb: int,
                 shared: bool, reserve_mb: int, worker_mb: int, explicit: int | None = None) -> WorkerPlan:
    """Apply the rule: 2n+1, capped by (available - reserve [- shared model]) / per-worker cost, at least 1."""
    by_cores = 2 * cores + 1
    if shared:
        free = memory_available_mb - reserve_mb - model_mb
        per_worker = worker_mb
        cost = f"(({memory_available_mb} MB available - {reserve_mb} MB reserve - {model_mb} MB model, " \
               f"counted once) / {worker_mb} MB per worker)"
    else:
        free = memory_available_mb - reserve_mb
        per_worker = worker_mb + model_mb
        cost = f"(({memory_available_mb} MB available - {reserve_mb} MB reserve) / " \
               f"({worker_mb} MB + {model_mb} MB model) per worker)"
    by_memory = max(free // per_worker, 0)
    host = f"{gigabytes(memory_total_mb)} host, {model_mb} MB model {'shared' if shared else 'in every worker'}"
    rule = f"2n+1 = {by_cores} ({cores} {'core' if cores == 1 else 'cores'}); memory allows {by_memory} {cost}"
    if explicit is not None:
        warning = "; more than memory allows: expect swapping or the OOM killer" if explicit > by_memory else ""
        return WorkerPlan(explicit, f"{plural(explicit)} set in deploy.toml ([gunicorn] workers){warning}. "
                                    f"The rule would say: {rule}")
    workers = max(min(by_cores, by_memory), 1)
    if by_memory < 1:
        reason = "never fewer than 1; this host is short of memory: expect swapping or the OOM killer"
    elif by_memory < by_cores:
        reason = "memory is the limit"
    else:
        reason = "cores are the limit"
    return WorkerPlan(workers, f"{rule} -> {plural(workers)} ({reason}): {host}")


def plural(workers: int) -> str:
    return f"{workers} worker" if workers == 1 else f"{workers} workers"


def gigabytes(mb: int) -> str:
    """A host's RAM as people name it: 1 GB, 4 GB, 0.5 GB (MemTotal is a little under the nominal size)."""
    if mb < 900:
        return f"{round(mb / 1024, 1):g} GB"
    return f"{max(round(mb / 1024), 1)} GB"


def model_size_mb(path: Path) -> int:
    """A model's memory: the sum of its files' sizes (a file's own size), in MB (rounded up)."""
    path = Path(path)
    if not path.exists():
        raise ModelSizeError(f"no model at {path} ([model] path in deploy.toml): put it there, "
                             "or set [model] size_mb in deploy.toml")
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return -(-sum(f.stat().st_size for f in files) // MB)
