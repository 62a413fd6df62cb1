"""Shared fixtures: a demo model built once per run, apps on it, a client that checks every
API response against the OpenAPI document."""
from __future__ import annotations

import os
import time

import pytest
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse

from app import create_app
from app.model import build
from app.openapi import spec
from tests import hosts
from tests.stack import local_stack

DEV = {"ENVIRONMENT": "development"}


@pytest.fixture(autouse=True)
def no_flask_env(monkeypatch):
    """Settings come from each test, never from the shell that runs pytest."""
    for name in list(os.environ):
        if name.startswith("FLASK_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-model")
    build(out, "demo", None)
    return out


@pytest.fixture(scope="session")
def app(demo_model, tmp_path_factory):
    # The job store in a temporary directory, never the checkout's instance folder.
    jobs_db = tmp_path_factory.mktemp("jobs") / "jobs.sqlite3"
    return create_app({**DEV, "TESTING": True, "MODEL_PATH": str(demo_model), "JOBS_DB": str(jobs_db)})


@pytest.fixture(scope="session")
def openapi():
    return OpenAPI.from_dict(spec())


class SentRequest(WerkzeugOpenAPIRequest):
    """The request the test client sent. The app consumed its body; response checks need none."""

    body = None


class CheckedClient:
    """Flask's test client; every response to a documented path is validated against the spec."""

    def __init__(self, client, openapi):
        self.client = client
        self.openapi = openapi

    def open(self, *args, **kwargs):
        response = self.client.open(*args, **kwargs)
        self.openapi.validate_response(SentRequest(response.request),
                                       WerkzeugOpenAPIResponse(response))
        return response

    def get(self, *args, **kwargs):
        return self.open(*args, method="GET", **kwargs)

    def post(self, *args, **kwargs):
        return self.open(*args, method="POST", **kwargs)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def api(app, openapi):
    return CheckedClient(app.test_client(), openapi)


@pytest.fixture
def unloaded_api(tmp_path, openapi):
    """A checked client of an app whose model path holds no model."""
    app = create_app({**DEV, "MODEL_PATH": str(tmp_path / "no-model")})
    return CheckedClient(app.test_client(), openapi)


@pytest.fixture(scope="session")
def stack(demo_model, tmp_path_factory):
    """The local target's rendered configs serving two apps through nginx: (port, root)."""
    with local_stack(tmp_path_factory.mktemp("stack"), demo_model) as running:
        yield running


@pytest.fixture(scope="session")
def arm64_host(tmp_path_factory):
    """A systemd host of Debian bookworm arm64 (the 64-bit Raspberry Pi OS base) under qemu, for the
    whole session once a test asks for it; skipped with the reason when qemu-user-static is missing."""
    reason = hosts.missing_requirements("arm64")
    if reason:
        pytest.skip(f"arm64 test host: {reason}")
    workdir = tmp_path_factory.mktemp("arm64")
    began = time.monotonic()
    host = hosts.start_host("systemd", None, workdir, hosts.make_client_key(workdir), arch="arm64")
    print(f"arm64 host started in {time.monotonic() - began:.1f} s (rootfs built or cached)")
    try:
        yield host
    finally:
        host.stop()
        assert not host.processes(), f"{host.name} left processes"


@pytest.fixture(scope="session")
def test_hosts(tmp_path_factory):
    """One running host per flavor for the whole session, stopped (by pid) at the end."""
    workdir = tmp_path_factory.mktemp("hosts")
    key = hosts.make_client_key(workdir)
    started = {}
    try:
        for flavor in hosts.FLAVORS:
            began = time.monotonic()
            started[flavor] = hosts.start_host(flavor, None, workdir, key)
            print(f"{flavor} host started in {time.monotonic() - began:.1f} s")
        yield started
        assert not hosts.listening_outside_loopback(list(started.values())), "a test host listens outside loopback"
    finally:
        for host in started.values():
            host.stop()
            assert not host.processes(), f"{host.name} left processes"
