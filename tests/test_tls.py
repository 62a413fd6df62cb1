"""`fab -H user@host certificate` end to end: certbot on the test hosts (tests/hosts.py) gets a real
certificate from Pebble, Let's Encrypt's ACME test server on loopback (tests/acme.py), through the
site's ACME location on port 80; the site then serves HTTPS with a chain that verifies against
Pebble's root. Renewal is the host's own (certbot.timer with systemd, cron with init.d scripts) and
reloads nginx without failing a request.

Per flavor, in order: a TLS site deployed before its certificate (served over HTTP) -> the
certificate -> again (kept) -> a forced renewal under load -> a redeploy keeps HTTPS. Then the
errors, on one host.
"""
from __future__ import annotations

import re
import socket
import ssl
import time

import pytest

from tests import acme, hosts
from tests.remote import Site, make_site, steps
from tests.servers import MIN_REQUESTS, git, ok, request, steady_load

MISSING = hosts.missing_requirements() or acme.MISSING
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=f"certificates on test hosts: {MISSING}"),
              pytest.mark.slow]


@pytest.fixture(scope="module")
def pebble(tmp_path_factory):
    with acme.pebble(tmp_path_factory.mktemp("pebble")) as server:
        yield server


class TLSSite(Site):
    """A site with a public name (resolved as tests set it up), served over HTTPS once it has a certificate."""

    def __init__(self, site: Site, name: str):
        super().__init__(site.host, site.repo, site.config)
        self.name = name

    def https(self, path: str, root: str):
        """(status, headers, body) over HTTPS on port 443, the chain verified against root for the name."""
        return request(443, path, host=self.name, address=self.host.address, tls=verifying(root))

    def served_certificate(self) -> bytes:
        """The certificate nginx serves for the name (DER), whoever signed it."""
        context = ssl._create_unverified_context()
        with socket.create_connection((self.host.address, 443), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=self.name) as tls:
            return tls.getpeercert(binary_form=True)


def verifying(root: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=root)
    context.check_hostname = True
    return context


@pytest.fixture(scope="module", params=hosts.FLAVORS)
def site(request, test_hosts, tmp_path_factory, demo_model, pebble) -> TLSSite:
    """The reference app on the flavor's host (the same app as test_remote's, so its environment is
    reused), for a public name, with [nginx] tls and Pebble as its ACME server."""
    host = test_hosts[request.param]
    name = f"words-{request.param}.test"
    site = make_site(host, tmp_path_factory.mktemp(f"tls-{request.param}"), demo_model,
                     names=f'"{name}", "localhost", "{host.address}"')
    settings = site.repo / "deploy.toml"
    settings.write_text(settings.read_text().replace(
        'rate_limit = "off"', f'rate_limit = "off"\ntls = true\nacme_server = "{pebble.directory}"\n'
                              'acme_email = "ops@example.com"'))
    git(site.repo, "commit", "-qam", "HTTPS")
    acme.trust_and_resolve(host, pebble, name, host.address)
    return TLSSite(site, name)


def test_a_tls_site_is_served_over_http_until_it_has_a_certificate(site):
    ok(site.fab("provision"))
    out = ok(site.fab("deploy"))
    assert "has no certificate yet, so the site is served over HTTP: fab -H" in out, out
    # The app's site under its earlier first name (test_remote's localhost.conf, when it ran first) is gone.
    sites = site.host.root / "etc/nginx/sites-available"
    own = [path.name for path in sites.glob("*.conf") if re.match(r"# .*?: modelhost, rendered", path.read_text())]
    assert own == [f"{site.name}.conf"], own
    assert f"open http://{site.name}/" in out
    status, headers, _ = request(80, "/readyz", host=site.name, address=site.host.address)
    assert status == 200, headers  # not a redirect to an HTTPS that has no certificate
    assert re.search(r"\n  certificate +none at /etc/letsencrypt/live/", ok(site.fab("status")))


