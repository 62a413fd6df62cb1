"""Liveness and readiness for supervisors, load balancers and the deploy's cutover gate."""
from flask import Blueprint, jsonify

from app.state import state

bp = Blueprint("health", __name__)


@bp.get("/livez")
def livez():
    """The process answers; says nothing about the model."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """200 once the model is loaded and a warm-up query answered; 503 with the reason otherwise."""
    model_state = state()
    if model_state.model is None:
        return jsonify({"status": "not ready", "reason": model_state.reason}), 503
    info = model_state.model.info
    return jsonify({"status": "ready", "model": {"name": info["name"], "version": info["version"]}})
