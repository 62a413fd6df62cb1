"""deploy.toml: every setting declared once (key, default, one-line doc, check), loaded and checked.

The declaration below feeds three things: loading (`load`), the error messages for bad settings,
and the README's settings table (`python -m deploy.settings --readme` rewrites it).
"""
from __future__ import annotations

import difflib
import ipaddress
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

SETTINGS_FILE = "deploy.toml"
# The kit's own entries in a release (venv, model, gunicorn.conf.py, release.json): apart from the app's files.
KIT_DIR = ".modelhost"


class SettingsError(Exception):
    """deploy.toml is wrong; the message names each bad key, its value and what is allowed."""


class Invalid(ValueError):
    """A value failed its check; the text says what is allowed."""


# ---- checks: each takes the TOML value, returns the value to use, or raises Invalid ----------

@dataclass(frozen=True)
class Check:
    allowed: str  # what the docs and the error messages say is allowed
    convert: Callable[[Any], Any]

    def __call__(self, value):
        try:
            return self.convert(value)
        except Invalid as exc:
            if str(exc):  # a check that says itself what is wrong
                raise
            raise Invalid(f"must be {self.allowed}") from None
        except (TypeError, ValueError):
            raise Invalid(f"must be {self.allowed}") from None


def _require(condition: bool) -> None:
    if not condition:
        raise Invalid


def _integer(value, low: int, high: int | None) -> int:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= low
             and (high is None or value <= high))
    return value


def integer(low: int = 0, high: int | None = None) -> Check:
    allowed = f"a whole number from {low} to {high}" if high is not None else f"a whole number >= {low}"
    return Check(allowed, lambda v: _integer(v, low, high))


def boolean() -> Check:
    def convert(value):
        _require(isinstance(value, bool))
        return value
    return Check("true or false", convert)


def choice(*values: str) -> Check:
    def convert(value):
        _require(value in values)
        return value
    return Check("one of " + ", ".join(f'"{v}"' for v in values), convert)


def matching(pattern: str, allowed: str) -> Check:
    def convert(value):
        _require(isinstance(value, str) and re.fullmatch(pattern, value) is not None)
        return value
    return Check(allowed, convert)


def auto_or(check: Check, meaning: str) -> Check:
    def convert(value):
        return value if value == "auto" else check.convert(value)
    return Check(f'"auto" ({meaning}) or {check.allowed}', convert)


def list_of(item: Check, minimum: int = 0) -> Check:  # minimum: 0 or 1
    def convert(value):
        _require(isinstance(value, (list, tuple)) and len(value) >= minimum)
        return tuple(item.convert(v) for v in value)
    items = "one or more items" if minimum == 1 else "items"
    return Check(f"a list of {items}, each {item.allowed}", convert)


def env_table() -> Check:
    def convert(value):
        _require(isinstance(value, dict))
        for name, text in value.items():
            _require(ENV_NAME.fullmatch(name) is not None and isinstance(text, str))
        return dict(value)
    return Check('a table of NAME = "value" (names of capitals, digits and _; values strings)', convert)


def processes_table() -> Check:
    """[app.processes]: name = "command", or name = {command = "...", count = N}; as {name: {command, count}}."""
    def convert(value):
        _require(isinstance(value, dict))
        processes = {}
        for name, entry in value.items():
            entry = {"command": entry} if isinstance(entry, str) else entry
            _require(isinstance(entry, dict) and set(entry) <= {"command", "count"} and PROCESS_NAME.fullmatch(name)
                     is not None and name not in RESERVED_NAMES)
            processes[name] = {"command": COMMAND.convert(entry.get("command")),
                               "count": _integer(entry.get("count", 1), 1, 16)}
        return processes
    return Check('a table of name = "command" or name = {command = "...", count = 1-16}; names of lowercase letters, '
                 f"digits and - (not {', '.join(RESERVED_NAMES)}); commands one line", convert)


def address_table() -> Check:
    """[fleet.addresses]: host = "address" (an IP address or a DNS name, as nginx's upstream takes it)."""
    def convert(value):
        _require(isinstance(value, dict))
        for address in value.values():
            _require(isinstance(address, str) and re.fullmatch(r"[A-Za-z0-9._-]+|\[[0-9a-fA-F:.]+\]", address))
        return dict(value)
    return Check('a table of host = "address" (an IP address, [IPv6] or a DNS name)', convert)


