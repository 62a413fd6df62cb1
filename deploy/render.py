"""Render every config of a target from settings, layout and host facts: pure, reproducible text.

The templates live at the top of the checkout (nginx/, supervisor/, systemd/, gunicorn/), where an
ops engineer can read and copy them. Rendering never runs a command and never reads the clock, so
the same inputs give the same bytes and a diff between two versions shows what changed.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from deploy import schedules
from deploy.facts import HostFacts
from deploy.layout import COLORS, Layout, local_layout
from deploy.settings import KIT_DIR, public_names, size_bytes
from deploy.workers import Measured, WorkerPlan, model_size_mb, plan_workers

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = Path(__file__).resolve().parent
# The config templates (nginx/, supervisor/, systemd/, gunicorn/): at the top of a checkout, where
# an ops engineer reads and copies them; in an installed wheel, packaged as deploy/configs/.
CONFIGS = ROOT if (ROOT / "nginx" / "site.conf.j2").is_file() else DEPLOY / "configs"
# nginx >= 1.25.1 wants `http2 on;`; older versions only know `listen ... http2` (newer ones
# still accept it, with a deprecation warning, so it is also the form for an unknown version).
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)


# The first line of a render's README: how `fab render` knows a directory holds an earlier render.
README_TITLE = "# Configs for "


class RenderError(Exception):
    """The apps cannot be served together as configured; the message says which and why."""


@dataclass(frozen=True)
class RenderedFile:
    path: str  # in the output directory
    destination: Path | None  # on the target (None: the README, which stays in the output directory)
    content: str
    about: str  # one line for the README
    reader: str = ""  # who reads it: nginx, programs (supervisor or systemd), release (gunicorn), boot


@dataclass(frozen=True)
class App:
    """One app to render for a target: its settings, where it lives there, how many workers."""
    settings: object
    layout: Layout
    plan: WorkerPlan
    # The TLS certificate is on the target; without it a site with [nginx] tls is served over HTTP
    # (with the ACME location), so that `fab certificate` can get one.
    certificate: bool = True


# A unix socket's path must fit in sockaddr_un.sun_path: 108 bytes with the final NUL.
SOCKET_PATH_MAX = 107


def plan_app(settings, layout: Layout, facts: HostFacts, base_dir: Path | None = None,
             model_mb: float | None = None, measured: Measured | None = None) -> App:
    """The app's worker plan on this host; the model's size is the sum of its files (below base_dir,
    by default deploy.toml's directory) unless set (in deploy.toml, or here as model_mb: the size of
    the model being deployed); a worker's cost is the measured one when given, else the settings'."""
    longest = max((layout.socket(color) for color in COLORS), key=lambda p: len(str(p).encode()))
    if len(str(longest).encode()) > SOCKET_PATH_MAX:
        raise RenderError(f"the socket path {longest} is {len(str(longest).encode())} bytes; unix sockets "
                          f"allow {SOCKET_PATH_MAX}: {layout.too_long_fix}")
    if settings.model.size_mb != "auto":
        model_mb = settings.model.size_mb
    elif model_mb is None:
        base_dir = base_dir or (Path(settings.source).resolve().parent if settings.source else ROOT)
        model_mb = model_size_mb(base_dir / settings.model.path) if settings.model.path else 0
    workers = settings.gunicorn.workers
    plan = plan_workers(
        cores=facts.cores, memory_total_mb=facts.memory_total_mb, memory_available_mb=facts.memory_available_mb,
        model_mb=model_mb, shared=settings.model.shared, reserve_mb=settings.gunicorn.memory_reserve_mb,
        worker_mb=settings.gunicorn.worker_memory_mb, threads=threads_of(settings),
        thread_mb=settings.gunicorn.thread_memory_mb, measured=measured, explicit=None if workers == "auto" else workers)
    return App(settings, layout, plan)


def threads_of(settings) -> int:
    """A worker's threads: gunicorn turns sync workers with threads > 1 into gthread ones, so sync means one."""
    return settings.gunicorn.threads if settings.gunicorn.worker_class == "gthread" else 1


# ---- filters: values written safely into each tool's syntax -----------------------------------

