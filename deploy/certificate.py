"""A TLS certificate for the site's names on a host, from an ACME server (Let's Encrypt by default),
and the switch to HTTPS: what `fab -H user@host certificate` does.

    certbot      certbot installed; renewals the host's way (Debian's certbot.timer, or its cron job
                 where init.d scripts run, with cron); a deploy hook that reloads nginx after each
    names        each public name of [nginx] server_names resolves on the host
    certificate  certbot's webroot method through the ACME location the site already serves on
                 port 80; a certificate that is not due for renewal is kept
    nginx        the site rendered with TLS, checked by nginx -t, reloaded gracefully
    firewall     the TLS port let in, as provision does ([firewall]), if tls came on since then
    verify       the health path through nginx over HTTPS

Until the certificate is there, a site with [nginx] tls is served over HTTP (with the ACME
location), so the first deploy works before the first certificate.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from deploy import commands, state
from deploy.commands import CertificateInfo
from deploy.context import Context, DeployError
from deploy.cutover import configs, release_app, verify
from deploy.firewall import ensure_firewall
from deploy.lock import locked
from deploy.provision import install_missing
from deploy.render import RENEWAL_HOOK, certificate_paths, renewal_hook
from deploy.settings import public_names

# Debian's certbot package renews with its systemd timer, or (without systemd) /etc/cron.d/certbot.
TIMER = "certbot.timer"
CRON_JOB = Path("/etc/cron.d/certbot")
CERTBOT_LOG = "/var/log/letsencrypt/letsencrypt.log"


def certificate_names(ctx: Context) -> list[str]:
    """The names the certificate is for; DeployError when the settings or the target cannot have one."""
    nginx = ctx.settings.nginx
    if not ctx.target.remote:
        raise DeployError("certificates are for hosts (fab -H user@host certificate): the local target serves plain "
                          "HTTP on 127.0.0.1, which no ACME server can reach")
    if not nginx.tls:
        raise DeployError("[nginx] tls = false: set tls = true in deploy.toml first (the site is served over HTTP "
                          "until the certificate is there), then fab certificate again")
    if nginx.tls_certificate or nginx.tls_certificate_key:
        raise DeployError("[nginx] tls_certificate is set: the site uses that certificate. For one from the ACME "
                          "server instead, remove tls_certificate and tls_certificate_key from deploy.toml")
    wildcards = [name for name in nginx.server_names if name.startswith("*.")]
    if wildcards:
        raise DeployError(f"{wildcards[0]} in [nginx] server_names: a wildcard certificate needs the ACME DNS "
                          "challenge, which fab certificate does not do. List the names themselves, or get the "
                          "certificate elsewhere and set [nginx] tls_certificate")
    names = public_names(nginx.server_names)
    if not names:
        raise DeployError(f"[nginx] server_names ({', '.join(nginx.server_names)}) has no public DNS name, only "
                          "this machine's own names and addresses: add the name the site is reached by, then fab "
                          "deploy and fab certificate")
    return names


def certificate(ctx: Context, site: Callable[[], str] | None = None) -> CertificateInfo:
    """Get (or keep) the certificate for the site's public names and serve the site over HTTPS.
    site writes the site's nginx files again (now with TLS) and says what changed; by default the
    app's site on its live release (a fleet's balancer passes its own)."""
    names = certificate_names(ctx)
    with locked(ctx, "certificate"):
        site = site or live_site(ctx)
        ensure_certbot(ctx)
        check_names(ctx, names)
        info = obtain(ctx, names)
        ctx.__dict__.pop("tls", None)  # the certificate is there now
        with ctx.step("nginx") as step:
            outcome = site()
            step.changed = bool(outcome)
            step.detail = f"the site serves HTTPS on {ctx.layout.tls_listen}" + (f" ({outcome})" if outcome else "")
        ensure_firewall(ctx)  # lets the TLS port in, if tls was turned on since provision
        with ctx.step("verify") as step:
            step.detail = verify(ctx)
    return info


def live_site(ctx: Context) -> Callable[[], str]:
    """Writing the app's site for its live release (there must be one: it answers the ACME challenge)."""
    pointers, release = state.live(ctx)
    if release is None:
        raise DeployError(f"nothing is live on {ctx.target.name} yet: fab deploy first (the site answers the "
                          "ACME server's challenge on port 80)")
    return lambda: ctx.nginx.ensure(configs(ctx, release_app(ctx, release), pointers.live)["nginx"])


def ensure_certbot(ctx: Context) -> None:
    systemd = ctx.facts.systemd
    packages = ["certbot"] if systemd else ["certbot", "cron"]
    renewer = TIMER if systemd else "cron"
    with ctx.step("certbot") as step:
        missing = install_missing(ctx, packages)
        done = [f"installed {', '.join(missing)}"] if missing else []
        for check, action, did in (("is-enabled", "enable", "enabled"), ("is-active", "start", "started")):
            if ctx.run(commands.service(systemd, renewer, check), check=False).exited != 0:
                ctx.run(commands.service(systemd, renewer, action), timeout=60)
                done.append(f"{did} {renewer}")
        if not systemd and not ctx.exists(CRON_JOB):
            raise DeployError(f"{CRON_JOB} is missing on {ctx.target.name}, so nothing would renew the "
                              "certificate: reinstall it (apt-get install --reinstall certbot)")
        # certbot makes the hooks' directory on its first run, and wants the webroot to exist.
        for directory in (RENEWAL_HOOK.parent, Path(ctx.settings.nginx.acme_webroot)):
            ctx.run(commands.make_directory(directory))
        if ctx.target.write(RENEWAL_HOOK, renewal_hook(systemd), mode=0o755):
            done.append(f"wrote {RENEWAL_HOOK}")
        step.changed = bool(done)
        way = f"{TIMER} (systemd)" if systemd else f"{CRON_JOB} (cron)"
        step.detail = (", ".join(done) + "; " if done else "") + f"renewed by {way}, nginx reloaded after each renewal"


