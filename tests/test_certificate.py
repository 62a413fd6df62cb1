"""`fab certificate`'s parts that need no host: which names a certificate is for, what a certificate
says, certbot's failures turned into one line with what to do, and a TLS site rendered before its
certificate exists. End to end against Pebble: tests/test_tls.py."""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from deploy import commands
from deploy.certificate import certbot_failure, certificate_names
from deploy.context import DeployError
from deploy.facts import parse_facts
from deploy.layout import system_layout
from deploy.render import App, render, renewal_hook
from deploy.settings import check_settings
from deploy.workers import WorkerPlan
from tests.test_facts import DATA

SERVER = "acme-v02.api.letsencrypt.org"


def settings(**nginx):
    return check_settings({"nginx": {"tls": True, **nginx}})


def names(remote: bool = True, **nginx) -> list[str]:
    return certificate_names(SimpleNamespace(target=SimpleNamespace(remote=remote), settings=settings(**nginx)))


def test_the_certificate_is_for_the_public_names_first_one_first():
    assert names(server_names=["words.example.com", "localhost", "127.0.0.1", "www.words.example.com"]) == [
        "words.example.com", "www.words.example.com"]


@pytest.mark.parametrize(("remote", "nginx", "says"), [
    (False, {"server_names": ["words.example.com"]}, "certificates are for hosts (fab -H user@host certificate)"),
    (True, {"server_names": ["words.example.com"], "tls": False}, "[nginx] tls = false: set tls = true"),
    (True, {"server_names": ["words.example.com"], "tls_certificate": "/etc/ssl/mine.pem"},
     "remove tls_certificate and tls_certificate_key"),
    (True, {"server_names": ["*.example.com"]}, "a wildcard certificate needs the ACME DNS challenge"),
    (True, {"server_names": ["localhost", "10.0.0.5"]}, "has no public DNS name"),
])
def test_what_cannot_have_a_certificate_is_refused_saying_what_to_do(remote, nginx, says):
    with pytest.raises(DeployError) as raised:
        names(remote, **nginx)
    assert says in str(raised.value)


# What certbot 2.1 (Debian bookworm) printed against Pebble (tests/test_tls.py's setup).
CONNECTION = """Saving debug log to /var/log/letsencrypt/letsencrypt.log
Requesting a certificate for off.test

Certbot failed to authenticate some domains (authenticator: webroot). The Certificate Authority reported these problems:
  Domain: off.test
  Type:   connection
  Detail: Get "http://off.test:80/.well-known/acme-challenge/upwo3biu": dial tcp 127.0.0.78:80: connect: connection refused

Hint: The Certificate Authority failed to download the temporary challenge files created by Certbot.
Some challenges have failed.
Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile /var/log/letsencrypt/letsencrypt.log or re-run Certbot with -v for more details.
"""
UNAUTHORIZED = """Certbot failed to authenticate some domains (authenticator: webroot). The Certificate Authority reported these problems:
  Domain: other.test
  Type:   unauthorized
  Detail: Non-200 status code from HTTP: http://other.test:80/.well-known/acme-challenge/-w3Ib2Mv9 returned 404
"""
UNREACHABLE = """Saving debug log to /var/log/letsencrypt/letsencrypt.log
An unexpected error occurred:
ValueError: Requesting 127.0.0.1/dir: Connection refused
Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile /var/log/letsencrypt/letsencrypt.log or re-run Certbot with -v for more details.
"""
# Reconstructed from Let's Encrypt's documented error (rate-limits page), in certbot's frame above.
RATE_LIMITED = """Requesting a certificate for words.example.com
An unexpected error occurred:
Error creating new order :: too many certificates (5) already issued for this exact set of domains in the last 168h0m0s, retry after 2026-12-03T10:00:00Z: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-hostnames
Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile /var/log/letsencrypt/letsencrypt.log or re-run Certbot with -v for more details.
"""