def schedule_table() -> Check:
    """[app.schedule]: name = {schedule = "...", command = "..."}; each schedule read (deploy/schedules.py)."""
    from deploy.schedules import ScheduleError, parse

    def convert(value):
        _require(isinstance(value, dict))
        jobs = {}
        for name, entry in value.items():
            _require(isinstance(entry, dict) and set(entry) == {"schedule", "command"} and isinstance(
                entry["schedule"], str) and PROCESS_NAME.fullmatch(name) is not None and name not in RESERVED_NAMES)
            try:
                parse(entry["schedule"])
            except ScheduleError as exc:
                raise Invalid(f"[app.schedule] {name}: {exc}") from None
            jobs[name] = {"schedule": entry["schedule"].strip(), "command": COMMAND.convert(entry["command"])}
        return jobs
    return Check('a table of name = {schedule = "cron fields or a systemd calendar form", command = "..."}',
                 convert)


ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
PROCESS_NAME = re.compile(r"[a-z][a-z0-9-]{0,22}[a-z0-9]")
# A process's or job's programs are named <app>-<name>, beside the app's own <app>-blue, -green and -tunnel.
RESERVED_NAMES = ("web", "blue", "green", "tunnel")
# A host as ssh reaches it from here: a name of ~/.ssh/config, or [user@]host[:port].
SSH_HOST = re.compile(r"([A-Za-z0-9._-]+@)?[A-Za-z0-9._-]+(:[0-9]{1,5})?")
FLEET_HOST = matching(SSH_HOST.pattern, 'a host such as "pi1" or "deploy@10.0.0.11"')
COMMAND = matching(r"[^\n\r\0]*\S[^\n\r\0]*", "a command on one line")
NAME = matching(r"[a-z][a-z0-9-]{0,30}[a-z0-9]", "a name of 2-32 lowercase letters, digits and -, "
                                                 "starting with a letter")
