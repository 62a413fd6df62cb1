"""The application factory: settings, logging, proxy headers, the model, blueprints."""
from __future__ import annotations

from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app import api, errors, health, jobs, metrics, web
from app.config import DEFAULTS, check, configure_logging
from app.state import EXTENSION, ModelState

ROOT = Path(__file__).resolve().parent.parent
# The HTML templates: at the top of a checkout; in an installed wheel, packaged as app/templates/.
TEMPLATES = ROOT / "templates" if (ROOT / "templates" / "base.html").is_file() else Path(__file__).parent / "templates"


def create_app(config: dict | None = None) -> Flask:
    """Build the app: defaults, then FLASK_* environment variables, then `config` (for tests)."""
    app = Flask("app", template_folder=str(TEMPLATES))
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env()
    if config:
        app.config.from_mapping(config)
    check(app.config)
    configure_logging(app)
    # nginx is one proxy hop: trust its X-Forwarded-For/-Proto/-Host/-Prefix, nothing further out.
    hops = app.config["PROXY_HOPS"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops)

    model_state = ModelState()
    model_state.load(app.config["MODEL_PATH"])
    if model_state.model:
        app.logger.info("model %s %s loaded in %.2fs from %s", model_state.model.info["name"],
                        model_state.model.info["version"], model_state.load_seconds, app.config["MODEL_PATH"])
    else:
        app.logger.error("not ready: %s", model_state.reason)
    app.extensions[EXTENSION] = model_state

    jobs.init_app(app)
    errors.init_app(app)
    metrics.init_app(app, model_state)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(web.bp)
    return app
