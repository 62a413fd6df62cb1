"""Prometheus metrics, correct across gunicorn workers.

Each worker is its own process with its own counters. When PROMETHEUS_MULTIPROC_DIR is set
(the gunicorn config, gunicorn/gunicorn.conf.py.j2, sets it before the app is imported), prometheus_client keeps every process's
values in files there and /metrics adds them up; without it (one process), the default registry.
"""
from __future__ import annotations

import os
import time

from flask import Blueprint, Response, current_app, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily

from app import jobs

bp = Blueprint("metrics", __name__)

REQUESTS = Counter("modelhost_http_requests_total", "HTTP requests answered",
                   ["method", "endpoint", "status"])
LATENCY = Histogram("modelhost_http_request_duration_seconds", "Time to answer a request",
                    ["endpoint"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
MODEL_INFO = Gauge("modelhost_model_info", "The model served (value 1)", ["name", "version", "sha256"],
                   multiprocess_mode="max")
MODEL_WORDS = Gauge("modelhost_model_vocabulary_size", "Words in the model's vocabulary", multiprocess_mode="max")
MODEL_DIMENSIONS = Gauge("modelhost_model_dimensions", "Dimensions of the model's vectors", multiprocess_mode="max")
MODEL_LOAD_SECONDS = Gauge("modelhost_model_load_seconds", "Time to load and warm up the model",
                           multiprocess_mode="max")


def record_model(model_state) -> None:
    # multiprocess_mode="max": the same in every process, so the master's (preload) value serves
    # for all workers; a per-process "ready" gauge would count the master as a worker.
    model = model_state.model
    if model:
        MODEL_INFO.labels(model.info["name"], model.info["version"], model.info["sha256"]).set(1)
        MODEL_WORDS.set(model.info["vocabulary_size"])
        MODEL_DIMENSIONS.set(model.info["dimensions"])
        MODEL_LOAD_SECONDS.set(model_state.load_seconds)


def start_timer() -> None:
    g.metrics_started = time.perf_counter()


def record_request(response):
    started = g.pop("metrics_started", None)
    # The route pattern, not the path: unknown paths must not create new label values.
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
    if started is not None:
        LATENCY.labels(endpoint).observe(time.perf_counter() - started)
    return response


class JobCounts:
    """Jobs by status, read from the job store at scrape time (one indexed query): the same for
    every worker, so not a per-process value in PROMETHEUS_MULTIPROC_DIR."""

    def collect(self):
        try:
            counts = jobs.store().counts()
        except jobs.JobsUnavailable as exc:
            current_app.logger.warning("/metrics: no job counts: %s", exc)
            return
        family = GaugeMetricFamily("modelhost_jobs", "Jobs in the job store by status", labels=["status"])
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family


@bp.get("/metrics")
def metrics():
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(JobCounts())
    # content_type, not mimetype: CONTENT_TYPE_LATEST has its charset already, and Flask would add a
    # second one, which Prometheus 3 refuses.
    return Response(generate_latest(registry) + generate_latest(scraped), content_type=CONTENT_TYPE_LATEST)


def init_app(app, model_state) -> None:
    record_model(model_state)
    app.before_request(start_timer)
    app.after_request(record_request)
    app.register_blueprint(bp)
