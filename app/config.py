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
}

POSITIVE_INTS = ("MAX_CONTENT_LENGTH", "BATCH_MAX_LINES", "LOG_MAX_BYTES")
NON_NEGATIVE_INTS = ("LOG_BACKUP_COUNT", "PROXY_HOPS")
ENVIRONMENTS = ("production", "development")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the FLASK_ variable and the fix."""


def check(config) -> None:
    """Fail on bad settings before the app serves anything."""
    for key in POSITIVE_INTS + NON_NEGATIVE_INTS:
        value = config[key]
        low = 1 if key in POSITIVE_INTS else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"FLASK_{key}={value!r}: must be a whole number >= {low}")
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
