"""HTTP checks run on the target itself (deploy/probe.py's source, given to the target's python3)."""
from __future__ import annotations

import json
from pathlib import Path

PROBE_SOURCE = (Path(__file__).resolve().parent.parent / "probe.py").read_text(encoding="utf-8")


def probe(python: str, *, paths: list[str], socket: Path | None = None, address: str = "127.0.0.1", port: int = 0,
          tls: bool = False, host: str = "localhost", wait: float = 0, ready: str = "ok") -> list[str]:
    """Asks paths[0] until it is ready (up to wait seconds), then the rest once; see deploy/probe.py."""
    spec = {"socket": str(socket or ""), "address": address, "port": port, "tls": tls, "host": host,
            "paths": paths, "wait": wait, "ready": ready}
    return [python, "-c", PROBE_SOURCE, json.dumps(spec)]


def parse_probe(output: str) -> list[dict]:
    """One answer per path asked: {"path", "status" (0: no answer), "body" or "error"}."""
    return [json.loads(line) for line in output.splitlines()]