def python_literal(value) -> str:
    """A string, or a list or dict of strings, as Python source (JSON's syntax is Python's for these)."""
    return json.dumps(value, ensure_ascii=False)


def supervisor_environment(env: dict) -> str:
    """KEY="value",... for supervisor's environment=; % is doubled (supervisor expands %(name)s).

    supervisor splits it with shlex in non-POSIX mode: no escapes, so a value is put in the quotes
    it does not contain, and one with both kinds (or ending in one) cannot be written.
    """
    def quote(name: str, value: str) -> str:
        quote = '"' if '"' not in value else "'"
        if quote in value or (value and (value[0] in "'\"" or value[-1] in "'\"")):
            raise RenderError(f"{name}={value!r}: supervisor's environment= cannot hold this value")
        return quote + value.replace("%", "%%") + quote
    return ",".join(f"{name}={quote(name, value)}" for name, value in env.items())


def systemd_escape(value: str) -> str:
    """A value for a unit file: % starts a specifier, so it is doubled."""
    return value.replace("%", "%%")


# Stands for the unit's instance name (the color) in values until they are escaped.
INSTANCE = "\0instance\0"


def systemd_environment(env: dict) -> list[str]:
    """Environment= lines, each one assignment in double quotes; INSTANCE becomes %i."""
    def quote(value: str) -> str:
        return systemd_escape(value).replace("\\", "\\\\").replace('"', '\\"').replace(INSTANCE, "%i")
    return [f'Environment="{name}={quote(value)}"' for name, value in env.items()]


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader([CONFIGS, DEPLOY]), undefined=jinja2.StrictUndefined, autoescape=False,
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
ENVIRONMENT.filters.update(pyliteral=python_literal, supervisor_environment=supervisor_environment,
                           systemd_escape=systemd_escape, systemd_environment=systemd_environment)


def template(name: str, **values) -> str:
    return ENVIRONMENT.get_template(name).render(**values)


# ---- what each template gets ------------------------------------------------------------------

def process_environment(app: App, release: Path) -> dict:
    """The environment the process manager gives gunicorn in a release directory (a color's link,
    or one release's own directory for `run`); the app's own [app] env is in gunicorn.conf.py."""
    kit = release / KIT_DIR
    model = app.settings.model
    pythonpath = ":".join(str(release / path) for path in app.settings.app.pythonpath)
    return {
        "HOME": str(app.layout.home),
        "PATH": f"{kit}/venv/bin:/usr/local/bin:/usr/bin:/bin",
        **({"PYTHONPATH": pythonpath} if pythonpath else {}),
        # The app's persistent data: kept outside the releases, the same for every one of them.
        "DATA_DIR": str(app.layout.data_dir),
        **({model.env: str(model_path(kit, model.path))} if model.path else {}),
        # glibc makes a malloc arena per thread; with gthread workers that is memory per thread
        # that is never given back. Read by malloc at process start, so it must be set here.
        "MALLOC_ARENA_MAX": "2",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }


def model_path(kit: Path, path: str) -> Path:
    """Where a release's model is: the kit's link to the stored copy, under the model's own name."""
    return kit / "model" / Path(path).name


def gunicorn_values(app: App) -> dict:
    s = app.settings
    return dict(
        app=app.layout.app, wsgi=s.app.wsgi, explanation=app.plan.explanation, workers=app.plan.workers,
        worker_class=s.gunicorn.worker_class, threads=threads_of(s),
        timeout=s.gunicorn.timeout,
        graceful_timeout=s.gunicorn.graceful_timeout, max_requests=s.gunicorn.max_requests,
        max_requests_jitter=s.gunicorn.max_requests_jitter, nginx_group=app.layout.nginx_group,
        environment=dict(sorted(s.app.env.items())), secrets_file=str(app.layout.env_file),
        max_body=size_bytes(s.nginx.client_max_body_size),
        secrets=list(s.app.secrets))


def render_gunicorn_conf(app: App) -> str:
    return template("gunicorn/gunicorn.conf.py.j2", **gunicorn_values(app))


