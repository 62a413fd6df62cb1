import sqlite3

from flask import Blueprint, jsonify, redirect, render_template_string, request, url_for

from .db import get_db, has_schema

bp = Blueprint("notes", __name__)

PAGE = """<!doctype html>
<html>
<head>
  <title>Notes</title>
  <link rel="stylesheet" href="{{ url_for('static', filename='style.css') }}">
</head>
<body>
  <h1>Notes</h1>
  <form method="post" action="{{ url_for('notes.add') }}">
    <input name="text" placeholder="Write a note" required>
    <button type="submit">Add</button>
  </form>
  <ul class="notes">
  {% for note in notes %}
    <li><span class="when">{{ note.created }}</span> {{ note.text }}</li>
  {% else %}
    <li class="empty">No notes yet.</li>
  {% endfor %}
  </ul>
</body>
</html>
"""


def all_notes():
    rows = get_db().execute("SELECT id, created, text FROM note ORDER BY id DESC").fetchall()
    return [dict(row) for row in rows]


def add_note(text):
    db = get_db()
    cur = db.execute("INSERT INTO note (text) VALUES (?)", (text,))
    db.commit()
    row = db.execute("SELECT id, created, text FROM note WHERE id = ?", (cur.lastrowid,)).fetchone()
    return dict(row)


@bp.get("/")
def index():
    return render_template_string(PAGE, notes=all_notes())


@bp.post("/")
def add():
    text = request.form.get("text", "").strip()
    if text:
        add_note(text)
    return redirect(url_for("notes.index"))


@bp.get("/api/notes")
def list_notes():
    return jsonify(all_notes())


@bp.post("/api/notes")
def create_note():
    data = request.get_json(silent=True) or {}
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        return jsonify(error="'text' is required"), 400
    return jsonify(add_note(text.strip())), 201


@bp.get("/healthz")
def healthz():
    try:
        ok = has_schema()
    except sqlite3.Error:
        ok = False
    if not ok:
        return jsonify(status="unavailable", reason="database not initialized"), 503
    return jsonify(status="ok")
