"""The model this process serves, loaded once at start-up, or the reason it is not."""
from __future__ import annotations

import logging
import time

from flask import current_app

from app.embeddings import WordModel
from app.errors import ApiError
from app.model import ModelError, load

EXTENSION = "modelhost"


class ModelState:
    """Holds the loaded WordModel, or why there is none (shown by /readyz, 503 from the API)."""

    def __init__(self):
        self.model: WordModel | None = None
        self.reason = "the model has not been loaded yet"
        self.load_seconds: float | None = None

    def load(self, path) -> None:
        """Load and warm up the model; on failure keep the reason instead of raising."""
        if not path:
            self.reason = "no model configured: set FLASK_MODEL_PATH to a directory built by python -m app.model build"
            return
        started = time.perf_counter()
        try:
            model = WordModel(load(path))
        except ModelError as exc:
            self.reason = str(exc)
            return
        try:
            model.warm_up()
        except Exception as exc:  # a model that loads but cannot answer is not ready; say why
            logging.getLogger("app").exception("warm-up query failed on the model at %s", path)
            self.reason = f"the model at {path} loaded but its warm-up query failed: {exc!r}"
            return
        self.model = model
        self.reason = None
        self.load_seconds = time.perf_counter() - started


def state() -> ModelState:
    return current_app.extensions[EXTENSION]


def current_model() -> WordModel:
    """The loaded model, or a 503 ApiError saying why there is none."""
    model_state = state()
    if model_state.model is None:
        raise ApiError(503, "model_unavailable", f"the model is not loaded: {model_state.reason}")
    return model_state.model