# How soon nginx and the process manager are started again after they die (hosts).
RESTART_SECONDS = 2
# Debian's units leave a dead daemon's processes running (KillMode=): what the drop-in changes.
DEBIAN_KILL_MODES = {"nginx": "mixed", "supervisor": "process"}
KEEPER = Path("/usr/local/sbin/modelhost-keeper")


def restart_dropin(service: str) -> str:
    """A systemd drop-in: the service is restarted soon after it dies, with what it left stopped."""
    return template("systemd/restart.conf.j2", service=service, restart_sec=RESTART_SECONDS,
                    debian_kill_mode=f"KillMode={DEBIAN_KILL_MODES[service]}")


def keeper_script(layout: Layout, services: list[str]) -> str:
    """The init.d hosts' keeper: services (nginx, supervisor) started again after they die."""
    pid_files = {"nginx": (layout.nginx_pid_file, 5), "supervisor": (layout.supervisord_pid_file, 45)}
    return template("initd/modelhost-keeper.j2", interval=RESTART_SECONDS,
                    services=[(name, *pid_files[name]) for name in services])


def keeper_init() -> str:
    return template("initd/modelhost-keeper.init.j2", keeper=KEEPER)


def logrotate_conf(layout: Layout) -> str:
    """logrotate's file for the app's nginx logs on a host."""
    return template("nginx/logrotate.j2", layout=layout)


# certbot runs the scripts here after each renewal (Debian's certbot.timer, or its cron job).
RENEWAL_HOOK = Path("/etc/letsencrypt/renewal-hooks/deploy/modelhost-nginx")


def renewal_hook(systemd: bool) -> str:
    """certbot's deploy hook: nginx checked, then reloaded gracefully, the host's way."""
    return template("nginx/renewal-hook.sh.j2", path=RENEWAL_HOOK,
                    reload="systemctl reload nginx" if systemd else "service nginx reload")


def tmpfiles_conf(layout: Layout) -> str:
    """systemd-tmpfiles' line that makes the socket directory at boot."""
    return template("systemd/tmpfiles.conf.j2", layout=layout)


def standalone_gunicorn_conf(settings, workers: int) -> str:
    """The gunicorn config for running by hand (`fab serve`, tests): bind and workers on the command line."""
    plan = WorkerPlan(workers, f"{workers}, given on the command line (--workers)")
    return render_gunicorn_conf(App(settings, local_layout(settings), plan))


def manager_values(app: App, live: str) -> dict:
    graceful = app.settings.gunicorn.graceful_timeout
    return dict(layout=app.layout, wsgi=app.settings.app.wsgi, colors=COLORS, live=live, instance=INSTANCE,
                kit_dir=KIT_DIR,
                graceful_timeout=graceful, stop_timeout=graceful + 15,
                environment=lambda color: process_environment(app, app.layout.release(color)))


# ---- the app's processes and scheduled jobs ([app.processes], [app.schedule]) ----------------

@dataclass(frozen=True)
class Process:
    name: str
    command: str
    count: int
    program: str  # supervisor's program (and group), or the systemd template unit's name before @


@dataclass(frozen=True)
class Job:
    name: str
    schedule: str  # as given
    command: str
    unit: str  # the systemd timer's and service's name, <app>-<name>
    calendars: tuple[str, ...]  # OnCalendar= values
    cron: str  # cron's five fields ("" when cron cannot say the schedule: systemd only)


def processes_of(app: App) -> list[Process]:
    return [Process(name, p["command"], p["count"], app.layout.program(name))
            for name, p in sorted(app.settings.app.processes.items())]


def jobs_of(app: App, cron: bool) -> list[Job]:
    """The app's scheduled jobs; with cron (a target without systemd timers) each must be sayable in cron."""
    jobs = []
    for name, job in sorted(app.settings.app.schedule.items()):
        calendar = schedules.parse(job["schedule"])
        try:
            line = schedules.to_cron(calendar, job["schedule"])
        except schedules.ScheduleError as exc:
            if cron:
                raise RenderError(f"[app.schedule] {name}: {exc}") from None
            line = ""
        jobs.append(Job(name, job["schedule"], job["command"], app.layout.program(name),
                        tuple(schedules.to_systemd(calendar)), line))
    return jobs


