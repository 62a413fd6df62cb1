"""Every endpoint and every error case of the JSON API; responses checked against the spec."""
from __future__ import annotations

import io
import json

import pytest

from app import create_app


def error_of(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


# --- /similar --------------------------------------------------------------------------------

def test_similar_get_returns_topn_neighbours_sorted_by_score(api):
    body = api.get("/api/v1/similar?word=fire&topn=5").get_json()
    assert len(body["results"]) == 5
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert "fire" not in [r["word"] for r in body["results"]]
    assert body["oov"] == []


def test_similar_get_matches_words_case_insensitively(api):
    upper = api.get("/api/v1/similar?word=FIRE&topn=3").get_json()
    lower = api.get("/api/v1/similar?word=fire&topn=3").get_json()
    assert upper == lower


def test_similar_get_defaults_to_ten_results(api):
    assert len(api.get("/api/v1/similar?word=police").get_json()["results"]) == 10


def test_similar_get_unknown_word_is_404_naming_the_word(api):
    error = error_of(api.get("/api/v1/similar?word=qwertyuiop"), 404, "unknown_word")
    assert error["words"] == ["qwertyuiop"]
    assert "qwertyuiop" in error["message"]


@pytest.mark.parametrize("query, field", [
    ("", "word"),
    ("word=", "word"),
    ("word=%20%20", "word"),
    ("word=" + "a" * 101, "word"),
    ("word=fire&topn=0", "topn"),
    ("word=fire&topn=101", "topn"),
    ("word=fire&topn=-3", "topn"),
    ("word=fire&topn=ten", "topn"),
    ("word=fire&topn=2.5", "topn"),
])
def test_similar_get_rejects_bad_parameters_with_422_naming_the_field(api, query, field):
    error = error_of(api.get(f"/api/v1/similar?{query}"), 422, "invalid_input")
    assert error["field"] == field


def test_topn_message_says_what_is_allowed(api):
    error = error_of(api.get("/api/v1/similar?word=fire&topn=500"), 422, "invalid_input")
    assert "1 to 100" in error["message"] and "500" in error["message"]


def test_similar_post_combines_positive_and_negative(api):
    response = api.post("/api/v1/similar", json={"positive": ["fire", "police"], "negative": ["cricket"], "topn": 4})
    body = response.get_json()
    assert len(body["results"]) == 4
    assert not {"fire", "police", "cricket"} & {r["word"] for r in body["results"]}


def test_similar_post_skips_and_lists_unknown_words(api):
    body = api.post("/api/v1/similar", json={"positive": ["fire", "zzzzq"], "negative": ["xxyyzz"]}).get_json()
    assert body["oov"] == ["zzzzq", "xxyyzz"]
    assert len(body["results"]) == 10


def test_similar_post_with_no_known_positive_word_is_404(api):
    error = error_of(api.post("/api/v1/similar", json={"positive": ["zzzzq", "qqqzz"]}), 404, "unknown_word")
    assert error["words"] == ["zzzzq", "qqqzz"]


@pytest.mark.parametrize("body, field", [
    ({}, "positive"),
    ({"positive": []}, "positive"),
    ({"positive": "fire"}, "positive"),
    ({"positive": [1, 2]}, "positive[0]"),
    ({"positive": ["fire", None]}, "positive[1]"),
    ({"positive": [""]}, "positive[0]"),
    ({"positive": ["fire"] * 101}, "positive"),
    ({"positive": ["fire"], "negative": "police"}, "negative"),
    ({"positive": ["fire"], "topn": "5"}, "topn"),
    ({"positive": ["fire"], "topn": True}, "topn"),
    ({"positive": ["fire"], "topn": 1000}, "topn"),
    ({"positive": ["fire"], "topn": 2.5}, "topn"),
    ([], "body"),
    ("fire", "body"),
])
def test_similar_post_rejects_bad_bodies_with_422(api, body, field):
    error = error_of(api.post("/api/v1/similar", json=body), 422, "invalid_input")
    assert error["field"] == field


# --- JSON handling common to every POST endpoint ----------------------------------------------

JSON_ENDPOINTS = ["/api/v1/similar", "/api/v1/similarity", "/api/v1/text-similarity", "/api/v1/cluster"]


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("data", ['{"positive": ["fire"', b"\xff\xfe{}", "[" * 100_000])
def test_malformed_json_is_400(api, path, data):
    response = api.post(path, data=data, content_type="application/json")
    error_of(response, 400, "malformed_json")


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_non_json_content_type_is_415(api, path, content_type):
    response = api.post(path, data='{"positive": ["fire"]}', content_type=content_type)
    error = error_of(response, 415, "unsupported_media_type")
    assert "application/json" in error["message"]


@pytest.mark.parametrize("path, content_type", [(path, "application/json") for path in JSON_ENDPOINTS]
                         + [("/api/v1/batch", "multipart/form-data; boundary=x")])
def test_body_over_the_limit_is_413(api, path, content_type):
    big = "x" * (1024 * 1024 + 1)
    response = api.post(path, data=big, content_type=content_type)
    error = error_of(response, 413, "payload_too_large")
    assert "1048576" in error["message"]


def test_wrong_method_is_405_as_json(client):
    response = client.delete("/api/v1/similar")
    error_of(response, 405, "method_not_allowed")
    assert "GET" in response.get_json()["error"]["message"]


def test_unknown_api_path_is_404_as_json(client):
    error_of(client.get("/api/v1/nothing-here"), 404, "not_found")


# --- /similarity --------------------------------------------------------------------------------

def test_similarity_scores_each_pair_and_nulls_unknown_words(api):
    body = api.post("/api/v1/similarity", json={"pairs": [["fire", "blaze"], ["fire", "fire"], ["fire", "zzqq"]]}).get_json()
    scores = [r["score"] for r in body["results"]]
    assert -1 <= scores[0] <= 1
    assert scores[1] == pytest.approx(1.0, abs=1e-5)
    assert scores[2] is None
    assert body["oov"] == ["zzqq"]


@pytest.mark.parametrize("body, field", [
    ({}, "pairs"),
    ({"pairs": []}, "pairs"),
    ({"pairs": [["fire"]]}, "pairs[0]"),
    ({"pairs": [["fire", "blaze", "smoke"]]}, "pairs[0]"),
    ({"pairs": ["fire"]}, "pairs[0]"),
    ({"pairs": [["fire", 3]]}, "pairs[0][1]"),
    ({"pairs": [["fire", "blaze"]] * 101}, "pairs"),
])
def test_similarity_rejects_bad_pairs_with_422(api, body, field):
    assert error_of(api.post("/api/v1/similarity", json=body), 422, "invalid_input")["field"] == field


# --- /text-similarity ---------------------------------------------------------------------------

def test_text_similarity_is_higher_for_related_texts(api):
    related = api.post("/api/v1/text-similarity", json={
        "a": "Firefighters fought the fire near Sydney", "b": "Fire crews battled the blaze"}).get_json()
    unrelated = api.post("/api/v1/text-similarity", json={
        "a": "Firefighters fought the fire near Sydney", "b": "The batsman scored a century in the test match"}).get_json()
    assert related["score"] > unrelated["score"]


def test_text_similarity_lists_unknown_words_per_text(api):
    body = api.post("/api/v1/text-similarity", json={"a": "fire zzqqxx", "b": "police"}).get_json()
    assert body["oov"] == {"a": ["zzqqxx"], "b": []}


def test_text_with_no_known_word_is_404_naming_the_text(api):
    error = error_of(api.post("/api/v1/text-similarity", json={"a": "fire", "b": "zzqqxx qqxxzz"}),
                     404, "no_known_words")
    assert error["field"] == "b"
    assert error["oov"] == ["zzqqxx", "qqxxzz"]


@pytest.mark.parametrize("body, field", [
    ({"b": "fire"}, "a"), ({"a": "fire"}, "b"), ({"a": "", "b": "fire"}, "a"), ({"a": "fire", "b": ["x"]}, "b"),
])
def test_text_similarity_rejects_missing_or_wrong_texts(api, body, field):
    assert error_of(api.post("/api/v1/text-similarity", json=body), 422, "invalid_input")["field"] == field


# --- /analogy -----------------------------------------------------------------------------------

def test_analogy_is_b_minus_a_plus_c(api, app):
    body = api.get("/api/v1/analogy?a=man&b=king&c=woman&topn=3").get_json()
    kv = app.extensions["modelhost"].model.kv
    expected = [w for w, _ in kv.most_similar(positive=["king", "woman"], negative=["man"], topn=3)]
    assert [r["word"] for r in body["results"]] == expected


def test_analogy_unknown_words_are_404_listing_them(api):
    error = error_of(api.get("/api/v1/analogy?a=man&b=zzkingzz&c=qqq"), 404, "unknown_word")
    assert error["words"] == ["zzkingzz", "qqq"]


@pytest.mark.parametrize("query, field", [("b=king&c=woman", "a"), ("a=man&b=king", "c"),
                                          ("a=man&b=king&c=woman&topn=0", "topn")])
def test_analogy_missing_words_are_422(api, query, field):
    assert error_of(api.get(f"/api/v1/analogy?{query}"), 422, "invalid_input")["field"] == field


# --- /cluster -----------------------------------------------------------------------------------

def test_cluster_of_a_text_has_its_nearest_documents(api, app):
    body = api.post("/api/v1/cluster", json={"text": "Taliban fighters fled Kandahar in Afghanistan"}).get_json()
    [result] = body["results"]
    k = app.extensions["modelhost"].model.info["clusters"]
    assert 0 <= result["cluster"] < k
    assert 0 <= result["distance"] <= 2
    assert len(result["nearest"]) == 3
    assert any("afghan" in d["snippet"].lower() or "taliban" in d["snippet"].lower() for d in result["nearest"])


def test_cluster_accepts_a_list_and_answers_in_order(api):
    texts = ["Taliban fighters in Afghanistan", "The batsman scored a century at the test match"]
    results = api.post("/api/v1/cluster", json={"text": texts}).get_json()["results"]
    single = [api.post("/api/v1/cluster", json={"text": t}).get_json()["results"][0] for t in texts]
    assert results == single


@pytest.mark.parametrize("body, status, field", [
    ({}, 422, "text"), ({"text": ""}, 422, "text"), ({"text": []}, 422, "text"), ({"text": 5}, 422, "text"),
    ({"text": ["fire", 3]}, 422, "text[1]"), ({"text": ["x"] * 101}, 422, "text"),
    ({"text": "zzqqxx"}, 404, "text"), ({"text": ["fire", "zzqqxx"]}, 404, "text[1]"),
])
def test_cluster_rejects_bad_texts(api, body, status, field):
    response = api.post("/api/v1/cluster", json=body)
    assert response.status_code == status
    assert response.get_json()["error"]["field"] == field


# --- /batch -------------------------------------------------------------------------------------

def upload(api, content: bytes, **form):
    data = {"file": (io.BytesIO(content), "queries.txt"), **form}
    return api.post("/api/v1/batch", data=data, content_type="multipart/form-data")


def test_batch_answers_every_line_with_results_or_an_error(api):
    body = upload(api, b"fire\n\nPolice\nzzqqxx\n", topn="2").get_json()
    lines = body["results"]
    assert [(r["line"], r["word"]) for r in lines] == [(1, "fire"), (3, "Police"), (4, "zzqqxx")]
    assert len(lines[0]["results"]) == 2 and len(lines[1]["results"]) == 2
    assert lines[2]["error"]["code"] == "unknown_word"


def test_batch_results_equal_single_queries(api):
    batch = upload(api, b"fire\n").get_json()["results"][0]["results"]
    single = api.get("/api/v1/similar?word=fire").get_json()["results"]
    assert batch == single


@pytest.mark.parametrize("content, form, field", [
    (b"", {}, "file"),
    (b"\n  \n", {}, "file"),
    (b"\xff\xfe\x00bad", {}, "file"),
    (b"fire\n", {"topn": "0"}, "topn"),
    (b"fire\n" * 1001, {}, "file"),
])
def test_batch_rejects_bad_uploads_with_422(api, content, form, field):
    assert error_of(upload(api, content, **form), 422, "invalid_input")["field"] == field


def test_batch_without_a_file_field_is_422(api):
    response = api.post("/api/v1/batch", data={"topn": "3"}, content_type="multipart/form-data")
    assert error_of(response, 422, "invalid_input")["field"] == "file"


def test_batch_needs_multipart(api):
    error = error_of(api.post("/api/v1/batch", json={"file": "fire"}), 415, "unsupported_media_type")
    assert "curl -F" in error["message"]


# --- /model, /openapi.json ----------------------------------------------------------------------

def test_model_info_comes_from_the_manifest(api, demo_model):
    manifest = json.loads((demo_model / "manifest.json").read_text())
    body = api.get("/api/v1/model").get_json()
    assert body == {"name": "demo", "version": manifest["version"], "sha256": manifest["sha256"],
                    "vocabulary_size": manifest["vocabulary_size"], "dimensions": manifest["dimensions"],
                    "clusters": manifest["clusters"]["k"]}


# --- model not loaded ---------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, kwargs", [
    ("GET", "/api/v1/similar?word=fire", {}),
    ("POST", "/api/v1/similar", {"json": {"positive": ["fire"]}}),
    ("POST", "/api/v1/similarity", {"json": {"pairs": [["a", "b"]]}}),
    ("POST", "/api/v1/text-similarity", {"json": {"a": "x y", "b": "y z"}}),
    ("GET", "/api/v1/analogy?a=a&b=b&c=c", {}),
    ("POST", "/api/v1/cluster", {"json": {"text": "fire"}}),
    ("POST", "/api/v1/batch", {"data": {"file": (io.BytesIO(b"fire"), "q.txt")}, "content_type": "multipart/form-data"}),
    ("POST", "/api/v1/jobs", {"data": {"file": (io.BytesIO(b"fire"), "q.txt")}, "content_type": "multipart/form-data"}),
    ("GET", "/api/v1/model", {}),
])
def test_every_endpoint_is_503_while_the_model_is_not_loaded(unloaded_api, method, path, kwargs):
    error = error_of(unloaded_api.open(path, method=method, **kwargs), 503, "model_unavailable")
    assert "manifest.json is missing" in error["message"]


def test_an_unexpected_error_is_a_json_500_under_api_and_an_html_page_elsewhere(demo_model):
    app = create_app({"ENVIRONMENT": "development", "MODEL_PATH": str(demo_model)})

    @app.get("/api/v1/boom")
    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    client = app.test_client()
    error = error_of(client.get("/api/v1/boom"), 500, "internal_error")
    assert "a bug" not in error["message"]  # details go to the log, not to the client
    page = client.get("/boom")
    assert page.status_code == 500 and page.mimetype == "text/html"