def test_fab_certificate_gets_one_from_pebble_and_serves_https(site, pebble):
    began = time.monotonic()
    out = ok(site.fab("certificate"))
    print(f"{site.host.flavor}: fab certificate (install certbot, issue, switch) {time.monotonic() - began:.1f} s")
    assert steps(out) == {"certbot": "changed", "names": "unchanged", "certificate": "changed", "nginx": "changed",
                          "firewall": "unchanged", "verify": "unchanged"}, out
    assert re.search(rf"certificate +changed .* issued by 127\.0\.0\.1:\d+ for {site.name}, expires 20\d\d-", out), out
    assert f"https://{site.host.address}:443/readyz 200" in out and f"https://{site.name}/ serves a certificate" in out
    status, headers, body = site.https("/readyz", pebble.root())  # the chain verifies against Pebble's root
    assert status == 200 and b'"ready"' in body
    assert headers["Strict-Transport-Security"] == "max-age=63072000"
    status, headers, _ = request(80, "/api/v1/model", host=site.name, address=site.host.address)
    assert status == 301 and headers["Location"] == f"https://{site.name}/api/v1/model"
    with pytest.raises(ssl.SSLCertVerificationError):  # a chain from elsewhere does not verify
        site.https("/readyz", (site.host.root / "etc/ssl/certs/ca-certificates.crt").read_text())
    # Renewal, the host's way, with nginx reloaded after it.
    if site.host.flavor == "systemd":
        assert site.on_host("systemctl is-enabled certbot.timer; systemctl is-active certbot.timer").split() == [
            "enabled", "active"]
        assert "renewed by certbot.timer (systemd)" in out
    else:
        assert (site.host.root / "etc/cron.d/certbot").is_file()
        assert site.host.ssh("service cron status").returncode == 0
        assert "renewed by /etc/cron.d/certbot (cron)" in out
    hook = site.host.root / "etc/letsencrypt/renewal-hooks/deploy/modelhost-nginx"
    assert hook.stat().st_mode & 0o111 and "nginx -t -q" in hook.read_text()
    renewal = (site.host.root / f"etc/letsencrypt/renewal/{site.name}.conf").read_text()
    assert "authenticator = webroot" in renewal and pebble.directory in renewal
    line = next(line for line in ok(site.fab("status")).splitlines() if line.strip().startswith("certificate"))
    assert re.search(rf"certificate +{re.escape(site.name)}; expires 20\d\d-\d\d-\d\d \(in \d+ days\)", line), line


def test_fab_certificate_again_keeps_the_certificate(site):
    out = ok(site.fab("certificate"))
    assert set(steps(out).values()) == {"unchanged"}, out
    assert "kept (not due for renewal)" in out


def test_a_forced_renewal_reloads_nginx_without_a_failed_request(site, pebble):
    before = site.served_certificate()
    with steady_load(443, address=site.host.address, host=site.name, tls=verifying(pebble.root())) as counts:
        time.sleep(1)
        began = time.monotonic()
        site.on_host("certbot renew --force-renewal --no-random-sleep-on-renew -q")
        renewed = time.monotonic() - began
        deadline = time.monotonic() + 30
        while site.served_certificate() == before and time.monotonic() < deadline:
            time.sleep(0.2)
    print(f"{site.host.flavor}: certbot renew --force-renewal {renewed:.1f} s; requests over HTTPS meanwhile: "
          f"{dict(counts)}")
    assert site.served_certificate() != before, "nginx still serves the old certificate"
    assert sum(counts.values()) >= MIN_REQUESTS and set(counts) == {200}, counts


def test_a_deploy_after_the_certificate_keeps_https(site, pebble):
    out = ok(site.fab("deploy"))
    assert "no certificate yet" not in out and f"open https://{site.name}/" in out
    assert set(steps(out).values()) == {"unchanged"}, out
    assert site.https("/readyz", pebble.root())[0] == 200


def test_certificate_errors_are_one_line_saying_what_to_do(site, pebble):
    if site.host.flavor != "systemd":
        pytest.skip("once is enough: certbot says the same on both flavors")
    settings = site.repo / "deploy.toml"
    original = settings.read_text()
    try:
        settings.write_text(original.replace(f'"{site.name}", ', f'"{site.name}", "nowhere.test", '))
        result = site.fab("certificate")
        assert result.returncode == 1
        assert result.stderr.strip() == (f"error: nowhere.test does not resolve on {site.host.address}: give it a DNS "
                                         "record (A or AAAA) with this host's public address, wait until it is seen, "
                                         "then fab certificate again"), result.stderr
        # It resolves on the host, but the ACME server's DNS sends it where nothing listens on port 80.
        with open(site.host.root / "etc/hosts", "a") as hosts_file:
            hosts_file.write(f"{site.host.address}\tunreached.test\n")
        pebble.point("unreached.test", "127.0.0.254")
        settings.write_text(original.replace(f'"{site.name}", ', f'"{site.name}", "unreached.test", '))
        result = site.fab("certificate")
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1, result.stderr
        assert re.match(r"error: the ACME server could not validate unreached\.test \(connection: .*127\.0\.0\.254:80.*"
                        r"connection refused\): port 80 of unreached\.test must reach this host from the internet",
                        result.stderr), result.stderr
    finally:
        settings.write_text(original)
    status, _, _ = site.https("/readyz", pebble.root())  # nothing changed
    assert status == 200