def launch_config(app: App) -> str:
    """launch.json: what deploy/launch.py needs to start the app's processes and jobs; no secrets (it
    reads them from the env file when it starts a command)."""
    layout, jobs = app.layout, jobs_of(app, cron=False)
    return json.dumps({
        "root": str(layout.root), "secrets": str(layout.env_file), "deploy_lock": str(layout.lock),
        "env": process_environment(app, Path("{release}")), "app_env": dict(sorted(app.settings.app.env.items())),
        "processes": {p.name: p.command for p in processes_of(app)},
        "jobs": {job.name: job.command for job in jobs},
        # Where systemd timers run the jobs, the launcher asks them whether a run is a catch-up.
        "timers": {job.name: {"unit": f"{job.unit}.timer", "calendars": job.calendars} for job in jobs},
        "user": layout.secrets_owner, "job_dir": str(layout.job_dir), "log_bytes": 1024 * 1024, "log_backups": 3,
    }, indent=2) + "\n"


def process_files(app: App) -> dict[Path, str]:
    """The processes' program files: one supervisor file, or a systemd template unit per process."""
    layout, processes = app.layout, processes_of(app)
    values = dict(layout=layout, launcher=layout.launcher, stop_timeout=app.settings.gunicorn.graceful_timeout + 15)
    if layout.process_manager == "systemd":
        return {layout.systemd_dir / f"{p.program}@.service":
                template("systemd/process@.service.j2", process=p, **values) for p in processes}
    if not processes:
        return {}
    return {layout.supervisor_dir / f"{layout.app}-processes.conf": template("supervisor/processes.conf.j2",
                                                                            processes=processes, **values)}


def schedule_files(app: App, timers: bool) -> dict[Path, str]:
    """The jobs' systemd timers and services (timers: a host with systemd), or their cron lines: a
    host's /etc/cron.d file, or on the local target the lines for your crontab (kept in its config
    directory)."""
    layout = app.layout
    jobs = jobs_of(app, cron=not timers)
    values = dict(layout=layout, launcher=layout.launcher, job_dir=layout.job_dir)
    if timers:
        files = {}
        for job in jobs:
            files[layout.systemd_dir / f"{job.unit}.timer"] = template("systemd/job.timer.j2", job=job, **values)
            files[layout.systemd_dir / f"{job.unit}.service"] = template("systemd/job.service.j2", job=job, **values)
        return files
    if not jobs:
        return {}
    system = layout.cron_dir is not None
    path = layout.cron_dir / layout.app if system else layout.config_dir / "crontab"
    return {path: template("cron/jobs.j2", jobs=jobs, system=system, marker="" if system else cron_marker(layout),
                           **values)}


def cron_marker(layout: Layout) -> str:
    """Ends each of the app's lines in your crontab (the local target): what fab deploy keeps there."""
    return f"  # modelhost job: {layout.root}"


def site_app(app: App, live: str) -> dict:
    """What the site template needs to know about one app."""
    s, layout = app.settings, app.layout
    return dict(
        name=layout.app, zone=layout.app.replace("-", "_"), prefix=s.nginx.prefix, color=live, relay=False,
        upstreams=(), upstream=f"unix:{layout.socket(live)}", rate_limit=s.nginx.rate_limit,
        burst=s.nginx.rate_limit_burst, form_rate_limit=s.nginx.form_rate_limit,
        cache=s.nginx.cache, cache_dir=layout.cache_dir, cache_valid=s.nginx.cache_valid,
        cache_max_size=s.nginx.cache_max_size, client_max_body_size=s.nginx.client_max_body_size,
        timeout=s.gunicorn.timeout, proxy_timeout=s.gunicorn.timeout + 5,
        basic_auth=s.nginx.basic_auth,
        htpasswd=s.nginx.basic_auth_file or layout.nginx_dir / f"{layout.app}.htpasswd",
        static_dir=(layout.release(live) / s.nginx.static_dir) if s.nginx.static_dir else "",
        static_max_age=s.nginx.static_max_age, metrics_allow=s.nginx.metrics_allow)


