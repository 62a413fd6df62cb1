"""Pebble, Let's Encrypt's ACME test server (Debian package pebble), on loopback for the certificate
tests: real ACME, real HTTP-01 validation against the test hosts' nginx on port 80, and real
certificates, from a root that Pebble makes anew at every start (`root()`).

Pebble resolves names through its companion pebble-challtestsrv, a DNS server whose A records the
test sets (`point(name, address)`); nothing else answers there. Pebble's own HTTPS listener has a
certificate from a CA made here (`ca_file`): a host that asks Pebble for certificates must trust it,
as a user trusts a private ACME server's CA.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from deploy.validate import free_loopback_port

PEBBLE, CHALLTESTSRV = shutil.which("pebble", path="/usr/bin"), shutil.which("pebble-challtestsrv", path="/usr/bin")
MISSING = None if PEBBLE and CHALLTESTSRV else "needs Pebble: apt-get install pebble"


class Pebble:
    """A running Pebble (directory: `directory`) and its DNS; `stop()` ends both."""

    def __init__(self, workdir: Path, address: str = "127.0.0.1"):
        self.workdir, self.address = Path(workdir), address  # where the ACME directory listens
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.workdir / "ca.pem"
        self.port, self.management, self.dns, self.dns_management = (free_loopback_port() for _ in range(4))
        self.processes: list[subprocess.Popen] = []
        self.logs: list = []

    @property
    def directory(self) -> str:
        """The ACME directory URL, what [nginx] acme_server is set to."""
        return f"https://{self.address}:{self.port}/dir"

    def start(self) -> Pebble:
        self.make_listener_certificate()
        config = self.workdir / "pebble.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"{self.address}:{self.port}", "managementListenAddress": f"127.0.0.1:{self.management}",
            "certificate": str(self.workdir / "listener.pem"), "privateKey": str(self.workdir / "listener.key"),
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        self.launch("challtestsrv", [CHALLTESTSRV, "-dns01", f"127.0.0.1:{self.dns}", "-http01", "", "-https01", "",
                                     "-tlsalpn01", "", "-management", f"127.0.0.1:{self.dns_management}",
                                     "-defaultIPv4", "", "-defaultIPv6", ""], {})
        # No random sleep before validating, no nonce rejected at random: a test's run is repeatable.
        self.launch("pebble", [PEBBLE, "-config", str(config), "-dnsserver", f"127.0.0.1:{self.dns}",
                               "-strict=false"], {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get(self.directory)
                self.get(f"http://127.0.0.1:{self.dns_management}/", ok_statuses=(200, 404))
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Pebble did not answer within 30 s: see {self.workdir}/*.log")
                time.sleep(0.2)

    def launch(self, name: str, argv: list[str], env: dict) -> None:
        log = open(self.workdir / f"{name}.log", "wb")
        self.logs.append(log)
        self.processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin",
                                               **env}, start_new_session=True))

    def make_listener_certificate(self) -> None:
        """A CA, and a certificate it signs for the listen address, 127.0.0.1 and localhost: Pebble's HTTPS
        listener's."""
        key, listener = self.workdir / "ca.key", self.workdir / "listener"

        def run(*argv: str) -> None:
            subprocess.run(["openssl", *argv], check=True, capture_output=True)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7", "-subj", "/CN=modelhost test ACME CA",
            "-keyout", str(key), "-out", str(self.ca_file))
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", f"{listener}.key",
            "-out", f"{listener}.csr")
        extensions = self.workdir / "listener.ext"
        extensions.write_text(f"subjectAltName = IP:{self.address}, IP:127.0.0.1, DNS:localhost\n")
        run("x509", "-req", "-in", f"{listener}.csr", "-CA", str(self.ca_file), "-CAkey", str(key),
            "-CAcreateserial", "-days", "7", "-extfile", str(extensions), "-out", f"{listener}.pem")

    def get(self, url: str, ok_statuses=(200,), data: bytes | None = None) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(url, data=data)
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in ok_statuses:
                return exc.read()
            raise

    def point(self, name: str, address: str) -> None:
        """Pebble's DNS answers name's A queries with address."""
        self.get(f"http://127.0.0.1:{self.dns_management}/add-a",
                 data=json.dumps({"host": name, "addresses": [address]}).encode())

    def root(self) -> str:
        """The root certificate (PEM) every certificate Pebble issued since it started chains to."""
        return self.get(f"https://127.0.0.1:{self.management}/roots/0").decode()

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()


def trust_and_resolve(host, server: Pebble, name: str, address: str) -> None:
    """What a user of a private ACME server sets up: the host trusts its CA; and the name resolves
    (on the host through /etc/hosts, for Pebble through its DNS) to address."""
    authority = server.ca_file.read_text()
    (host.root / "usr/local/share/ca-certificates/modelhost-test-acme.crt").write_text(authority)
    bundle = host.root / "etc/ssl/certs/ca-certificates.crt"
    if authority not in bundle.read_text():
        bundle.write_text(bundle.read_text() + authority)
    with open(host.root / "etc/hosts", "a") as hosts_file:
        hosts_file.write(f"{address}\t{name}\n")
    server.point(name, address)


@contextlib.contextmanager
def pebble(workdir: Path, address: str = "127.0.0.1"):
    """Pebble with its ACME directory on address (a test network's gateway, for hosts in their own namespaces)."""
    server = Pebble(workdir, address).start()
    try:
        yield server
    finally:
        server.stop()
