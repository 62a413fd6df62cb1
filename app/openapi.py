"""The OpenAPI 3.1 document of the API, served at /api/v1/openapi.json and rendered at /docs.

Tests validate every response they get against this document, so it cannot drift from the code.
"""
from __future__ import annotations

from functools import lru_cache

from app.jobs import JOB_ID, MAX_OFFSET, RESULTS_PAGE, STATUSES
from app.validation import MAX_TEXTS, MAX_WORD_LENGTH, MAX_WORDS, NOT_BLANK, TOPN_DEFAULT, TOPN_MAX, TOPN_MIN

ERROR_TEXT = {
    400: "Malformed request: the body is not valid JSON, or the request itself is (its request line or a "
         "header; answered by the server in front of the app)",
    404: "A word is not in the vocabulary (`error.words` lists it), or a text has none (`error.oov`)",
    413: "The request body is over the configured limit",
    414: "The request line is over 8 KB (answered by nginx)",
    415: "Wrong content type",
    422: "Invalid input; the message says what is allowed and `error.field` names the input",
    429: "Too many requests, or requests in progress, from your address (answered by nginx); retry after "
         "`Retry-After` seconds",
    502: "The app is not running (answered by nginx, for a moment during a restart)",
    503: "The model is not loaded (`/readyz` says why), or the app is not available",
    504: "The app took longer than its timeout (answered by nginx)",
}
# What nginx (or gunicorn) in front of the app may answer for any operation under /api/, in the
# same JSON: a malformed or oversized request, a rate or connection limit, the app down or slow.
EDGE_ERRORS = (400, 413, 414, 429, 502, 503, 504)
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: dict, **extra) -> dict:
    return {"type": "array", "items": items, **extra}


def obj(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties}


# Words and texts hold at least one character that is not whitespace.
WORD = {"type": "string", "minLength": 1, "maxLength": MAX_WORD_LENGTH, "pattern": NOT_BLANK}
TEXT = {"type": "string", "minLength": 1, "pattern": NOT_BLANK}
TOPN = {"type": "integer", "minimum": TOPN_MIN, "maximum": TOPN_MAX, "default": TOPN_DEFAULT}
# In a JSON body, null means the default too.
TOPN_OR_NULL = {**TOPN, "type": ["integer", "null"]}
SCORE = {"type": "number", "description": "cosine similarity, -1..1"}
TIME = {"type": "string", "format": "date-time"}
TIME_OR_NULL = {**TIME, "type": ["string", "null"]}
JOB_ID_PATTERN = f"^{JOB_ID.pattern}$"

