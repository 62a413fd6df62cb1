"""The JSON API, under /api/v1. Its contract is app/openapi.py; tests hold every answer to it."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from app import validation as v
from app.batch import answer_line, read_upload
from app.embeddings import NoKnownWords, UnknownWords
from app.errors import json_error
from app.openapi import spec
from app.state import current_model

bp = Blueprint("api", __name__, url_prefix="/api/v1")


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


@bp.get("/model")
def model_info():
    return jsonify(current_model().info)


@bp.get("/openapi.json")
def openapi():
    return jsonify(spec())
