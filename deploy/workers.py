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
class Measured:
    """What a release's gunicorn was seen to use (smaps_rollup, in MB): the largest reading so far."""
    release: str
    threads: int
    worker_mb: int  # the most private memory (not shared with any other process) one worker had
    master_mb: int  # the master's private memory
    shared_mb: int  # the master's pages the workers share: the preloaded app and a memory-mapped model, once
    readings: int
    at: str  # the latest reading's time, UTC

    def describe(self) -> str:
        return (f"a worker up to {self.worker_mb} MB of its own with {self.threads} threads, the master "
                f"{self.master_mb} MB, {self.shared_mb} MB shared by all (app and model, once); "
                f"{self.readings} reading{'s' if self.readings != 1 else ''} of {self.release}, the last at {self.at}")


def parse_memory(output: str) -> list[tuple[int, int, int]]:
    """(pid, rss_kb, private_kb) per line of `commands.memory_of`: the master first, then its workers."""
    rows = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(field.isdigit() for field in fields):
            rows.append((int(fields[0]), int(fields[1]), int(fields[2])))
    return rows


def measured(rows: list[tuple[int, int, int]], release: str, threads: int, at: str,
             earlier: Measured | None) -> Measured | None:
    """A reading of a master and its workers, merged into the earlier one of the same release and
    threads (the largest of each); None without a worker to read."""
    if len(rows) < 2:
        return None
    (_, master_rss, master_private), workers = rows[0], rows[1:]
    reading = Measured(release, threads, worker_mb=-(-max(private for _, _, private in workers) // 1024),
                       master_mb=-(-master_private // 1024), shared_mb=(master_rss - master_private) // 1024,
                       readings=1, at=at)
    if earlier is None or (earlier.release, earlier.threads) != (release, threads):
        return reading
    return Measured(release, threads, max(reading.worker_mb, earlier.worker_mb),
                    max(reading.master_mb, earlier.master_mb), max(reading.shared_mb, earlier.shared_mb),
                    earlier.readings + 1, at)


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    explanation: str  # one line: the rule, the memory cap and the decision, in words


def worker_cost(worker_mb: int, threads: int, thread_mb: int, measured: Measured | None) -> tuple[int, str]:
    """What one worker is expected to cost beyond the shared model, and why, in words: the largest
    measured worker of the live release (adjusted for a change of threads), else the settings' estimate."""
    if measured is None:
        return worker_mb + threads * thread_mb, f"{worker_mb} MB + {threads} threads x {thread_mb} MB, estimated"
    extra = (threads - measured.threads) * thread_mb
    cost = max(measured.worker_mb + extra, 1)
    threads_changed = f" {'+' if extra >= 0 else '-'} {abs(threads - measured.threads)} threads x {thread_mb} MB" \
        if extra else ""
    return cost, f"{measured.worker_mb} MB measured{threads_changed}"


def plan_workers(*, cores: int, memory_total_mb: int, memory_available_mb: int, model_mb: int,
                 shared: bool, reserve_mb: int, worker_mb: int, threads: int, thread_mb: int,
                 measured: Measured | None = None, explicit: int | None = None) -> WorkerPlan:
    """Apply the rule: 2n+1, capped by (available - reserve [- shared model]) / per-worker cost, at least 1.
    A worker's cost is measured (the live release's largest worker) when a reading exists, else
    worker_mb + threads x thread_mb."""
    worker_mb, basis = worker_cost(worker_mb, threads, thread_mb, measured)
    by_cores = 2 * cores + 1
    if shared:
        free = memory_available_mb - reserve_mb - model_mb
        per_worker = worker_mb
        cost = f"(({memory_available_mb} MB available - {reserve_mb} MB reserve - {model_mb} MB model, " \
               f"counted once) / {worker_mb} MB per worker ({basis}))"
    else:
        free = memory_available_mb - reserve_mb
        per_worker = worker_mb + model_mb
        cost = f"(({memory_available_mb} MB available - {reserve_mb} MB reserve) / " \
               f"({worker_mb} MB ({basis}) + {model_mb} MB model) per worker)"
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
