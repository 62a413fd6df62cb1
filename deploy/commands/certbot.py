"""Certificates on a host: certbot (ACME, HTTP-01 through the site's webroot), what a certificate
says (openssl), and whether a name resolves there."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

# [nginx] acme_server's short names.
ACME_SERVERS = {"letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
                "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory"}


def acme_directory(server: str) -> str:
    return ACME_SERVERS.get(server, server)


def certonly(names: list[str], cert_name: str, webroot: Path, server: str, email: str) -> list[str]:
    """certbot's webroot method: the challenge files go below webroot, which the site serves at
    /.well-known/acme-challenge/. A certificate with these names that is not yet due for renewal is
    kept (exit 0, nothing changes); one with other names is replaced (--expand, --cert-name)."""
    domains = [arg for name in names for arg in ("--domain", name)]
    contact = ["--email", email] if email else ["--register-unsafely-without-email"]
    return ["certbot", "certonly", "--non-interactive", "--agree-tos", "--webroot", "--webroot-path", str(webroot),
            "--cert-name", cert_name, *domains, "--server", acme_directory(server), *contact,
            "--keep-until-expiring", "--expand"]


def certbot_delete(cert_name: str) -> list[str]:
    """The certificate, its renewal configuration and its files, gone."""
    return ["certbot", "delete", "--non-interactive", "--cert-name", cert_name]


def certificate_info(path: Path) -> list[str]:
    """What a PEM certificate (the first of a chain) says: expiry, fingerprint, names; exit 1 when
    there is none."""
    return ["openssl", "x509", "-noout", "-enddate", "-fingerprint", "-sha256", "-ext", "subjectAltName",
            "-in", str(path)]


@dataclass(frozen=True)
class CertificateInfo:
    names: tuple[str, ...]
    expires: datetime
    fingerprint: str

    def days_left(self, now: datetime | None = None) -> int:
        return (self.expires - (now or datetime.now(timezone.utc))).days


def parse_certificate_info(text: str) -> CertificateInfo:
    expires = re.search(r"notAfter=(.+)", text).group(1).strip()
    return CertificateInfo(
        names=tuple(re.findall(r"DNS:([^,\s]+)", text)),
        expires=datetime.strptime(expires, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=timezone.utc),
        fingerprint=re.search(r"Fingerprint=(\S+)", text).group(1))


def resolve(name: str) -> list[str]:
    """The name's addresses as the host resolves it (its DNS, /etc/hosts); exit 2 when it does not."""
    return ["getent", "ahosts", name]


def parse_resolve(text: str) -> list[str]:
    return list(dict.fromkeys(line.split()[0] for line in text.splitlines() if line.strip()))