def site_key(app: App) -> dict:
    """The server-level settings: apps that share host names must agree on all of them."""
    s, layout = app.settings, app.layout
    tls = layout.tls(s) and app.certificate
    certificate, key = certificate_paths(s)
    return dict(server_names=s.nginx.server_names, http_listen=layout.http_listen, tls=tls,
                connections_per_address=s.nginx.connections_per_address,
                tls_listen=layout.tls_listen if tls else "", certificate=certificate, certificate_key=key,
                acme_webroot=s.nginx.acme_webroot, relay=False, balancers=s.fleet.balancer_addresses,
                # fab expose's tunnel comes in here ("" with no [expose] domain)
                tunnel=str(layout.tunnel_socket) if s.expose.domain else "", tunnel_domain=s.expose.domain)


def certificate_paths(settings) -> tuple[str, str]:
    """The TLS certificate chain and key: as set, or where certbot puts them for the first public name."""
    live = f"/etc/letsencrypt/live/{(public_names(settings.nginx.server_names) or settings.nginx.server_names)[0]}"
    return (settings.nginx.tls_certificate or f"{live}/fullchain.pem",
            settings.nginx.tls_certificate_key or f"{live}/privkey.pem")


def group_sites(apps: list[App]) -> list[dict]:
    """Apps grouped by the host names they answer; refuses apps that would collide in nginx."""
    names = [app.layout.app for app in apps]
    if len(set(names)) < len(names):
        raise RenderError(f"two apps are named {sorted({n for n in names if names.count(n) > 1})[0]}: "
                          "set a different [app] name in one deploy.toml")
    sites: list[dict] = []
    for app in apps:
        key = site_key(app)
        site = next((s for s in sites if set(s["key"]["server_names"]) & set(key["server_names"])), None)
        if site is None:
            sites.append({"key": key, "apps": [app]})
            continue
        other = site["apps"][0].layout.app
        differ = [k for k in key if key[k] != site["key"][k]]
        if differ:
            raise RenderError(
                f"apps {other} and {app.layout.app} share the host name(s) "
                f"{', '.join(sorted(set(key['server_names']) & set(site['key']['server_names'])))} but differ in "
                f"{', '.join(differ)}: apps on one host name must agree on [nginx] server_names, port, tls, "
                "connections_per_address and the certificate (give each app its own host name, or make these the same)")
        prefixes = {a.settings.nginx.prefix: a.layout.app for a in site["apps"]}
        if app.settings.nginx.prefix in prefixes:
            raise RenderError(
                f"apps {prefixes[app.settings.nginx.prefix]} and {app.layout.app} are both served at "
                f"{app.settings.nginx.prefix or '/'} on {key['server_names'][0]}: give each a different "
                "[nginx] prefix")
        site["apps"].append(app)
    return sites


def site_file_name(server_names) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", server_names[0].replace("*.", "wildcard.")) + ".conf"


# ---- the whole target ---------------------------------------------------------------------------

def destination_path(layout: Layout, destination: Path) -> str:
    """Where a file goes in the output directory: its place on the target, below the target's base."""
    return str(destination.relative_to(layout.base))


def nginx_files(sites: list[dict], layout: Layout, facts: HostFacts) -> list[tuple[Path, str, str]]:
    """(destination, content, about) of each site's file (its "values" for site.conf.j2), the
    host's modelhost.conf, and the DH group when a site serves TLS."""
    http2_directive = facts.nginx_version is not None and facts.nginx_version >= HTTP2_DIRECTIVE_SINCE
    files = []
    for site in sites:
        values = {**site["values"], "http2_directive": http2_directive, "dhparam": layout.nginx_dir / "ffdhe2048.pem"}
        files.append((layout.nginx_sites / site_file_name(site["key"]["server_names"]),
                      template("nginx/site.conf.j2", site=values),
                      f"nginx site for {', '.join(a['name'] for a in values['apps'])}"))
    files.append((layout.nginx_host_file, template(
        "nginx/modelhost.conf.j2", http_listens=sorted({s["key"]["http_listen"] for s in sites}),
        balancers=sorted({address for s in sites for address in s["key"]["balancers"]}),
        tls_listens=sorted({s["key"]["tls_listen"] for s in sites} - {""})),
        "nginx, once per host: the catch-all servers that drop unknown host names, the API's JSON errors"))
    if any(site["key"]["tls"] for site in sites):
        files.append((layout.nginx_dir / "ffdhe2048.pem", (CONFIGS / "nginx" / "ffdhe2048.pem").read_text(),
                      "nginx: the RFC 7919 Diffie-Hellman group for the DHE ciphers (ssl_dhparam)"))
    return files


