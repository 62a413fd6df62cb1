"""The worker: takes the oldest queued job, works on it step by step, writes its result.

A job being worked on is in work/; a worker that was killed leaves it there, and the next worker
puts it back in the queue when it starts (one worker per app). TERM lets the job in hand finish."""
from __future__ import annotations

import json
import os
import signal
import time

from spool import spool

stopping = False


def stop(*_):
    global stopping
    stopping = True


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    root = spool()
    for left in (root / "work").glob("*.json"):
        left.rename(root / "queue" / left.name)
        print(f"worker {os.getpid()}: {left.stem} was interrupted; queued again", flush=True)
    print(f"worker {os.getpid()} started in {os.getcwd()}", flush=True)
    while not stopping:
        queued = sorted((root / "queue").glob("*.json"))
        if not queued:
            time.sleep(0.2)
            continue
        working = root / "work" / queued[0].name
        queued[0].rename(working)
        job = json.loads(working.read_text())
        for _ in range(job["steps"]):
            time.sleep(0.5)
        done = {**job, "release": os.path.basename(os.getcwd()), "pid": os.getpid(), "finished": time.time()}
        partial = root / f".{working.name}.partial"
        partial.write_text(json.dumps(done))
        partial.rename(root / "done" / working.name)
        working.unlink()
        print(f"worker {os.getpid()}: {job['id']} done", flush=True)
    print(f"worker {os.getpid()}: stopping (TERM)", flush=True)


if __name__ == "__main__":
    main()
