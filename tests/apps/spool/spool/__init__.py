"""A spool of jobs in DATA_DIR: the web app queues them, the worker does them."""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from flask import Flask, abort, jsonify, request


def spool() -> Path:
    root = Path(os.environ.get("DATA_DIR", "data")) / "spool"
    for part in ("queue", "work", "done"):
        (root / part).mkdir(parents=True, exist_ok=True)
    return root


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/healthz")
    def health():
        return {"ok": True}

    @app.post("/jobs")
    def submit():
        steps = int((request.get_json(silent=True) or {}).get("steps", 1))
        job = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        root = spool()
        partial = root / f".{job}.partial"
        partial.write_text(json.dumps({"id": job, "steps": steps}))
        partial.rename(root / "queue" / f"{job}.json")  # whole, or not there
        return jsonify({"id": job}), 202

    @app.get("/jobs/<job>")
    def job_state(job: str):
        root = spool()
        for state in ("done", "work", "queue"):
            path = root / state / f"{job}.json"
            if path.exists():
                return {"state": state, **json.loads(path.read_text())}
        abort(404)

    @app.get("/jobs")
    def counts():
        root = spool()
        return {state: len(list((root / state).glob("*.json"))) for state in ("queue", "work", "done")}

    return app