# ---- fab expose: the relay's site, and the tunnel's program on the app's target ------------------

RELAY = "modelhost-relay"  # the relay's tunnel user; also the name its own lock's directory is under


def relay_settings(settings) -> object:
    """The app's settings as its relay serves it: at [expose] domain, over HTTPS once the relay has
    the certificate, on the relay's own addresses, with the app's limits; no static files, cache or
    password (the app's own nginx behind the tunnel has those), and /metrics for no one."""
    relayed = copy.deepcopy(settings)
    relayed.app.name = RELAY
    nginx = relayed.nginx
    nginx.server_names, nginx.address = (settings.expose.domain,), settings.expose.relay_listen
    nginx.port, nginx.tls_port = 80, 443
    nginx.tls, nginx.tls_certificate, nginx.tls_certificate_key = True, "", ""
    nginx.basic_auth, nginx.cache, nginx.static_dir, nginx.metrics_allow = False, False, "", ()
    relayed.expose.domain = ""  # the relay has no tunnel of its own to take requests from
    return relayed


def relay_upstream(domain: str) -> str:
    """The relay site's upstream name for a domain (also its limit zones' prefix)."""
    return "relay-" + re.sub(r"[^a-z0-9]+", "-", domain.lower())


def render_relay(relayed, layout: Layout, facts: HostFacts, port: int, certificate: bool) -> dict[Path, str]:
    """The relay's nginx files for one exposed app: its site proxying to the tunnel's end
    (127.0.0.1:port), and the host's modelhost.conf."""
    app = App(relayed, layout, WorkerPlan(1, "relay"), certificate=certificate)
    name = relay_upstream(relayed.nginx.server_names[0])
    site = {"key": site_key(app)}
    site["values"] = {**site["key"], "relay": True, "logs": None, "apps": [
        {**site_app(app, COLORS[0]), "name": name, "zone": name.replace("-", "_"), "relay": True,
         "upstream": f"127.0.0.1:{port}"}]}
    return {destination: content for destination, content, _ in nginx_files([site], layout, facts)}


# ---- a fleet's balancer: nginx spreading the site over the app hosts ([fleet]) ---------------------

def balancer_settings(settings) -> object:
    """The app's settings as the fleet's balancer serves it: the app's names, ports, TLS, limits and
    /metrics rules; no static files, cache or password (each app host's own nginx has those)."""
    balanced = copy.deepcopy(settings)
    balanced.app.name = f"{settings.app.name}-fleet"
    balanced.nginx.basic_auth, balanced.nginx.cache, balanced.nginx.static_dir = False, False, ""
    balanced.expose.domain = ""
    balanced.fleet.balancer, balanced.fleet.balancer_addresses = [], ()  # its own clients are the world
    return balanced


@dataclass(frozen=True)
class Upstream:
    """An app host as the balancer reaches it."""
    host: str  # as [fleet] app names it
    address: str  # host:port of its site
    down: bool = False  # out of the balancer: being deployed


def render_balancer(balanced, layout: Layout, facts: HostFacts, upstreams: list[Upstream],
                    certificate: bool) -> dict[Path, str]:
    """The balancer's nginx files: its site proxying to the app hosts' sites, and the host's modelhost.conf."""
    app = App(balanced, layout, WorkerPlan(1, "balancer"), certificate=certificate)
    site = {"key": site_key(app)}
    site["values"] = {**site["key"], "relay": True, "logs": layout.nginx_logs, "apps": [
        {**site_app(app, COLORS[0]), "relay": True, "upstream": "", "upstreams": upstreams}]}
    return {destination: content for destination, content, _ in nginx_files([site], layout, facts)}