SCHEMAS = {
    "Error": obj(["error"], error={
        "type": "object", "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "examples": ["unknown_word", "invalid_input"]},
            "message": {"type": "string"},
            "field": {"type": "string", "description": "the input at fault"},
            "words": array({"type": "string"}, description="words not in the vocabulary"),
            "oov": array({"type": "string"}),
        },
    }),
    "WordScore": obj(["word", "score"], word={"type": "string"}, score=SCORE),
    "SimilarRequest": obj(
        ["positive"],
        positive=array(WORD, minItems=1, maxItems=MAX_WORDS, description="words to move towards"),
        negative={**array(WORD, maxItems=MAX_WORDS, description="words to move away from; null or absent: none"),
                  "type": ["array", "null"]},
        topn=TOPN_OR_NULL,
    ),
    "SimilarResult": obj(
        ["results", "oov"], results=array(ref("WordScore")),
        oov=array({"type": "string"}, description="input words not in the vocabulary (skipped)"),
    ),
    "SimilarityRequest": obj(["pairs"], pairs=array(array(WORD, minItems=2, maxItems=2),
                                                     minItems=1, maxItems=MAX_WORDS)),
    "SimilarityResult": obj(
        ["results", "oov"],
        results=array(obj(["a", "b", "score"], a={"type": "string"}, b={"type": "string"},
                          score={"type": ["number", "null"], "description": "null if a word is unknown"})),
        oov=array({"type": "string"}),
    ),
    "TextSimilarityRequest": obj(["a", "b"], a=TEXT, b=TEXT),
    "TextSimilarityResult": obj(
        ["score", "oov"], score=SCORE,
        oov=obj(["a", "b"], a=array({"type": "string"}), b=array({"type": "string"})),
    ),
    "AnalogyResult": obj(["results"], results=array(ref("WordScore"))),
    "ClusterRequest": obj(["text"], text={"oneOf": [TEXT, array(TEXT, minItems=1, maxItems=MAX_TEXTS)]}),
    "ClusterResult": obj(["results"], results=array(obj(
        ["cluster", "distance", "nearest", "oov"],
        cluster={"type": "integer", "minimum": 0},
        distance={"type": "number", "description": "cosine distance to the cluster's centroid"},
        nearest=array(obj(["id", "title", "snippet", "cluster", "score"],
                          id={"type": "integer"}, title={"type": "string"}, snippet={"type": "string"},
                          cluster={"type": "integer"}, score=SCORE)),
        oov=array({"type": "string"}),
    ))),
    "BatchLine": obj(
        ["line", "word"], line={"type": "integer", "minimum": 1, "description": "line number in the file"},
        word={"type": "string"}, results=array(ref("WordScore")),
        error=obj(["code", "message"], code={"type": "string"}, message={"type": "string"}),
    ),
    "BatchResult": obj(["results"], results=array(ref("BatchLine"))),
    "Job": obj(
        ["id", "status", "topn", "progress", "attempts", "max_attempts", "error", "created_at", "started_at",
         "finished_at"],
        id={"type": "string", "pattern": JOB_ID_PATTERN},
        status={"enum": list(STATUSES), "description": "queued, then running, then done or failed; a running job "
                                                       "whose worker stopped is queued again"},
        topn=TOPN,
        progress=obj(["done", "total"], done={"type": "integer", "minimum": 0, "description": "lines answered"},
                     total={"type": "integer", "minimum": 1, "description": "query lines in the file"}),
        attempts={"type": "integer", "minimum": 0, "description": "runs so far (an error, or a worker killed "
                                                                  "under the job, ends one)"},
        max_attempts={"type": "integer", "minimum": 1},
        error={"type": ["string", "null"], "description": "why the last attempt ended without finishing"},
        created_at=TIME, started_at=TIME_OR_NULL, finished_at=TIME_OR_NULL,
        results=array(ref("BatchLine"), description="when done: lines offset .. offset + limit - 1, as "
                                                      "/api/v1/batch answers them"),
        offset={"type": "integer", "minimum": 0}, limit={"type": "integer", "minimum": 1},
        next={"type": ["string", "null"], "description": "when done: the URL of the next page of results; "
                                                         "null on the last"},
    ),
    "ModelInfo": obj(
        ["name", "version", "sha256", "vocabulary_size", "dimensions", "clusters"],
        name={"type": "string"}, version={"type": "string"},
        sha256={"type": "string", "pattern": "^[0-9a-f]{64}$"},
        vocabulary_size={"type": "integer"}, dimensions={"type": "integer"},
        clusters={"type": "integer", "description": "number of k-means clusters"},
    ),
    "Live": obj(["status"], status={"const": "ok"}),
    "Ready": obj(["status"], status={"enum": ["ready", "not ready"]},
                 model=obj(["name", "version"], name={"type": "string"}, version={"type": "string"}),
                 reason={"type": "string"}),
}


def json_content(schema: dict, example=None) -> dict:
    content = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"application/json": content}


