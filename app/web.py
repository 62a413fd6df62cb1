"""The HTML UI: find similar words, compare two texts, cluster a text, answer a file as a job.
Plain forms, no JavaScript."""
from __future__ import annotations

import re

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from markupsafe import Markup, escape

from app import jobs
from app.batch import read_upload
from app.embeddings import NoKnownWords, UnknownWords
from app.errors import ApiError
from app.openapi import spec
from app.state import state

bp = Blueprint("web", __name__)

MIN_TEXT_WORDS = 2
# Words the demo corpus (Australian news, 2001) knows well; other models show their first words.
EXAMPLE_WORDS = ("fire", "police", "afghanistan", "cricket", "government", "troops", "sydney", "minister")
JOB_PAGE_LINES = 200  # results per page of a job's page
JOB_REFRESH_SECONDS = 2


def page(errors: dict | None = None, status: int = 200):
    """The home page with its three forms, the user's input kept, and any validation messages."""
    model = state().model
    examples = ([w for w in EXAMPLE_WORDS if w in model] or model.kv.index_to_key[:len(EXAMPLE_WORDS)]) if model else []
    return render_template("index.html", model=model, reason=state().reason, errors=errors or {},
                           form=request.values, examples=examples,
                           max_lines=current_app.config["JOBS_MAX_LINES"]), status


def too_short(text: str) -> str | None:
    if len(text.split()) < MIN_TEXT_WORDS:
        return f"Too short: enter at least {MIN_TEXT_WORDS} words."
    return None


@bp.get("/")
def index():
    return page()


@bp.get("/similar")
def similar():
    model = state().model
    word = request.args.get("word", "").strip()
    if model is None:
        return page(status=503)
    if not word:
        return page({"word": "Enter a word."}, 422)
    try:
        results, _ = model.similar([word], topn=10)
    except UnknownWords:
        return page({"word": f"“{word}” is not in the vocabulary of {model.info['vocabulary_size']:,} words."}, 422)
    return render_template("result.html", kind="similar", word=word, results=results, model=model)


@bp.post("/compare")
def compare():
    model = state().model
    a, b = request.form.get("a", "").strip(), request.form.get("b", "").strip()
    if model is None:
        return page(status=503)
    errors = {k: msg for k, msg in (("a", too_short(a)), ("b", too_short(b))) if msg}
    if not errors:
        try:
            result = model.text_similarity(a, b)
        except NoKnownWords as exc:
            errors[exc.field] = "None of these words is in the vocabulary."
    if errors:
        return page(errors, 422)
    return render_template("result.html", kind="compare", a=a, b=b, result=result, model=model)


@bp.post("/cluster")
def cluster():
    model = state().model
    text = request.form.get("text", "").strip()
    if model is None:
        return page(status=503)
    error = too_short(text)
    if not error:
        try:
            result = model.cluster(text)
        except NoKnownWords:
            error = "None of these words is in the vocabulary."
    if error:
        return page({"text": error}, 422)
    return render_template("result.html", kind="cluster", text=text, result=result, model=model)


@bp.post("/jobs")
def submit_job():
    """The file as a job; on to its page (303), which shows its progress."""
    if state().model is None:
        return page(status=503)
    config = current_app.config
    try:
        queries, topn = read_upload(config["JOBS_MAX_LINES"])
        job = jobs.store().submit(queries, topn, config["JOBS_MAX_ATTEMPTS"], config["JOBS_MAX_QUEUED"])
    except ApiError as exc:  # the API's message without its field name: "file: has no ..." -> "Has no ..."
        field = exc.details.get("field", "file")
        message = exc.message.removeprefix(f"{field}: ")
        message = "Choose a file" if "curl" in message else message[:1].upper() + message[1:]
        return page({field: message + "."}, exc.status)
    except jobs.QueueFull:
        return page({"file": "Too many jobs are waiting: try again in a minute."}, 503)
    return redirect(url_for("web.job", job_id=job.id), 303)


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    found = jobs.store().get(job_id) if jobs.JOB_ID.fullmatch(job_id) else None
    if found is None:
        abort(404, description="There is no job with this address: it never existed, or it finished long ago "
                               "and was deleted.")
    offset = request.args.get("offset", 0, type=int)
    offset = min(max(offset, 0), jobs.MAX_OFFSET)
    results = jobs.store().results(found.id, offset, JOB_PAGE_LINES) if found.status == "done" else []
    return render_template("job.html", job=found, results=results, offset=offset, page=JOB_PAGE_LINES,
                           refresh_seconds=JOB_REFRESH_SECONDS, model=state().model,
                           created=readable_time(found.created_at), finished=readable_time(found.finished_at))


def readable_time(seconds: float | None) -> str | None:
    return jobs.timestamp(seconds).replace("T", " ").replace("Z", " UTC") if seconds else None


@bp.errorhandler(jobs.JobsUnavailable)
def jobs_unavailable(error: jobs.JobsUnavailable):
    current_app.logger.error("%s", error)
    return render_template("error.html", status=503, title="Service Unavailable",
                           message="Jobs cannot be taken or shown right now; the server log says why."), 503


@bp.app_template_filter("code_spans")
def code_spans(text: str) -> Markup:
    """The spec's descriptions mark code with `backticks` (as in Markdown): render those as <code>."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


@bp.get("/docs")
def docs():
    return render_template("docs.html", spec=spec())