def tunnel_program(layout: Layout, manager: str) -> tuple[Path, str]:
    """The tunnel's program file for the process manager (supervisor or systemd): where it goes, and it."""
    values = dict(layout=layout, python="/usr/bin/python3", program=f"{layout.app}-tunnel",
                  restart_sec=RESTART_SECONDS)
    if manager == "systemd":
        return layout.systemd_dir / f"{layout.app}-tunnel.service", template("systemd/tunnel.service.j2", **values)
    return layout.supervisor_dir / f"{layout.app}-tunnel.conf", template("supervisor/tunnel.conf.j2", **values)


def relay_sshd(interval: int, count: int) -> str:
    """The relay's sshd drop-in: what the tunnel user may do."""
    return template("ssh/relay.conf.j2", user=RELAY, interval=interval, count=count)


def timers(layout: Layout, facts: HostFacts) -> bool:
    """Scheduled jobs are systemd timers: on a host that runs systemd (cron elsewhere, and on the local target)."""
    return layout.cron_dir is not None and facts.systemd


def render(apps: list[App], facts: HostFacts, live: str = "blue") -> list[RenderedFile]:
    """Every file of the target, in a stable order; apps share the host's nginx and process manager."""
    if not apps:
        raise RenderError("nothing to render: no apps")
    if live not in COLORS:
        raise RenderError(f"live color {live!r}: must be one of {', '.join(COLORS)}")
    layout = apps[0].layout
    files: list[RenderedFile] = []

    def add(destination: Path, content: str, about: str, reader: str) -> None:
        files.append(RenderedFile(destination_path(layout, destination), destination, content, about, reader))

    sites = group_sites(apps)
    for site in sites:
        site["file"] = site_file_name(site["key"]["server_names"])
        # A host's site logs beside its (first) app's; the local nginx's go to supervisord.
        first = site["apps"][0].layout
        site["values"] = {**site["key"], "apps": [site_app(app, live) for app in site["apps"]],
                          "logs": None if first.nginx_conf else first.nginx_logs}
    for destination, content, about in nginx_files(sites, layout, facts):
        add(destination, content, about, "nginx")
    if layout.nginx_conf:
        add(layout.nginx_conf, template("nginx/nginx.conf.j2", layout=layout),
            "nginx's main configuration for the local target (run as you)", "nginx")
    if layout.supervisord_conf:
        add(layout.supervisord_conf, template("supervisor/supervisord.conf.j2", layout=layout),
            "supervisord's configuration for the local target (run as you)", "programs")
    for app in apps:
        add(app.layout.gunicorn_conf(live), render_gunicorn_conf(app),
            f"gunicorn settings for {app.layout.app} ({app.plan.workers} workers), in the release directory", "release")
        if app.layout.process_manager == "systemd":
            add(app.layout.systemd_dir / f"{app.layout.app}@.service",
                template("systemd/app@.service.j2", **manager_values(app, live)),
                f"systemd unit for {app.layout.app}: {app.layout.app}@blue and @green", "programs")
        else:
            add(app.layout.supervisor_dir / f"{app.layout.app}.conf",
                template("supervisor/program.conf.j2", **manager_values(app, live)),
                f"supervisor programs {app.layout.app}-blue and {app.layout.app}-green", "programs")
        for destination, content in process_files(app).items():
            add(destination, content, f"processes of {app.layout.app}: "
                f"{', '.join(p.name for p in processes_of(app))}", "processes")
        for destination, content in schedule_files(app, timers=timers(app.layout, facts)).items():
            add(destination, content, f"scheduled jobs of {app.layout.app}", "schedule")
        if app.settings.app.processes or app.settings.app.schedule:
            add(app.layout.config_dir / "launch.json", launch_config(app),
                "what starts the app's processes and jobs (launch.py, uploaded beside it) needs to know", "launcher")
        if app.layout.tmpfiles_file and facts.systemd:
            add(app.layout.tmpfiles_file, tmpfiles_conf(app.layout),
                f"the socket directory {app.layout.run_dir}, made again at every boot", "boot")
    readme = template("templates/README.md.j2", title=README_TITLE, files=files, apps=apps, facts=facts,
                      layout=layout, live=live, sites=sites)
    return [RenderedFile("README.md", None, readme, "where each file goes"), *files]
