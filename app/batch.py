"""Batch scoring: the query words of an uploaded file, and each line's answer.

POST /api/v1/batch answers a small file at once; a job (app/jobs.py) answers a large one in the
worker process (app/worker.py), chunk by chunk. Both read the upload and answer a line here, so a
job's results have exactly the shape of /batch's.
"""
from __future__ import annotations

from flask import request

from app import validation as v
from app.embeddings import UnknownWords, WordModel
from app.errors import ApiError


def read_upload(limit: int) -> tuple[list[tuple[int, str]], int]:
    """The request's query lines as (line number, word), and its topn; ApiErrors that say what is wrong."""
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       "upload the file as multipart/form-data, e.g. curl -F file=@queries.txt")
    # A file part (curl -F file=@queries.txt), or the same text as a plain field (-F file=...).
    upload = request.files.get("file")
    if upload is None and "file" not in request.form:
        raise v.invalid("file", "a file field is required, e.g. curl -F file=@queries.txt")
    topn = v.topn_param(request.form.get("topn"))
    try:
        lines = (upload.read().decode("utf-8") if upload else request.form["file"]).splitlines()
    except UnicodeDecodeError:
        raise v.invalid("file", "must be UTF-8 text, one word per line") from None
    queries = [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]
    if not queries:
        raise v.invalid("file", "has no query words: put one word per line")
    if len(queries) > limit:
        raise v.invalid("file", f"may hold at most {limit} query lines, got {len(queries)}")
    return queries, topn


def answer_line(model: WordModel, number: int, word: str, topn: int) -> dict:
    """One line's entry: its similar words, or the error that line alone gets."""
    entry = {"line": number, "word": word}
    try:
        entry["results"], _ = model.similar([v.word(word, f"line {number}")], topn=topn)
    except ApiError as exc:
        entry["error"] = {"code": exc.code, "message": exc.message}
    except UnknownWords as exc:
        entry["error"] = {"code": "unknown_word", "message": str(exc)}
    return entry
