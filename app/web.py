"""The HTML UI: find similar words, compare two texts, cluster a text. Plain forms, no JavaScript."""
from __future__ import annotations

import re

from flask import Blueprint, render_template, request
from markupsafe import Markup, escape

from app.embeddings import NoKnownWords, UnknownWords
from app.openapi import spec
from app.state import state

bp = Blueprint("web", __name__)

MIN_TEXT_WORDS = 2
# Words the demo corpus (Australian news, 2001) knows well; other models show their first words.
EXAMPLE_WORDS = ("fire", "police", "afghanistan", "cricket", "government", "troops", "sydney", "minister")


def page(errors: dict | None = None, status: int = 200):
    """The home page with its three forms, the user's input kept, and any validation messages."""
    model = state().model
    examples = ([w for w in EXAMPLE_WORDS if w in model] or model.kv.index_to_key[:len(EXAMPLE_WORDS)]) if model else []
    return render_template("index.html", model=model, reason=state().reason, errors=errors or {},
                           form=request.values, examples=examples), status


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


@bp.app_template_filter("code_spans")
def code_spans(text: str) -> Markup:
    """The spec's descriptions mark code with `backticks` (as in Markdown): render those as <code>."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


@bp.get("/docs")
def docs():
    return render_template("docs.html", spec=spec())