def operation(summary: str, result: str | None, errors: tuple[int, ...], *, description: str = "",
              parameters: list | None = None, body: dict | None = None, tag: str = "words",
              result_content: dict | None = None, error_text: dict | None = None,
              operation_id: str | None = None) -> dict:
    op = {"summary": summary, "tags": [tag], "responses": dict(result_content or {})}
    if operation_id:
        op["operationId"] = operation_id
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {"required": True, "content": body}
    if result:
        op["responses"]["200"] = {"description": "OK", "content": json_content(ref(result))}
    for status in sorted(set(errors + EDGE_ERRORS)):
        text = (error_text or {}).get(status, ERROR_TEXT[status])
        op["responses"][str(status)] = {"description": text, "content": json_content(ref("Error")),
                                        **({"headers": RETRY_AFTER} if status == 429 else {})}
    return op


def with_retry_after(status: int, op: dict) -> dict:
    """The operation, its `status` answer saying when to retry (the app's own, not only nginx's)."""
    op["responses"][str(status)]["headers"] = RETRY_AFTER
    return op


def nginx_page(description: str) -> dict:
    """An answer of nginx outside /api/: a short HTML page."""
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


# Outside /api/ nginx answers its own errors with an HTML page.
EDGE_PAGES = {"429": nginx_page("Too many requests in progress from your address"),
              "502": nginx_page("The app is not running"), "504": nginx_page("The app took too long")}


def query(name: str, schema: dict, description: str, required: bool = True, example=None) -> dict:
    param = {"name": name, "in": "query", "required": required, "schema": schema, "description": description}
    if example is not None:
        param["example"] = example
    return param


TOPN_PARAM = query("topn", TOPN, "how many results", required=False, example=5)
BATCH_UPLOAD = {"multipart/form-data": {
    "schema": obj(["file"], file={**TEXT, "description": "UTF-8 text, one query word per line: a file part, or a "
                                                         "plain field"},
                  topn=TOPN),
    "encoding": {"file": {"contentType": "text/plain"}}}}
JSON_ERRORS = (400, 413, 415, 422, 503)


