import json
import os
import re
import sqlite3

import numpy as np
from flask import Flask, g, jsonify, request

TOKEN = re.compile(r"[a-z']+")

PAGE = """<!doctype html>
<title>Lexicon</title>
<h1>Lexicon sentiment</h1>
<form id="f"><textarea name="text" rows="4" cols="50"></textarea><br>
<button>Score</button></form>
<pre id="out"></pre>
<script>
document.getElementById("f").onsubmit = async (e) => {
  e.preventDefault();
  const text = e.target.text.value;
  const r = await fetch("score", {method: "POST", headers: {"Content-Type": "application/json"},
                                  body: JSON.stringify({text})});
  document.getElementById("out").textContent = JSON.stringify(await r.json(), null, 2);
};
</script>
"""


class Lexicon:
    def __init__(self, folder):
        with open(os.path.join(folder, "weights.json")) as f:
            weights = json.load(f)
        self.index = {word: i for i, word in enumerate(weights)}
        self.weights = np.array(list(weights.values()), dtype=np.float64)
        self.bias = np.load(os.path.join(folder, "bias.npy"))

    def score(self, text):
        counts = np.zeros_like(self.weights)
        for token in TOKEN.findall(text.lower()):
            if token in self.index:
                counts[self.index[token]] += 1
        return float(np.tanh(counts @ self.weights + self.bias[0]))


def create_app():
    app = Flask(__name__)
    lexicon = Lexicon(os.path.join(app.root_path, "model"))

    data_dir = os.environ.get("DATA_DIR") or app.instance_path
    os.makedirs(data_dir, exist_ok=True)
    db_path = os.path.join(data_dir, "scores.sqlite")

    def get_db():
        if "db" not in g:
            g.db = sqlite3.connect(db_path)
        return g.db

    @app.teardown_appcontext
    def close_db(exc):
        db = g.pop("db", None)
        if db is not None:
            db.close()

    db = sqlite3.connect(db_path)
    with db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS score ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " text TEXT NOT NULL,"
            " score REAL NOT NULL,"
            " created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
    db.close()

    @app.get("/")
    def index():
        return PAGE

    @app.post("/score")
    def score():
        data = request.get_json(silent=True)
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str) or not text.strip():
            return jsonify(error="'text' is required"), 400
        value = lexicon.score(text)
        db = get_db()
        cur = db.execute("INSERT INTO score (text, score) VALUES (?, ?)", (text, value))
        db.commit()
        return jsonify(score=value, id=cur.lastrowid)

    @app.get("/scores")
    def scores():
        db = get_db()
        count = db.execute("SELECT COUNT(*) FROM score").fetchone()[0]
        rows = db.execute(
            "SELECT id, text, score, created FROM score ORDER BY id DESC LIMIT 10"
        ).fetchall()
        last = [dict(zip(("id", "text", "score", "created"), row)) for row in rows]
        return jsonify(count=count, last=last)

    return app
