"""Random input to every API operation: never a 500, never HTML, always an answer the spec allows.

Bounded and derandomized (the same examples every run), so CI is repeatable; widen locally with
--hypothesis-seed=random.
"""
from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FIELDS = ["positive", "negative", "topn", "pairs", "a", "b", "text", "file"]
words = st.sampled_from(["fire", "Police", "blaze", "zzqq", "", " "]) | st.text(max_size=20)
scalars = (st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | words)
json_values = st.recursive(
    scalars | st.lists(words, max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5),
                                                                inner, max_size=4),
    max_leaves=12)
bodies = json_values | st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4)
queries = st.dictionaries(st.sampled_from(["word", "topn", "a", "b", "c", "x", "offset", "limit"]),
                          words | st.integers(-5, 500).map(str), max_size=5)

JSON_POSTS = ["/api/v1/similar", "/api/v1/similarity", "/api/v1/text-similarity", "/api/v1/cluster"]
GETS = ["/api/v1/similar", "/api/v1/analogy", "/api/v1/model", "/api/v1/jobs/" + "0" * 32]
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_answered(response):
    """A documented status with a JSON body (CheckedClient has already matched it to the spec)."""
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.is_json


@FUZZ
@given(path=st.sampled_from(JSON_POSTS), body=bodies)
def test_random_json_bodies(api, path, body):
    assert_answered(api.post(path, json=body))


@FUZZ
@given(path=st.sampled_from(JSON_POSTS + ["/api/v1/batch", "/api/v1/jobs"]), data=st.binary(max_size=200),
       content_type=st.sampled_from(["application/json", "text/plain", "multipart/form-data",
                                     "multipart/form-data; boundary=x", "application/json; charset=latin-1"]))
def test_random_raw_bodies(api, path, data, content_type):
    assert_answered(api.post(path, data=data, content_type=content_type))


@FUZZ
@given(path=st.sampled_from(GETS), query=queries)
def test_random_query_strings(api, path, query):
    assert_answered(api.get(path, query_string=query))


@FUZZ
@given(content=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
       topn=st.none() | words | st.integers(-5, 500).map(str))
def test_random_batch_uploads(api, content, topn):
    form = {"file": (io.BytesIO(content), "q.txt")}
    if topn is not None:
        form["topn"] = topn
    assert_answered(api.post("/api/v1/batch", data=form, content_type="multipart/form-data"))