@lru_cache(maxsize=1)
def spec() -> dict:
    paths = {
        "/api/v1/similar": {
            "get": operation(
                "Words most similar to a word", "SimilarResult", (404, 422, 503),
                parameters=[query("word", WORD, "the word (matched in lowercase)", example="fire"), TOPN_PARAM]),
            "post": operation(
                "Words most similar to a combination of words", "SimilarResult", (404,) + JSON_ERRORS,
                description="Nearest words to the sum of `positive` minus the sum of `negative`. Unknown "
                            "words are skipped and listed in `oov`; 404 if no positive word is known.",
                body=json_content(ref("SimilarRequest"), {"positive": ["fire", "crews"], "negative": ["cricket"], "topn": 5})),
        },
        "/api/v1/similarity": {
            "post": operation(
                "Cosine similarity of word pairs", "SimilarityResult", JSON_ERRORS,
                body=json_content(ref("SimilarityRequest"), {"pairs": [["fire", "blaze"], ["police", "officers"]]})),
        },
        "/api/v1/text-similarity": {
            "post": operation(
                "Cosine similarity of two texts' mean word vectors", "TextSimilarityResult", (404,) + JSON_ERRORS,
                description="404 if a text has no word in the vocabulary.",
                body=json_content(ref("TextSimilarityRequest"),
                                  {"a": "Bushfires burn near Sydney", "b": "Firefighters battle a blaze"})),
        },
        "/api/v1/analogy": {
            "get": operation(
                "a is to b as c is to ...", "AnalogyResult", (404, 422, 503),
                description="Words nearest to b - a + c.",
                parameters=[query("a", WORD, "", example="man"), query("b", WORD, "", example="king"),
                            query("c", WORD, "", example="woman"), TOPN_PARAM]),
        },
        "/api/v1/cluster": {
            "post": operation(
                "The k-means cluster of a text, and the nearest corpus documents", "ClusterResult",
                (404,) + JSON_ERRORS,
                description="`text` is one text or a list; `results` has one entry per text.",
                body=json_content(ref("ClusterRequest"), {"text": "The Taliban fought in Afghanistan"})),
        },
        "/api/v1/batch": {
            "post": operation(
                "Similar words for every line of an uploaded file", "BatchResult", (400, 413, 415, 422, 503),
                description="Multipart upload (`curl -F file=@queries.txt`), one query word per line; blank "
                            "lines are skipped. A line with an unknown word gets an `error` instead of `results`.",
                body=BATCH_UPLOAD),
        },
        "/api/v1/jobs": {
            "post": with_retry_after(503, operation(
                "Similar words for every line of a large file, as a job", None, (400, 413, 415, 422, 503),
                operation_id="submitJob", tag="jobs",
                description="The same upload as `/api/v1/batch`, with a larger line limit (`FLASK_JOBS_MAX_LINES`). "
                            "Answered at once with 202 and the job's URL in `Location`; a worker process answers "
                            "the lines. The job is stored on disk: it survives restarts, deploys and reboots.",
                body=BATCH_UPLOAD,
                error_text={503: "The model is not loaded, or the queue is full (`error.code` `queue_full`: "
                                 "retry after `Retry-After` seconds), or the app is not available"},
                result_content={"202": {
                    "description": "Queued",
                    "headers": {"Location": {"description": "the job's URL", "required": True,
                                             "schema": {"type": "string"}}},
                    "content": json_content(ref("Job")),
                    # The job's URL from the answer, for clients and for schemathesis's stateful tests.
                    "links": {"GetJob": {"operationId": "getJob", "parameters": {"job_id": "$response.body#/id"}}},
                }})),
        },
        "/api/v1/jobs/{job_id}": {
            "get": operation(
                "A job's status and progress, and its results once done", "Job", (404, 422, 503),
                operation_id="getJob", tag="jobs",
                description="`results` (once `status` is `done`) holds lines `offset` to `offset + limit - 1`; "
                            "`next` is the URL of the page after. Finished jobs are deleted after "
                            "`FLASK_JOBS_RETENTION_SECONDS` (7 days).",
                parameters=[
                    {"name": "job_id", "in": "path", "required": True, "description": "from the 202 answer",
                     "schema": {"type": "string", "pattern": JOB_ID_PATTERN}},
                    query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
                          "first line of the results to answer (0: the first)", required=False, example=0),
                    query("limit", {"type": "integer", "minimum": 1, "maximum": RESULTS_PAGE,
                                    "default": RESULTS_PAGE}, "most lines of results to answer", required=False,
                          example=100)],
                error_text={404: "No job has this id: it never existed, or it finished longer ago than the "
                                 "retention period and was deleted"}),
        },
        "/api/v1/model": {"get": operation("The model served", "ModelInfo", (503,))},
        "/api/v1/openapi.json": {"get": operation("This document", None, (), tag="meta", result_content={
            "200": {"description": "OpenAPI 3.1", "content": json_content({"type": "object"})}})},
        "/livez": {"get": {"summary": "The process answers", "tags": ["health"],
                           "responses": {"200": {"description": "alive", "content": json_content(ref("Live"))},
                                         **EDGE_PAGES}}},
        "/readyz": {"get": {
            "summary": "Ready to serve: model loaded and a warm-up query answered", "tags": ["health"],
            "responses": {"200": {"description": "ready", "content": json_content(ref("Ready"))},
                          "503": {"description": "not ready; `reason` says why", "content": json_content(ref("Ready"))},
                          **EDGE_PAGES},
        }},
        "/metrics": {"get": {"summary": "Prometheus metrics, summed over all workers", "tags": ["health"],
                             "responses": {"200": {"description": "Prometheus text format",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}},
                                           "403": nginx_page("Not from an address allowed to read metrics"),
                                           **EDGE_PAGES}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelhost word-embedding service",
            "version": "1.0.0",
            "description": "Similar words, similarity, analogies and clusters from a gensim word-embedding "
                           "model. Errors are JSON: `{\"error\": {\"code\": ..., \"message\": ...}}`.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