@pytest.mark.parametrize(("output", "line"), [
    (CONNECTION, "the ACME server could not validate off.test (connection: Get \"http://off.test:80/.well-known/"
                 "acme-challenge/upwo3biu\": dial tcp 127.0.0.78:80: connect: connection refused): port 80 of "
                 "off.test must reach this host from the internet: open it in the firewall, forward it on the "
                 "router, and check that the name's A/AAAA records hold this host's public address"),
    (UNAUTHORIZED, "the ACME server could not validate other.test (unauthorized: Non-200 status code from HTTP: "
                   "http://other.test:80/.well-known/acme-challenge/-w3Ib2Mv9 returned 404): another server answered "
                   "for other.test: its A/AAAA records must all hold this host's address, and nothing in front of it "
                   "may answer /.well-known/acme-challenge/ itself"),
    (UNREACHABLE, f"cannot reach the ACME server {SERVER}: ValueError: Requesting 127.0.0.1/dir: Connection refused. "
                  "Check the host's outbound HTTPS (and, for a private ACME server, that the host trusts its CA) and "
                  "[nginx] acme_server"),
    (RATE_LIMITED, f"{SERVER}'s rate limit: Error creating new order :: too many certificates (5) already issued for "
                   "this exact set of domains in the last 168h0m0s, retry after 2026-12-03T10:00:00Z: see "
                   "https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-hostnames. Wait until "
                   'the time it names; to try things out meanwhile, set [nginx] acme_server = "letsencrypt-staging"'),
    ("something new\n", "certbot failed: something new (its log: /var/log/letsencrypt/letsencrypt.log)"),
])
def test_certbot_failures_become_a_line_with_what_to_do(output, line):
    assert certbot_failure(output, SERVER) == line


def test_what_a_certificate_says_is_read_from_openssl():
    info = commands.parse_certificate_info(
        "notAfter=Dec  2 05:35:39 2031 GMT\nsha256 Fingerprint=46:8A:C2:B1\nX509v3 Subject Alternative Name: \n"
        "    DNS:words.test, DNS:www.words.test\n")
    assert info.names == ("words.test", "www.words.test") and info.fingerprint == "46:8A:C2:B1"
    assert info.expires == datetime(2031, 12, 2, 5, 35, 39, tzinfo=timezone.utc)
    assert info.days_left(datetime(2031, 11, 1, tzinfo=timezone.utc)) == 31


def test_certbot_asks_the_configured_server_with_the_webroot_and_keeps_a_valid_certificate():
    argv = commands.certonly(["a.example.com", "b.example.com"], "a.example.com", "/var/www/letsencrypt",
                             "letsencrypt-staging", "")
    assert argv[:2] == ["certbot", "certonly"] and "--non-interactive" in argv and "--keep-until-expiring" in argv
    assert argv[argv.index("--server") + 1] == "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert argv[argv.index("--webroot-path") + 1] == "/var/www/letsencrypt"
    assert "--register-unsafely-without-email" in argv and argv.count("--domain") == 2
    own = commands.certonly(["a.example.com"], "a.example.com", "/w", "https://ca.internal/acme/directory", "ops@x.org")
    assert own[own.index("--server") + 1] == "https://ca.internal/acme/directory"
    assert own[own.index("--email") + 1] == "ops@x.org"


def test_a_tls_site_without_its_certificate_is_rendered_for_http_with_the_acme_location():
    loaded = settings(server_names=["words.example.com"])
    facts = parse_facts((DATA / "debian-12-amd64.txt").read_text())
    app = App(loaded, system_layout(loaded), WorkerPlan(2, "2"))
    with_certificate, without = (next(f.content for f in render([a], facts) if f.path.endswith("example.com.conf"))
                                 for a in (app, App(loaded, app.layout, app.plan, certificate=False)))
    assert "ssl_certificate /etc/letsencrypt/live/words.example.com/fullchain.pem;" in with_certificate
    assert "return 301 https://" in with_certificate
    assert "ssl" not in without and "return 301" not in without
    assert "location ^~ /.well-known/acme-challenge/" in without and "listen 80;" in without


def test_the_renewal_hook_checks_nginx_then_reloads_it_the_hosts_way():
    assert renewal_hook(True).splitlines()[-2:] == ["nginx -t -q", "systemctl reload nginx"]
    assert renewal_hook(False).splitlines()[-1] == "service nginx reload"
