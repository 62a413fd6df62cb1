import json
import sqlite3

from flask import current_app, g

SCHEMA = """
CREATE TABLE IF NOT EXISTS texts (id INTEGER PRIMARY KEY, text TEXT NOT NULL, counts TEXT NOT NULL)
"""


def db():
    if "db" not in g:
        g.db = sqlite3.connect(current_app.config["DATABASE"])
        g.db.execute(SCHEMA)
    return g.db


def close(exc=None):
    connection = g.pop("db", None)
    if connection is not None:
        connection.close()


def init_app(app):
    app.teardown_appcontext(close)


def add(text, counts):
    with db() as connection:
        return connection.execute("INSERT INTO texts (text, counts) VALUES (?, ?)",
                                  (text, json.dumps(counts))).lastrowid


def totals():
    rows = db().execute("SELECT counts FROM texts").fetchall()
    words = {}
    for (counts,) in rows:
        for word, n in json.loads(counts).items():
            words[word] = words.get(word, 0) + n
    return len(rows), words
