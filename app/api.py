"""The JSON API, under /api/v1. Its contract is app/openapi.py; tests hold every answer to it."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request, url_for

from app import jobs
from app import validation as v
from app.batch import answer_line, read_upload
from app.embeddings import NoKnownWords, UnknownWords
from app.errors import ApiError, json_error
from app.openapi import spec
from app.state import current_model

bp = Blueprint("api", __name__, url_prefix="/api/v1")
QUEUE_FULL_RETRY_SECONDS = 30  # Retry-After of a 503 queue_full: a guess, long enough for some jobs to finish


@bp.errorhandler(UnknownWords)
def unknown_words(error: UnknownWords):
    return json_error(404, "unknown_word", str(error), words=error.words)


@bp.errorhandler(NoKnownWords)
def no_known_words(error: NoKnownWords):
    return json_error(404, "no_known_words", str(error), field=error.field, oov=error.oov)


@bp.get("/similar")
def similar_get():
    word = v.query_word("word")
    topn = v.topn_param(request.args.get("topn"))
    results, _ = current_model().similar([word], topn=topn)
    return jsonify({"results": results, "oov": []})


@bp.post("/similar")
def similar_post():
    body = v.json_body()
    positive = v.word_list(body, "positive", required=True)
    negative = v.word_list(body, "negative", required=False)
    topn = v.topn(body.get("topn"))
    results, oov = current_model().similar(positive, negative, topn)
    return jsonify({"results": results, "oov": oov})


@bp.post("/similarity")
def similarity():
    pairs = v.pairs(v.json_body())
    results, oov = current_model().similarity(pairs)
    return jsonify({"results": results, "oov": oov})


@bp.post("/text-similarity")
def text_similarity():
    body = v.json_body()
    a, b = v.text(body.get("a"), "a"), v.text(body.get("b"), "b")
    return jsonify(current_model().text_similarity(a, b))


@bp.get("/analogy")
def analogy():
    a, b, c = (v.query_word(name) for name in ("a", "b", "c"))
    topn = v.topn_param(request.args.get("topn"))
    return jsonify({"results": current_model().analogy(a, b, c, topn)})


@bp.post("/cluster")
def cluster():
    texts = v.texts(v.json_body())
    model = current_model()
    field = "text" if len(texts) == 1 else "text[{}]"
    return jsonify({"results": [model.cluster(t, field.format(i)) for i, t in enumerate(texts)]})


@bp.post("/batch")
def batch():
    """One query word per line of an uploaded text file; each line gets its results or its error."""
    queries, topn = read_upload(current_app.config["BATCH_MAX_LINES"])
    model = current_model()
    return jsonify({"results": [answer_line(model, number, word, topn) for number, word in queries]})


@bp.errorhandler(jobs.JobsUnavailable)
def jobs_unavailable(error: jobs.JobsUnavailable):
    current_app.logger.error("%s", error)
    return json_error(503, "jobs_unavailable", "the job store is not available; the server log says why")


@bp.post("/jobs")
def submit_job():
    """/batch's upload as a job for the worker process: 202 at once, its status at the Location."""
    config = current_app.config
    queries, topn = read_upload(config["JOBS_MAX_LINES"])
    current_model()  # no model here, none in the worker either: 503, as for every query
    try:
        job = jobs.store().submit(queries, topn, config["JOBS_MAX_ATTEMPTS"], config["JOBS_MAX_QUEUED"])
    except jobs.QueueFull as exc:
        raise ApiError(503, "queue_full", f"{exc}; try again later",
                       headers={"Retry-After": str(QUEUE_FULL_RETRY_SECONDS)}) from None
    return jsonify(job_document(job)), 202, {"Location": url_for("api.job", job_id=job.id)}


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    """A job's status and progress; once done, a page of its results (offset, limit)."""
    offset = v.count_param("offset", 0, jobs.MAX_OFFSET, 0)
    limit = v.count_param("limit", 1, jobs.RESULTS_PAGE, jobs.RESULTS_PAGE)
    found = jobs.store().get(job_id) if jobs.JOB_ID.fullmatch(job_id) else None
    if found is None:
        retention = current_app.config["JOBS_RETENTION_SECONDS"]
        raise ApiError(404, "job_not_found", f"no job has this id: it never existed, or it finished over "
                                             f"{retention} s ago and was deleted")
    return jsonify(job_document(found, offset, limit))


def job_document(job: jobs.Job, offset: int = 0, limit: int = jobs.RESULTS_PAGE) -> dict:
    document = {
        "id": job.id, "status": job.status, "topn": job.topn,
        "progress": {"done": job.done, "total": job.total},
        "attempts": job.attempts, "max_attempts": job.max_attempts, "error": job.error,
        "created_at": jobs.timestamp(job.created_at), "started_at": jobs.timestamp(job.started_at),
        "finished_at": jobs.timestamp(job.finished_at),
    }
    if job.status == "done":
        following = offset + limit
        document.update(
            results=jobs.store().results(job.id, offset, limit), offset=offset, limit=limit,
            next=url_for("api.job", job_id=job.id, offset=following, limit=limit) if following < job.total else None)
    return document


@bp.get("/model")
def model_info():
    return jsonify(current_model().info)


@bp.get("/openapi.json")
def openapi():
    return jsonify(spec())
