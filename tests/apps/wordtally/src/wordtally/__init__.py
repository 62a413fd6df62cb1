import os
import re
from collections import Counter
from importlib.resources import files

from flask import Flask, jsonify, request

from . import store

WORD = re.compile(r"[a-z][a-z'-]*")


# The project's top directory: src/wordtally/__init__.py is two levels down.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def create_app(test_config=None):
    app = Flask(__name__)
    app.config.from_mapping(DATABASE=os.environ.get("WORDTALLY_DB") or os.path.join(ROOT, "wordtally.db"))
    if test_config:
        app.config.update(test_config)
    stop = set(files(__package__).joinpath("stopwords.txt").read_text().split())
    store.init_app(app)

    @app.get("/")
    def index():
        return "<!doctype html><title>wordtally</title><h1>wordtally</h1><p>POST /api/texts</p>"

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.post("/api/texts")
    def add_text():
        text = (request.get_json(silent=True) or {}).get("text")
        if not isinstance(text, str) or not text.strip():
            return jsonify(error="send {\"text\": \"...\"}"), 400
        counts = Counter(w for w in WORD.findall(text.lower()) if w not in stop)
        text_id = store.add(text, counts)
        return jsonify(id=text_id, top=counts.most_common(5)), 201

    @app.get("/api/texts")
    def totals():
        count, words = store.totals()
        return jsonify(count=count, words=words)

    return app
