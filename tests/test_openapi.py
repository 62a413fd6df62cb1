"""The OpenAPI document is valid and covers exactly the routes the app has."""
from __future__ import annotations

import re

from openapi_spec_validator import validate

from app.openapi import spec


def test_document_is_valid_openapi_3_1():
    validate(spec())


def test_document_is_served(api):
    assert api.get("/api/v1/openapi.json").get_json() == spec()


def test_every_route_is_documented_and_every_documented_route_exists(app):
    # Flask's /jobs/<job_id> is OpenAPI's /jobs/{job_id}.
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower()) for rule in app.url_map.iter_rules()
              if rule.rule.startswith(("/api/", "/livez", "/readyz", "/metrics"))
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, methods in spec()["paths"].items() for method in methods}
    assert routes == documented
