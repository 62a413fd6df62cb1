"""Settings of the app: defaults, FLASK_-prefixed environment variables, production checks."""
from __future__ import annotations

import logging
import logging.handlers
import sys

DEFAULTS = {
    # "production" (the default) or "development". Production refuses to start without a
    # secret key and never runs in debug mode.
    "ENVIRONMENT": "production",
    "SECRET_KEY": None,
    "MODEL_PATH": None,  # directory built by `python -m app.model build`
    "MAX_CONTENT_LENGTH": 1024 * 1024,  # request body limit in bytes (uploads included); 413 above it
    "BATCH_MAX_LINES": 1000,  # query lines accepted by POST /api/v1/batch
    "LOG_FILE": None,  # None: log to stderr
    "LOG_LEVEL": "INFO",
    "LOG_MAX_BYTES": 10 * 1024 * 1024,  # with LOG_FILE: rotate at this size ...
    "LOG_BACKUP_COUNT": 3,  # ... and keep this many old files
    "PROXY_HOPS": 1,  # proxies in front of the app whose X-Forwarded-* headers are trusted (nginx)
    # The job queue (app/jobs.py; its jobs run in python -m app.worker). None: jobs.sqlite3 in
    # $DATA_DIR when DATA_DIR is set (a deploy sets it: kept across releases), else in the
    # Flask instance folder.
    "JOBS_DB": None,
    "JOBS_MAX_LINES": 100_000,  # query lines accepted by POST /api/v1/jobs (the body is still <= MAX_CONTENT_LENGTH)
    "JOBS_MAX_QUEUED": 100,  # jobs queued or running at once; above it POST /api/v1/jobs answers 503 queue_full
    "JOBS_MAX_ATTEMPTS": 3,  # runs of a job before it fails: each error, and each worker killed under it, is one
    "JOBS_RETENTION_SECONDS": 7 * 24 * 3600,  # a finished job and its results are deleted this long after
    "JOBS_LEASE_SECONDS": 30,  # a worker's hold on its job, renewed at every checkpoint (about 1 s apart)
    "JOBS_POLL_SECONDS": 1.0,  # how often an idle worker looks for a queued job
}

POSITIVE_INTS = ("MAX_CONTENT_LENGTH", "BATCH_MAX_LINES", "LOG_MAX_BYTES", "JOBS_MAX_LINES", "JOBS_MAX_QUEUED",
                 "JOBS_MAX_ATTEMPTS", "JOBS_RETENTION_SECONDS", "JOBS_LEASE_SECONDS")
NON_NEGATIVE_INTS = ("LOG_BACKUP_COUNT", "PROXY_HOPS")
ENVIRONMENTS = ("production", "development")
MIN_LEASE_SECONDS = 5


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the FLASK_ variable and the fix."""


def check(config) -> None:
    """Fail on bad settings before the app serves anything."""
    for key in POSITIVE_INTS + NON_NEGATIVE_INTS:
        value = config[key]
        low = 1 if key in POSITIVE_INTS else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"FLASK_{key}={value!r}: must be a whole number >= {low}")
    poll = config["JOBS_POLL_SECONDS"]
    if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not 0 < poll <= 60:
        raise ConfigError(f"FLASK_JOBS_POLL_SECONDS={poll!r}: must be a number of seconds above 0, at most 60")
    database = config["JOBS_DB"]
    if database is not None and (not isinstance(database, str) or not database.startswith("/")):
        raise ConfigError(f"FLASK_JOBS_DB={database!r}: must be an absolute path (a relative one would be inside "
                          "the release, which the next deploy replaces), or unset for $DATA_DIR/jobs.sqlite3")
    if config["JOBS_LEASE_SECONDS"] < MIN_LEASE_SECONDS:
        raise ConfigError(f"FLASK_JOBS_LEASE_SECONDS={config['JOBS_LEASE_SECONDS']!r}: must be at least "
                          f"{MIN_LEASE_SECONDS}; a worker renews its lease after every chunk of about a second, "
                          "and a shorter lease could pass a busy worker's job to another")
    if config["ENVIRONMENT"] not in ENVIRONMENTS:
        raise ConfigError(f"FLASK_ENVIRONMENT={config['ENVIRONMENT']!r}: must be one of {', '.join(ENVIRONMENTS)}")
    if logging.getLevelName(str(config["LOG_LEVEL"]).upper()) not in range(0, 100):
        raise ConfigError(f"FLASK_LOG_LEVEL={config['LOG_LEVEL']!r}: must be DEBUG, INFO, WARNING or ERROR")
    if config["ENVIRONMENT"] == "production":
        if not config["SECRET_KEY"]:
            raise ConfigError("FLASK_SECRET_KEY is not set; production needs one. Generate it with: "
                              "python3 -c 'import secrets; print(secrets.token_hex(32))'")
        if config["DEBUG"]:
            raise ConfigError("FLASK_DEBUG is on in production; the Werkzeug debugger runs arbitrary code "
                              "for anyone who can reach it. Unset FLASK_DEBUG (or set FLASK_ENVIRONMENT=development)")


def configure_logging(app) -> None:
    """Log to stderr, or to a size-capped rotating file when LOG_FILE is set."""
    if app.config["LOG_FILE"]:
        # Each worker process rotates on its own; with several workers prefer stderr, captured
        # by supervisor or journald, which cap their files themselves.
        handler = logging.handlers.RotatingFileHandler(
            app.config["LOG_FILE"], maxBytes=app.config["LOG_MAX_BYTES"],
            backupCount=app.config["LOG_BACKUP_COUNT"], encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    app.logger.handlers[:] = [handler]
    app.logger.setLevel(str(app.config["LOG_LEVEL"]).upper())
    app.logger.propagate = False