WSGI = matching(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*(\(\))?", 'a module:name such as "app:app" or "app:create_app()"')
ENV_VAR = matching(ENV_NAME.pattern, "an environment variable name (capitals, digits and _)")
# server_name values: host names or IPv4 addresses; wildcards as nginx allows them (*.example.com).
HOST = matching(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*",
                'a host name such as "models.example.com" (or "*.example.com")')
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
DOMAIN = matching(rf"({_LABEL}(\.{_LABEL})+)?", 'a DNS name such as "words.example.com", or ""')
SIZE = matching(r"[1-9][0-9]*[km]?", 'an nginx size such as "2m", "512k" or "1048576"')
TIME = matching(r"[1-9][0-9]*[smhd]?", 'an nginx time such as "30s", "10m" or "1h"')
RATE = matching(r"(off|[1-9][0-9]*r/[sm])", '"off" or a rate such as "10r/s" or "300r/m"')
PREFIX = matching(r"(/[A-Za-z0-9._~-]+)*", 'empty (the app at /) or a path such as "/words" (no trailing /)')
PATH = matching(r"\S+", "a path")
OPTIONAL_PATH = matching(r"\S*", 'a path, or "" for the default')
# A path inside the release: relative, without .. (it must not reach outside the release).
_RELATIVE = r"(?!/)(?!(.*/)?\.\.(/|$))\S+"
RELATIVE = matching(_RELATIVE, 'a path inside the release such as "uploads" (not starting with /, no ..)')
OPTIONAL_RELATIVE = matching(f"({_RELATIVE})?", 'a path inside the release (not starting with /, no ..), or ""')
ADDRESS = matching(r"([0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9a-fA-F:.]+\])?",
                   '"" (every address), an IPv4 address such as "10.0.0.5", or an IPv6 one in brackets')
NETWORK = matching(r"[0-9a-fA-F.:]+(/[0-9]{1,3})?|all", 'an address or network such as "127.0.0.1" or "10.0.0.0/8"')


def _firewall_rule(value) -> str:
    """"PORT[/PROTO][ from ADDRESS[/PREFIX]]", written the one way the firewall step reads it back."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    match = re.fullmatch(r"\s*([0-9]{1,5})(?:/(tcp|udp))?(?:\s+from\s+(\S+))?\s*", value)
    _require(match is not None and 1 <= int(match[1]) <= 65535)
    rule = f"{int(match[1])}/{match[2] or 'tcp'}"
    if match[3]:
        network = ipaddress.ip_network(match[3], strict=False)  # ValueError: not an address or network
        whole = network.prefixlen == network.max_prefixlen
        rule += f" from {network.network_address if whole else network}"
    return rule


FIREWALL_RULE = Check('a port to let in, with its protocol and a source if need be: 8080, "51820/udp", '
                      '"9100/tcp from 192.168.1.0/24"', _firewall_rule)

# The names a machine has for itself: never the name others reach a site by.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def public_names(server_names) -> list[str]:
    """The [nginx] server_names others reach the site by: not this machine's own, not an IP address
    (an ACME server certifies DNS names)."""
    return [name for name in server_names if name not in LOOPBACK_NAMES and not re.fullmatch(r"[0-9.]+", name)]


# ---- the declaration ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    key: str  # "section.name"
    default: Any
    doc: str
    check: Check

    @property
    def section(self) -> str:
        return self.key.split(".")[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]


# Secrets a deploy makes up (random, then kept) when none is given: signing keys, for which any
# value will do.
MADE_UP_SECRETS = ("FLASK_SECRET_KEY", "SECRET_KEY")

SETTINGS = [
    Setting("app.name", "modelhost", "The app's name: program, unit, socket and directory names come from it.", NAME),
    Setting("app.wsgi", "app:create_app()", "The WSGI entry point gunicorn serves.", WSGI),
    Setting("app.pythonpath", (), 'Directories of the release put first on the app\'s Python path (PYTHONPATH) for '
            'gunicorn, processes, jobs and commands: ["src"] for a src layout.', list_of(RELATIVE)),
    Setting("app.env", {}, "Environment for the app (FLASK_* settings; see Configuration). Not for secrets.",
            env_table()),
    Setting("app.secrets", ("FLASK_SECRET_KEY",),
            "Names of secret environment variables, kept out of every rendered file: gunicorn reads them "
            "from the env file (mode 0600) at start. FLASK_SECRET_KEY and SECRET_KEY are made up when not "
            "given.", list_of(ENV_VAR)),
    Setting("app.process_manager", "supervisor",
            "What keeps gunicorn running on a host: supervisor or a systemd unit. "
            "The local target always runs its own supervisord.", choice("supervisor", "systemd")),
    Setting("app.processes", {},
            'Processes beside gunicorn, Procfile-style: worker = "python -m myapp.worker" (or {command = "...", '
            "count = 2}). Run in the live release as the app, restarted on the new one after each deploy.",
            processes_table()),
    Setting("app.schedule", {},
            'Jobs: report = {schedule = "0 3 * * *" (cron) or "Mon..Fri 09:00" (systemd), command = "..."}; '
            "systemd timers or cron. Run in the live release as the app, one at a time, never during a deploy.",
            schedule_table()),
    Setting("app.requirements", "",
            "The app's dependency file, relative to deploy.toml; \"\" takes the first of requirements.lock, "
            "requirements.txt and pyproject.toml ([project] dependencies) beside it.", OPTIONAL_PATH),
    Setting("app.instance_path", "instance",
            "Flask's instance folder, relative to the release: kept in the data directory, the same for every "
            'release ("" for none).', OPTIONAL_RELATIVE),
    Setting("app.shared_paths", (), "More directories of the release the app writes to, relative to it: kept in "
            "the data directory, the same for every release.", list_of(RELATIVE)),
    Setting("app.shared_files", (), 'Files of the release the app writes, relative to it (a SQLite database beside '
            'its code, "app.db"): kept in the data directory, the same for every release.', list_of(RELATIVE)),
    Setting("python.extra_index_urls", (),
            "More package indexes for pip on the target, beside the host's own pip configuration (Raspberry Pi OS's "
            "/etc/pip.conf names piwheels).",
            list_of(matching(r"https?://\S+", 'an index URL such as "https://www.piwheels.org/simple"'))),
    Setting("python.system_packages", (),
            "Debian packages the app's environment uses instead of pip's (for boards PyPI has no wheels for); pip "
            "leaves out what they provide. fab provision installs them.",
            list_of(matching(r"python3-[a-z0-9][a-z0-9.+-]*", 'a Debian package such as "python3-numpy"'))),
    Setting("model.path", "",
            'A model file or folder, relative to deploy.toml, stored on the target once per checksum ("" for '
            "none: a model in git ships with the code).", OPTIONAL_PATH),
    Setting("model.env", "MODEL_PATH", "The environment variable that gives the app the model's path.", ENV_VAR),
    Setting("model.shared", True,
            "The workers share one memory-mapped copy of the model (the reference app does); "
            "false counts the model once per worker.", boolean()),
    Setting("model.size_mb", "auto",
            "Model memory for the worker rule; auto sums the sizes of the model's files.",
            auto_or(integer(0), "sum the files")),
    Setting("gunicorn.workers", "auto", "Worker processes; an explicit number wins over the rule.",
            auto_or(integer(1), "2 x cores + 1, capped by memory")),
    Setting("gunicorn.worker_class", "gthread",
            "gthread waits on idle connections without blocking a worker; sync needs nginx's buffering in front.",
            choice("gthread", "sync")),
    Setting("gunicorn.threads", 4, "Threads per gthread worker.", integer(1, 64)),
    Setting("gunicorn.timeout", 60, "Seconds a request may take before its worker is killed and replaced.",
            integer(1)),
    Setting("gunicorn.graceful_timeout", 30, "Seconds a stopping worker gets to finish its requests.",
            integer(1)),
    Setting("gunicorn.max_requests", 2000, "Requests before a worker is replaced (0: never); bounds slow leaks.",
            integer(0)),
    Setting("gunicorn.max_requests_jitter", 200,
            "Random extra requests per worker, so the workers are not all replaced at once.", integer(0)),
    Setting("gunicorn.memory_reserve_mb", 300,
            "Memory left for the OS, nginx, the process manager and gunicorn's master.", integer(0)),
    Setting("gunicorn.worker_memory_mb", 64,
            "Memory one worker is estimated to cost beyond the shared model and its threads, until the workers of "
            "a live release have been measured (then the next release is sized by the measurement).",
            integer(1)),
    Setting("gunicorn.thread_memory_mb", 4,
            "Memory each thread of a worker adds (a request's body and answer in flight): counted in the estimate, "
            "and when threads change after a measurement.", integer(0)),
    Setting("nginx.server_names", ("localhost", "127.0.0.1"),
            "Host names this site answers; other names are dropped by the catch-all server.", list_of(HOST, 1)),
    Setting("nginx.address", "", 'The address nginx listens on, on a host ("" for every address); for example '
            "a private network's address, so the site is reached only through it.", ADDRESS),
    Setting("nginx.port", 80, "Port for HTTP on a host.", integer(1, 65535)),
    Setting("nginx.client_max_body_size", "2m",
            "Largest request body nginx passes on; keep it above the app's FLASK_MAX_CONTENT_LENGTH "
            "(1 MiB by default) so the app's own JSON 413 reaches clients.", SIZE),
    Setting("nginx.static_dir", "", "Static files nginx serves itself at <prefix>/static/, relative to the release "
            '("" lets the app serve them).', OPTIONAL_RELATIVE),
    Setting("nginx.static_max_age", "7d", "How long browsers may cache static files.", TIME),
    Setting("nginx.tls", False, "Serve HTTPS: HTTP redirects to it, except the ACME challenge. Until the "
            "certificate is on the host (`fab certificate` gets one), the site is served over HTTP.", boolean()),
    Setting("nginx.tls_port", 443, "Port for HTTPS.", integer(1, 65535)),
    Setting("nginx.tls_certificate", "",
            'Certificate chain; "" means certbot\'s: /etc/letsencrypt/live/<first public server name>/fullchain.pem.',
            OPTIONAL_PATH),
    Setting("nginx.tls_certificate_key", "",
            'Its private key; "" means certbot\'s: /etc/letsencrypt/live/<first public server name>/privkey.pem.',
            OPTIONAL_PATH),
    Setting("nginx.acme_webroot", "/var/www/letsencrypt",
            "Where certbot --webroot writes HTTP-01 challenges.", PATH),
    Setting("nginx.acme_server", "letsencrypt",
            "The ACME server `fab certificate` asks: Let's Encrypt, its staging server (for trials: no rate "
            "limits to speak of, certificates browsers do not trust), or any ACME directory URL.",
            matching(r"letsencrypt|letsencrypt-staging|https://\S+",
                     '"letsencrypt", "letsencrypt-staging" or an ACME directory URL (https://...)')),
    Setting("nginx.acme_email", "", 'Contact address the ACME server has for the certificates ("" for none: '
            "no expiry warnings by mail).", matching(r"([^@\s]+@[^@\s]+\.[^@\s]+)?", 'an e-mail address, or ""')),
    Setting("nginx.rate_limit", "10r/s", "Requests per client address to the API (limit_req).", RATE),
    Setting("nginx.rate_limit_burst", 20, "Requests above the rate let through at once before 429s.",
            integer(0)),
    Setting("nginx.form_rate_limit", "1r/s", "Form posts (POST outside /api/) per client address, 5 at once "
            "before 429s: each may cost seconds of CPU.", RATE),
    Setting("nginx.connections_per_address", 100, "Requests in progress at once per client address (0: no limit); "
            "above it nginx answers 429.", integer(0)),
    Setting("nginx.basic_auth", False, "Ask for a password (HTTP basic auth) for the whole app.", boolean()),
    Setting("nginx.basic_auth_file", "",
            'The htpasswd file; "" means <app name>.htpasswd in the nginx configuration directory.',
            OPTIONAL_PATH),
    Setting("nginx.cache", False, "Cache answers of the GET model endpoints in nginx (proxy_cache).", boolean()),
    Setting("nginx.cache_valid", "10m", "How long a cached answer is served.", TIME),
    Setting("nginx.cache_max_size", "100m", "Disk the cache may use.", SIZE),
    Setting("nginx.prefix", "", "Serve the app under this URL path, so several apps share one host name.",
            PREFIX),
    Setting("nginx.metrics_allow", ("127.0.0.1", "::1"), "Addresses allowed to read /metrics.",
            list_of(NETWORK)),
    Setting("deploy.keep_releases", 5, "Releases kept on the target for rollback (the live and the previous one "
            "are always kept).", integer(2, 100)),
    Setting("deploy.ready_timeout", 120, "Seconds a new release gets to become ready (see health_path) before the "
            "deploy gives up on it (the old one keeps serving).", integer(5, 3600)),
    Setting("deploy.health_path", "",
            'A GET that answers 200 once the app is ready (e.g. "/readyz"); "" means ready once GET / answers '
            "below 500. A 404 fails the deploy at once.", matching(r"(/\S*)?", 'a path such as "/health", or ""')),
    Setting("deploy.smoke_path", "", 'A GET the new release must answer before it gets traffic; "" for none.',
            matching(r"(/\S*)?", 'a path such as "/api/v1/model", or ""')),
    Setting("deploy.smoke_status", 200, "The status the smoke query must answer.", integer(100, 599)),
    Setting("deploy.smoke_contains", "", "Text the smoke query's answer must contain; {model_version} stands for "
            "the deployed model's version.", matching(r".*", "text")),
    Setting("deploy.release_command", "",
            "A command run once in each new release before it starts (e.g. a migration), as the app, with its "
            "environment and secrets; if it fails the deploy stops and the old release keeps serving.",
            matching(r".*", "a shell command")),
    Setting("expose.relay", "", 'Your server with a public address, as ssh reaches it from here: `fab expose` '
            'serves the app there through an SSH tunnel from its host ("" for none).',
            matching(f"({SSH_HOST.pattern})?", 'a [user@]host[:port], or ""')),
    Setting("expose.domain", "", "The public name the relay serves the app at (its DNS record holds the relay's "
            "address); the relay gets a certificate for it.", DOMAIN),
    Setting("expose.relay_address", "", 'The relay\'s name or address as the app\'s host reaches its sshd ("" for '
            "the host of [expose] relay).", matching(r"[A-Za-z0-9._:-]*", 'a host name or address, or ""')),
    Setting("expose.relay_port", 0, "The relay's sshd port for the tunnel (0: the port of [expose] relay, 22 unless "
            "it names one).", integer(0, 65535)),
    Setting("expose.relay_listen", "", 'The address the relay\'s nginx listens on ("" for every address).', ADDRESS),
    Setting("expose.check_seconds", 30, "How often the tunnel checks the public URL end to end; after 3 failures in "
            "a row it connects again.", integer(5, 3600)),
    Setting("firewall.enabled", True,
            "fab provision turns on a firewall (ufw, else nftables) that lets in only SSH, on the port provision "
            "came in on, and the site's ports; false leaves the host's firewall as it is.", boolean()),
    Setting("firewall.allow", (), "More ports the firewall lets in, for everyone or from an address or network "
            "(monitoring, a VPN).", list_of(FIREWALL_RULE)),
    Setting("fleet.app", (), "The app's hosts, as ssh reaches them: with no -H, tasks act on all of them (deploy and "
            "rollback one at a time, stopping at the first failure; the others at once).", list_of(FLEET_HOST)),
    Setting("fleet.balancer", (), "Hosts (as ssh reaches them) whose nginx spreads the site over the app hosts; "
            "a deploy takes each app host out of it while it is deployed.", list_of(FLEET_HOST)),
    Setting("fleet.addresses", {}, 'The private address of a host: pi1 = "10.0.0.11", where the balancer reaches '
            "an app host, or a balancer's that app hosts see (default: the address ssh connects to).", address_table()),
    Setting("fleet.at_once", 1, "App hosts a rolling deploy takes out of the balancer at a time.", integer(1, 100)),
    Setting("local.root", "~/.local/share/modelhost", "Where the local target keeps everything.", PATH),
    Setting("local.port", 8080, "Port of the local target's nginx on 127.0.0.1.", integer(1024, 65535)),
    Setting("local.start_at_boot", False, "Start the local target's supervisord (and so nginx and the live app) "
            "when the machine boots: a crontab @reboot line of yours, put there (or taken away) by fab deploy.",
            boolean()),
]

BY_KEY = {s.key: s for s in SETTINGS}
SECTIONS = list(dict.fromkeys(s.section for s in SETTINGS))


# ---- loading -----------------------------------------------------------------------------------

def toml_value(value: Any) -> str:
    """A value as it is written in TOML, for messages and docs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def did_you_mean(word: str, options, form: str = "{}") -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {form.format(close[0])}?" if close else ""


def check_settings(data: dict, source: str = SETTINGS_FILE) -> SimpleNamespace:
    """Check a parsed deploy.toml against the declaration; returns settings.section.name values."""
    problems = []
    for section, table in data.items():
        if section not in SECTIONS:
            problems.append(f"unknown section [{section}]{did_you_mean(section, SECTIONS, '[{}]')}")
        elif not isinstance(table, dict):
            problems.append(f"{section} = {toml_value(table)}: must be a section [{section}]")
        else:
            names = [s.name for s in SETTINGS if s.section == section]
            problems += [f"[{section}] {name} = {toml_value(value)}: unknown setting{did_you_mean(name, names)}"
                         f" (known: {', '.join(names)})" for name, value in table.items() if name not in names]
    values = {}
    for setting in SETTINGS:
        table = data.get(setting.section)
        given = table.get(setting.name, setting.default) if isinstance(table, dict) else setting.default
        try:
            values[setting.key] = setting.check(given)
        except Invalid as exc:
            problems.append(f"[{setting.section}] {setting.name} = {toml_value(given)}: {exc}")
    if not problems:
        problems = cross_checks(values)
    if problems:
        raise SettingsError(f"{source}: " + ("\n  ".join(["bad settings:"] + problems)
                                             if len(problems) > 1 else problems[0]))
    sections = {name: SimpleNamespace() for name in SECTIONS}
    for key, value in values.items():
        section, name = key.split(".", 1)
        setattr(sections[section], name, value)
    # Where the app hosts see the balancers' requests come from: [fleet] addresses, and for each
    # balancer without one the address ssh reaches it at (tasks.load_settings fills those in).
    fleet = sections["fleet"]
    fleet.balancer_addresses = tuple(fleet.addresses[b] for b in fleet.balancer if b in fleet.addresses)
    return SimpleNamespace(**sections, source=None)  # source: the deploy.toml read (load sets it)


def size_bytes(size: str) -> int:
    """An nginx size ("2m", "512k", "100") in bytes."""
    return int(size.rstrip("km")) * {"k": 1024, "m": 1024 * 1024}.get(size[-1], 1)


def cross_checks(values: dict) -> list[str]:
    """Settings that are fine alone but wrong together."""
    problems = []
    clashing = sorted(set(values["app.secrets"]) & set(values["app.env"]))
    if clashing:
        problems.append(f"[app] env sets {', '.join(clashing)}, which [app] secrets lists as secret: "
                        "keep secrets out of deploy.toml (remove them from env)")
    if values["gunicorn.max_requests_jitter"] > values["gunicorn.max_requests"] > 0:
        problems.append(f"[gunicorn] max_requests_jitter = {values['gunicorn.max_requests_jitter']}: must not "
                        f"exceed max_requests ({values['gunicorn.max_requests']})")
    app_limit = values["app.env"].get("FLASK_MAX_CONTENT_LENGTH", str(1024 * 1024))
    body = values["nginx.client_max_body_size"]
    if app_limit.isdigit() and size_bytes(body) < int(app_limit):
        problems.append(f"[nginx] client_max_body_size = {toml_value(body)}: must be at least the app's "
                        f"FLASK_MAX_CONTENT_LENGTH ({app_limit} bytes), or nginx answers 413 with HTML "
                        "before the app can answer with JSON")
    kept = [p.strip("/") for p in (values["app.instance_path"], *values["app.shared_paths"],
                                   *values["app.shared_files"]) if p]
    for path in kept:
        if path.split("/")[0] == KIT_DIR:
            problems.append(f"{path!r} in [app] instance_path, shared_paths or shared_files: {KIT_DIR}/ is "
                            "modelhost's own place in a release")
        inside = [other for other in kept if other != path and other.startswith(path + "/")]
        if inside or kept.count(path) > 1:
            problems.append(f"[app] instance_path, shared_paths and shared_files name {path!r} "
                            f"{'more than once' if not inside else 'and ' + repr(inside[0]) + ', inside it'}: "
                            "list each kept path once")
            break
    if bool(values["expose.relay"]) != bool(values["expose.domain"]):
        given, missing = ("relay", "domain") if values["expose.relay"] else ("domain", "relay")
        problems.append(f"[expose] {given} is set but {missing} is not: fab expose needs both (or neither)")
    both = sorted(set(values["app.processes"]) & set(values["app.schedule"]))
    if both:
        problems.append(f"{both[0]!r} names both a process and a scheduled job: their programs are named "
                        f"<app>-<name>, so give them different names")
    for key in ("fleet.app", "fleet.balancer"):
        twice = sorted({host for host in values[key] if values[key].count(host) > 1})
        if twice:
            problems.append(f"[fleet] {key.split('.')[1]} names {', '.join(twice)} more than once: list each host once")
    both = sorted(set(values["fleet.app"]) & set(values["fleet.balancer"]))
    if both:
        problems.append(f"[fleet] {both[0]} is both an app host and a balancer: a balancer's nginx takes the site's "
                        "port, so give the balancer a host of its own")
    if values["fleet.balancer"] and not values["fleet.app"]:
        problems.append("[fleet] balancer is set but app is not: list the app hosts it spreads the site over")
    unknown = sorted(set(values["fleet.addresses"]) - set(values["fleet.app"]) - set(values["fleet.balancer"]))
    if unknown:
        problems.append(f"[fleet] addresses names {', '.join(unknown)}, which is in neither [fleet] app nor balancer")
    if values["fleet.balancer"] and values["expose.domain"]:
        problems.append("[fleet] balancer and [expose]: the balancer is the site's public face; expose one or the "
                        "other")
    if values["nginx.tls"] and values["nginx.tls_port"] == values["nginx.port"]:
        problems.append(f"[nginx] tls_port = {values['nginx.tls_port']}: must differ from port")
    return problems


def load(path: str | Path = SETTINGS_FILE) -> SimpleNamespace:
    """Read and check deploy.toml; a missing file means every default."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such file: `modelhost init` in the app's checkout writes one") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None
    settings = check_settings(data, str(path))
    settings.source = path
    return settings


def defaults() -> SimpleNamespace:
    """Every setting at its default (what an empty deploy.toml gives)."""
    return check_settings({})


# ---- docs --------------------------------------------------------------------------------------

TABLE_START = "<!-- settings table: made by `python -m deploy.settings --readme` -->"
TABLE_END = "<!-- end of settings table -->"


def markdown_table() -> str:
    """The README's settings table, from the declaration."""
    rows = ["| setting | default | meaning; allowed values |", "|---|---|---|"]
    for setting in SETTINGS:
        doc = f"{setting.doc} Allowed: {setting.check.allowed}.".replace("|", "\\|")
        rows.append(f"| `[{setting.section}] {setting.name}` | `{toml_value(setting.default)}` | {doc} |")
    return "\n".join([TABLE_START, *rows, TABLE_END])


def replace_table(readme: str) -> str:
    """The README text with its settings table made anew."""
    start, end = readme.index(TABLE_START), readme.index(TABLE_END) + len(TABLE_END)
    return readme[:start] + markdown_table() + readme[end:]


def main(argv: list[str]) -> int:
    if argv == ["--readme"]:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        readme.write_text(replace_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"rewrote the settings table in {readme}")
        return 0
    print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
