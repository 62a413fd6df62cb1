"""A scheduled job: one start line and one end line per run in DATA_DIR/ticks.log. It takes
TICK_SECONDS, or as many as DATA_DIR/tick-seconds says while that file is there."""
from __future__ import annotations

import os
import time
from pathlib import Path


def main() -> None:
    data = Path(os.environ.get("DATA_DIR", "data"))
    log, seconds = data / "ticks.log", data / "tick-seconds"
    release = os.path.basename(os.getcwd())
    with open(log, "a") as out:
        out.write(f"start {time.time():.3f} {release} {os.getpid()}\n")
    time.sleep(float(seconds.read_text() if seconds.exists() else os.environ.get("TICK_SECONDS", "2")))
    with open(log, "a") as out:
        out.write(f"end {time.time():.3f} {release} {os.getpid()}\n")
    print(f"tick in {release}")


if __name__ == "__main__":
    main()