def check_names(ctx: Context, names: list[str]) -> None:
    with ctx.step("names") as step:
        found = []
        for name in names:
            result = ctx.run(commands.resolve(name), check=False)
            if result.exited != 0:
                raise DeployError(f"{name} does not resolve on {ctx.target.name}: give it a DNS record (A or AAAA) "
                                  "with this host's public address, wait until it is seen, then fab certificate again")
            found.append(f"{name} -> {', '.join(commands.parse_resolve(result.stdout))}")
        step.detail = "; ".join(found)


def installed(ctx: Context) -> CertificateInfo | None:
    """What the site's certificate says, when there is one on the target."""
    result = ctx.run(commands.certificate_info(Path(certificate_paths(ctx.settings)[0])), check=False)
    return commands.parse_certificate_info(result.stdout) if result.exited == 0 else None


def obtain(ctx: Context, names: list[str]) -> CertificateInfo:
    nginx = ctx.settings.nginx
    server = urlsplit(commands.acme_directory(nginx.acme_server)).netloc
    with ctx.step("certificate") as step:
        before = installed(ctx)
        argv = commands.certonly(names, names[0], Path(nginx.acme_webroot), nginx.acme_server, nginx.acme_email)
        result = ctx.run(argv, check=False, timeout=600)
        if result.exited != 0:
            raise DeployError(certbot_failure(result.stdout + result.stderr, server))
        info = installed(ctx)
        if info is None:
            raise DeployError(f"certbot succeeded, but {certificate_paths(ctx.settings)[0]} is not a certificate: "
                              f"see {CERTBOT_LOG} on {ctx.target.name}")
        step.changed = before is None or before.fingerprint != info.fingerprint
        step.detail = (f"{'issued by ' + server if step.changed else 'kept (not due for renewal)'} for "
                       f"{', '.join(info.names)}, expires {info.expires:%Y-%m-%d}")
    return info


# What to do about each kind of problem the ACME server reports for a name (RFC 8555 error types).
FIXES = {
    "connection": "port 80 of {name} must reach this host from the internet: open it in the firewall, forward it "
                  "on the router, and check that the name's A/AAAA records hold this host's public address",
    "dns": "give {name} an A (or AAAA) record with this host's public address, and wait until it is seen",
    "unauthorized": "another server answered for {name}: its A/AAAA records must all hold this host's address, and "
                    "nothing in front of it may answer /.well-known/acme-challenge/ itself",
    "caa": "{name}'s CAA DNS record does not allow this ACME server: add it there, or remove the record",
    "rejectedIdentifier": "the ACME server does not issue certificates for {name}",
}


def certbot_failure(output: str, server: str) -> str:
    """certbot's failure as a line per problem, each with what to do."""
    problems = re.findall(r"Domain: (\S+)\s+Type:\s+(\S+)\s+Detail: (.+)", output)
    if problems:
        return "\n".join(f"the ACME server could not validate {name} ({kind}: {detail.strip()}): "
                         + FIXES.get(kind, "see " + CERTBOT_LOG).format(name=name) for name, kind, detail in problems)
    said = [line.strip() for line in output.splitlines() if line.strip()]
    unexpected = next((said[i + 1] for i, line in enumerate(said[:-1]) if line.startswith("An unexpected error")), "")
    detail = unexpected or next((line for line in reversed(said) if not line.startswith(("Ask for help", "Saving"))),
                                "no output")
    if "rateLimited" in output or "too many" in output.lower():
        return (f"{server}'s rate limit: {detail}. Wait until the time it names; to try things out meanwhile, set "
                '[nginx] acme_server = "letsencrypt-staging"')
    if re.search(r"Connection refused|Name or service not known|Max retries exceeded|timed out|SSLError", detail):
        return (f"cannot reach the ACME server {server}: {detail}. Check the host's outbound HTTPS (and, for a "
                "private ACME server, that the host trusts its CA) and [nginx] acme_server")
    return f"certbot failed: {detail} (its log: {CERTBOT_LOG})"


def describe(ctx: Context) -> str:
    """The site's certificate for `fab status`: its names and expiry, or that there is none yet."""
    info = installed(ctx)
    if info is None:
        return (f"none at {certificate_paths(ctx.settings)[0]}: the site is served over HTTP until fab certificate "
                "gets one")
    days = info.days_left()
    return (f"{', '.join(info.names) or 'no DNS names'}; expires {info.expires:%Y-%m-%d} "
            + (f"(in {days} days)" if days >= 0 else "(EXPIRED: fab certificate gets a new one)"))
