"""The HTML UI through Flask's test client: forms, validation messages, results, error pages."""
from __future__ import annotations

import re

import pytest


def text_of(response) -> str:
    return re.sub(r"\s+", " ", response.get_data(as_text=True))


def test_home_page_has_the_three_forms_and_works_without_javascript(client):
    page = text_of(client.get("/"))
    assert 'action="/similar" method="get"' in page
    assert 'action="/compare" method="post"' in page
    assert 'action="/cluster" method="post"' in page
    assert "<script" not in page


def test_similar_word_form_shows_results(client):
    page = text_of(client.get("/similar?word=fire"))
    assert "Words similar to “fire”" in page
    assert page.count("<tr><td>") == 10


@pytest.mark.parametrize("query, message", [
    ("word=", "Enter a word."),
    ("word=zzqqxx", "“zzqqxx” is not in the vocabulary of"),
])
def test_similar_word_form_explains_bad_input(client, query, message):
    response = client.get(f"/similar?{query}")
    assert response.status_code == 422
    page = text_of(response)
    assert message in page
    assert 'aria-invalid="true"' in page


def test_compare_form_shows_the_score(client):
    response = client.post("/compare", data={"a": "fire crews near Sydney", "b": "police in the city"})
    assert response.status_code == 200
    assert re.search(r'id="score" class="score">-?\d\.\d{3}<', text_of(response))


@pytest.mark.parametrize("form, message", [
    ({"a": "fire", "b": "police in the city"}, "Too short: enter at least 2 words."),
    ({"a": "zzqq xxqq", "b": "police in the city"}, "None of these words is in the vocabulary."),
])
def test_compare_form_explains_bad_input_and_keeps_what_was_typed(client, form, message):
    response = client.post("/compare", data=form)
    assert response.status_code == 422
    page = text_of(response)
    assert message in page
    assert "police in the city</textarea>" in page


def test_cluster_form_shows_the_cluster_and_nearest_documents(client):
    page = text_of(client.post("/cluster", data={"text": "Taliban fighters in Afghanistan"}))
    assert re.search(r"<h2>Cluster \d+</h2>", page)
    assert page.count("<li>") == 3


def test_cluster_form_rejects_a_too_short_text(client):
    response = client.post("/cluster", data={"text": "taliban"})
    assert response.status_code == 422
    assert "Too short" in text_of(response)


def test_user_input_is_escaped(client):
    page = text_of(client.get("/similar?word=<script>alert(1)</script>"))
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_unknown_page_is_an_html_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "404 Not Found" in text_of(response)


def test_docs_page_lists_every_operation(client):
    from app.openapi import spec

    page = text_of(client.get("/docs"))
    for path, methods in spec()["paths"].items():
        for method in methods:
            assert f"<code class=\"method\">{method.upper()}</code> <code>{path}</code>" in page


def test_pages_say_when_the_model_is_not_loaded(tmp_path):
    from app import create_app

    client = create_app({"ENVIRONMENT": "development", "MODEL_PATH": str(tmp_path)}).test_client()
    assert "The model is not loaded" in text_of(client.get("/"))
    assert client.get("/similar?word=fire").status_code == 503
