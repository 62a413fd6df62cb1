"""The kit's tasks, for Fabric: `modelhost TASK` in any app's checkout (or `fab TASK` in modelhost's
own). `modelhost --list` shows them; `modelhost --help TASK` shows a task's options; `-H user@host`
acts on hosts over SSH, with no -H on this machine.

Only this module (and fabfile.py) prints to the user; the deploy library raises errors that say
what is wrong, and they are shown here as one message and a non-zero exit.
"""
from __future__ import annotations

import functools
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fabric import Config, Connection, Executor, task
from fabric.main import Fab
from invoke import Collection, Context
from invoke.exceptions import Exit

from deploy import certificate as certificates, commands, context, deployment, discover, fleet, lock, parts, state
from deploy import unchanged
from deploy import balancer as balancing
from deploy import expose as exposing
from deploy import settings as deploy_settings
from deploy.context import DeployError, Step
from deploy.facts import FactsError, board_brief, gather, health_lines, load_brief, parse_facts
from deploy.layout import local_layout, system_layout
from deploy.provision import provision as provision_host
from deploy.firewall import ensure_firewall
from deploy.lock import locked
from deploy.render import README_TITLE, RenderError, Upstream, balancer_settings, plan_app, relay_settings
from deploy.render import render as render_files
from deploy.requirements import unpinned_message
from deploy.source import SourceError, read_model, read_source
from deploy.target import CommandFailed, Target, TargetError, check_host_keys
from deploy.validate import ValidationError, check_rendered
from deploy.workers import ModelSizeError, model_size_mb


def default_settings() -> Path:
    """./deploy.toml (every setting at its default when there is none)."""
    return Path.cwd() / deploy_settings.SETTINGS_FILE


@dataclass(frozen=True)
class Buildable:
    """A model a checkout knows how to make (modelhost's demo): made before a task reads it."""
    path: Path
    build: Callable[[], None]
    hints: Callable[[str], str]  # what to try on the site at a URL


BUILDABLE: list[Buildable] = []  # fabfile.py adds the demo's
BUILDING = threading.Lock()


def buildable(model_path: Path) -> Buildable | None:
    return next((b for b in BUILDABLE if b.path == model_path.resolve()), None)


def model_path(settings) -> Path | None:
    """[model] path, made absolute from deploy.toml's directory (None when the app has no model); a
    model this checkout knows how to make (the demo's) is made first if need be."""
    if not settings.model.path:
        return None
    path = Path(settings.source).resolve().parent / settings.model.path
    made = buildable(path)
    if made:
        with BUILDING:  # once, when the hosts of a fleet ask at once
            made.build()
    return path


# Errors the deploy library raises, each message saying what is wrong and what to do, and the
# errors of paths the user gave. Any other exception is a bug, shown with its traceback.
ERRORS = (deploy_settings.SettingsError, FactsError, ModelSizeError, RenderError, ValidationError, CommandFailed,
          SourceError, DeployError, TargetError, discover.DiscoveryError, FileNotFoundError, FileExistsError,
          PermissionError, IsADirectoryError, NotADirectoryError)


def remote(c) -> bool:
    """fab -H: the task acts on a host over SSH (c is a Fabric Connection), with its keys checked."""
    if not hasattr(c, "host"):
        return False
    check_host_keys(c)
    return True


def host_facts(c, facts_file: str | None):
    """The target's facts (or a captured FACTS_COMMAND output, to render for another host)."""
    return parse_facts(Path(facts_file).read_text()) if facts_file else gather(Target(c))


def prepare_output(out: Path) -> None:
    """Refuse to write over anything but an earlier render; an earlier render is replaced whole."""
    if out.exists() and any(out.iterdir()):
        readme = out / "README.md"
        if not (readme.is_file() and readme.read_text().startswith(README_TITLE)):
            raise Exit(f"error: {out} is not empty and is not an earlier `fab render` output; "
                       "choose an empty or new directory", code=2)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


@task(iterable=["settings"], help={
    "out": "directory to write the configs into (new, empty, or an earlier render, which is replaced)",
    "settings": "deploy.toml of an app (default ./deploy.toml); repeat to render several apps for one host",
    "target": "local (this machine, no root; the default without -H) or system (a Debian/Ubuntu/Pi OS host's "
              "paths; the default with -H, whose facts are read over SSH)",
    "facts": "a file with the output of deploy.facts.FACTS_COMMAND from the host to render for",
    "check": "validate with nginx -t, supervisor's parser, gunicorn --check-config, systemd-analyze first",
    "live": "the color nginx sends traffic to: blue (default) or green"})
def render(c, out, settings=None, target=None, facts=None, check=False, live="blue"):
    """Render every config of the target (nginx, supervisor or systemd, gunicorn) into OUT, with a README."""
    target = target or ("system" if remote(c) else "local")
    if target not in ("local", "system"):
        raise Exit(f"error: --target {target}: must be local or system", code=2)
    try:
        host = host_facts(c, facts)
        apps = []
        for path in settings or [default_settings()]:
            loaded = deploy_settings.load(path)
            layout = local_layout(loaded) if target == "local" else system_layout(loaded)
            if loaded.model.size_mb == "auto":
                model_path(loaded)  # the worker rule needs the model's size
            apps.append(plan_app(loaded, layout, host, Path(path).resolve().parent))
        files = render_files(apps, host, live)
        print(f"host: {host.describe()}")
        for app in apps:
            print(f"{app.layout.app} workers: {app.plan.explanation}")
        if check:
            with tempfile.TemporaryDirectory(prefix="modelhost-check-") as scratch:
                for line in check_rendered(Target(Context()), apps, host, Path(scratch), live):
                    print(f"checked: {line}")
    except ERRORS as exc:
        raise Exit(f"error: {exc}", code=1) from None
    out = Path(out)
    prepare_output(out)
    for file in files:
        (out / file.path).parent.mkdir(parents=True, exist_ok=True)
        (out / file.path).write_text(file.content)
    print(f"wrote {len(files)} files to {out}; {out / 'README.md'} says where each one goes")


# ---- deploying: with -H user@host to hosts over SSH, else to this machine (the local target) -------

def print_step(step: Step, mark: str = "") -> None:
    """A step's line, as it ends. The work goes on when nobody reads the lines any more
    (`modelhost deploy | head`): a deploy is not stopped between its steps by that."""
    outcome = "failed" if step.failed else "changed" if step.changed else "unchanged"
    try:
        print(f"{mark}  {step.name:<16}{outcome:<11}{step.seconds:6.1f} s   {step.detail}", flush=True)
    except BrokenPipeError:
        fleet.drop_output()


def load_settings(c, settings_file: str | None):
    """deploy.toml, with the addresses app hosts see the fleet's balancers at: [fleet] addresses, else
    where ssh reaches each (its ssh_config HostName, resolved here)."""
    settings = deploy_settings.load(settings_file or default_settings())
    fleet = settings.fleet
    if fleet.balancer:
        fleet.balancer_addresses = tuple(fleet.addresses.get(name) or resolved(c, name) for name in fleet.balancer)
    return settings


def resolved(c, name: str) -> str:
    """The address ssh reaches a host of [fleet] at, as this machine resolves it."""
    host = Connection(name, config=c.config).host
    try:
        return socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
    except OSError as exc:
        raise DeployError(f"cannot resolve {host} ([fleet] {name}): {exc}; set its address in [fleet] addresses") \
            from None


FLEET_RELEASE_TIME = "modelhost_fleet_release_time"  # in the task's Fabric config, set by on_fleet
FLEET_SECRETS = "modelhost_fleet_secrets"  # the made-up secrets every host of the fleet shares, set by on_fleet


def given_environ(c) -> dict:
    """What a deploy takes secrets from: fab's environment, over the values a fleet's hosts share."""
    return {**dict(c.config.get(FLEET_SECRETS) or ()), **os.environ}


def target_context(c, settings_file: str | None, quiet: bool = False) -> context.Context:
    """The app of deploy.toml on the target: the host of -H (as root, through sudo when the SSH
    user is not root), or this machine. Steps are printed as they end, unless quiet."""
    settings = load_settings(c, settings_file)
    report = (lambda step: None) if quiet else print_step
    if remote(c):
        d = context.Context(Target(c, root=True), settings, system_layout(settings), report=report)
    else:
        d = context.Context(Target(c), settings, local_layout(settings), report=report)
    d.release_time = c.config.get(FLEET_RELEASE_TIME)
    return d


def where(d: context.Context) -> str:
    return f"{d.target.name} ({d.layout.root})" if d.target.remote else f"{d.layout.host_root} (this machine)"


def summary(d: context.Context, started: float) -> str:
    changed = sum(step.changed for step in d.steps)
    return f"{changed} of {len(d.steps)} steps changed something, {time.monotonic() - started:.1f} s"


def task_errors(function):
    """Runs a task body; a deploy library error ends it with its message and exit status 1, a reader
    of its output that went away (`| head`) quietly with 141, as SIGPIPE ends other commands."""
    @functools.wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ERRORS as exc:
            raise Exit(f"error: {exc}", code=1) from None
        except BrokenPipeError:
            fleet.drop_output()
            raise Exit(code=fleet.OUTPUT_GONE) from None
    return run


def fleet_hosts(c, settings_file: str | None) -> tuple[str, ...]:
    """[fleet] app of deploy.toml when a task has no -H (none with -H: the task acts on that host)."""
    if hasattr(c, "host"):
        return ()
    try:
        return deploy_settings.load(settings_file or default_settings()).fleet.app
    except deploy_settings.SettingsError as exc:
        raise Exit(f"error: {exc}", code=1) from None


def on_fleet(at_once: bool, unchanged_on: Callable[..., str] | None = None):
    """A task with no -H, for an app whose deploy.toml lists [fleet] app hosts, runs on each of them
    (all at once, or one at a time until one fails), its lines marked with the host, and ends with
    a line per host; the task body returns what it did in a few words for that line. unchanged_on
    (a deploy's) looks at every host at once first and says what runs on one that has nothing to
    do ("" where it has): the task then leaves those out. Before it, the secrets a deploy makes up
    are read on every host, so that all of them get the same value (given_environ)."""
    def decorate(body):
        @functools.wraps(body)
        def run(c, *args, **kwargs):
            try:
                return on_hosts(c, *args, **kwargs)
            except BrokenPipeError:  # the task's own lines, before the hosts start or after they ended
                fleet.drop_output()
                raise Exit(code=fleet.OUTPUT_GONE) from None

        def on_hosts(c, *args, **kwargs):
            hosts = fleet_hosts(c, kwargs.get("settings"))
            if not hosts:
                return body(c, *args, **kwargs)

            def one(host: str) -> str:
                return with_connection(c, host, body, *args, **kwargs)

            name = body.__name__
            settings = load_settings(c, kwargs.get("settings"))
            balancers = settings.fleet.balancer
            how = ("all at once" if at_once else f"{settings.fleet.at_once} at a time out of the balancer"
                   if balancers else "one at a time, stopping at the first that fails")
            print(f"{name} on {len(hosts)} hosts ({', '.join(hosts)}): {how}", flush=True)
            done: dict[str, fleet.Outcome] = {}
            if unchanged_on:
                c.config[FLEET_SECRETS] = tuple(shared_secrets(c, settings, hosts, kwargs.get("settings")).items())
                done = {o.host: o for o in fleet.run(list(hosts), lambda host: with_connection(
                    c, host, unchanged_on, *args, **kwargs) or "to do", at_once=True) if o.result != "to do"}
            left = [host for host in hosts if host not in done or done[host].failed]
            # The hosts name a release they make alike (its time is the task's start), so one id says
            # what runs where and `rollback --to` names it on every host.
            c.config[FLEET_RELEASE_TIME] = context.release_time()
            if not left:
                outcomes = []
            elif at_once:
                outcomes = fleet.run(left, one, at_once)
                if balancers and name == "provision" and not any(o.failed for o in outcomes):
                    provision_balancers(c, settings, left)
            else:
                try:
                    keeper = fleet_lock_holder(c, settings)
                    if kwargs.get("break_lock"):
                        unlock(keeper)
                    with locked(keeper, f"{name} of the fleet ({', '.join(left)})"):
                        outcomes = roll(c, settings, left, one) if balancers else fleet.run(left, one, at_once)
                except ERRORS as exc:  # the fleet's lock held, a balancer out of reach
                    raise Exit(f"error: {exc}", code=1) from None
            outcomes = [next((o for o in outcomes if o.host == host), None) or done[host] for host in hosts]
            failed = [o.host for o in outcomes if o.failed]
            if not at_once:
                live_after(c, outcomes, kwargs.get("settings"))
            print(f"{name}: {len(hosts) - len(failed)} of {len(hosts)} hosts ok")
            if name == "status":
                lines = fleet_table(c, settings, outcomes)
            else:
                lines = fleet.summary(outcomes, None if at_once or not failed else failed[0])
            print("\n".join(lines), flush=True)
            if failed:
                raise Exit(f"error: {name} failed on {', '.join(failed)} (its lines above say why)", code=1)
        return run
    return decorate


def shared_secrets(c, settings, hosts: tuple[str, ...], settings_file: str | None) -> dict[str, str]:
    """The secrets a deploy makes up (not given in fab's environment), as every host of the fleet
    is to hold them: each host's env file read at once, the first value found kept (fleet.shared_secrets)."""
    names = [name for name in deploy_settings.MADE_UP_SECRETS
             if name in settings.app.secrets and not os.environ.get(name)]
    if not names:
        return {}

    def env_file(connection) -> dict[str, str]:
        d = target_context(connection, settings_file, quiet=True)
        return parts.env_values(d.target.read(d.layout.env_file) or "")

    def read(host: str) -> dict[str, str] | None:
        try:
            return with_connection(c, host, env_file)
        except ERRORS + (Exit, OSError):
            return None  # that host's own deploy says what is wrong with it

    with ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="secrets") as pool:
        found = dict(zip(hosts, pool.map(read, hosts)))
    values, lines = fleet.shared_secrets(found, names)
    for line in lines:
        print(line, flush=True)
    return values


def with_connection(c, host: str, body, *args, **kwargs):
    """A task body on one host of the fleet, over its own SSH connection."""
    with Connection(host, config=c.config) as connection:
        return body(connection, *args, **kwargs)


def balancer_contexts(c, settings, quiet: bool = False) -> list[context.Context]:
    """The fleet's balancers, each reached over SSH (host keys checked), its steps marked with its name."""
    return [balancer_context(c, settings, name, quiet) for name in settings.fleet.balancer]


def balancer_context(c, settings, name: str, quiet: bool = False) -> context.Context:
    balanced = balancer_settings(settings)
    connection = Connection(name, config=c.config)
    check_host_keys(connection)
    report = (lambda step: None) if quiet else functools.partial(print_step, mark=f"{name} | ")
    return context.Context(Target(connection, root=True), balanced, system_layout(balanced), report=report)


def upstreams_of(c, settings, hosts: list[str], out: set[str]) -> list[Upstream]:
    """The app hosts as the balancer reaches them ([fleet] addresses, else where ssh does), those in out down."""
    return [Upstream(host, f"{settings.fleet.addresses.get(host) or Connection(host, config=c.config).host}:"
                           f"{settings.nginx.port}", host in out) for host in hosts]


def provision_balancers(c, settings, hosts: list[str]) -> None:
    """After the app hosts: each balancer's nginx, its site over all of them, and its firewall."""
    for b in balancer_contexts(c, settings):
        print(f"{b.target.name} | provisioning the balancer of {', '.join(hosts)}: {b.facts.describe()}", flush=True)
        balancing.ensure_balancer(b)
        balancing.ensure_balancer_site(b, upstreams_of(c, settings, hosts, set()))
        ensure_firewall(b)


def fleet_lock_holder(c, settings) -> context.Context:
    """Where the fleet's own lock is (each host keeps its own too): /srv/<app>-fleet/deploy.lock on
    the first balancer, or with none on the first app host."""
    return balancer_context(c, settings, (settings.fleet.balancer or settings.fleet.app)[0], quiet=True)


def roll(c, settings, hosts: list[str], one) -> list[fleet.Outcome]:
    """A rolling deploy (or rollback), under the fleet's lock: [fleet] at_once app hosts at a time
    taken out of the balancers (a graceful reload: what they had in flight finishes first),
    deployed, put back; the first host that fails is put back too (it serves what it served) and
    the roll stops."""
    balancers = balancer_contexts(c, settings)
    out: set[str] = set()

    def steer() -> None:
        for b in balancers:
            balancing.ensure_balancer_site(b, upstreams_of(c, settings, hosts, out))

    outcomes: list[fleet.Outcome] = []
    steer()
    size = settings.fleet.at_once
    for start in range(0, len(hosts), size):
        batch = hosts[start:start + size]
        out.update(batch)
        steer()
        done = fleet.run(batch, one, at_once=True)
        outcomes += done
        out.difference_update(batch)
        steer()
        if any(o.failed for o in done):
            break
    return outcomes + [fleet.Outcome(host, started=False) for host in hosts[len(outcomes):]]


def fleet_table(c, settings, outcomes: list[fleet.Outcome]) -> list[str]:
    """fab status of a fleet: a row per app host (what fab status of each said, or its error), and a
    column per balancer with how it sees each host."""
    rows = [{"host": o.host, **(o.row or {"release": f"FAILED: {o.result}"[:72]})} for o in outcomes]
    hosts = [o.host for o in outcomes]
    for name in settings.fleet.balancer:
        try:
            b = balancer_context(c, settings, name, quiet=True)
            seen = balancing.view(b, upstreams_of(c, settings, hosts, set()))
        except ERRORS + (OSError,) as exc:
            seen = dict.fromkeys(hosts, f"cannot tell: {exc}"[:60])
        for row in rows:
            row[f"{name} sees"] = seen[row["host"]]
    return fleet.table(rows)


def live_after(c, outcomes: list[fleet.Outcome], settings_file: str | None) -> None:
    """After a deploy or rollback that stopped: what each host it did not finish runs now."""
    for outcome in outcomes:
        if outcome.failed or not outcome.started:
            try:
                with Connection(outcome.host, config=c.config) as connection:
                    live = state.pointers(target_context(connection, settings_file, quiet=True)).live_release
                outcome.result += f"{'; ' if outcome.result else ''}live: {live or 'nothing yet'}"
            except ERRORS + (Exit,) as exc:
                outcome.result += f"; live: unknown ({getattr(exc, 'message', exc)})"


def one_host(c, settings_file: str | None, task: str) -> None:
    """Tasks that act on one host at a time refuse a fleet rather than act on this machine instead."""
    hosts = fleet_hosts(c, settings_file)
    if hosts:
        raise Exit(f"error: {task} acts on one host, and deploy.toml lists a fleet: name it with -H "
                   f"(fab -H {hosts[0]} {task})", code=2)


SETTINGS_HELP = "the app's deploy.toml (default ./deploy.toml); the app is the git checkout holding it"
BREAK_LOCK_HELP = "remove a deploy lock left by a deploy that was killed (see the holder in the error) first"


@task(help={"settings": SETTINGS_HELP})
@on_fleet(at_once=True)
@task_errors
def provision(c, settings=None):
    """Prepare a host (-H user@host) for the app: packages, its user, directories, services. Safe to repeat."""
    started = time.monotonic()
    d = target_context(c, settings)
    if not d.target.remote:
        raise Exit("error: provision prepares a host: fab -H user@host provision. This machine (no -H) needs no "
                   "provisioning: fab deploy sets it up, without root", code=2)
    print(f"provisioning {d.target.name} for {d.settings.app.name}: {d.facts.describe()}", flush=True)
    provision_host(d)
    print(f"{d.target.name} is ready for fab deploy: {summary(d, started)}")
    return f"ready: {summary(d, started)}"


def unlock(d: context.Context) -> None:
    holder = lock.break_lock(d)
    print(f"removed the deploy lock on {d.target.name}" + (f" ({holder})" if holder else " (there was none)"))


def deploy_inputs(c, settings: str | None, allow_dirty: bool):
    """The target, and what a deploy ships to it: the model's path, the source, the model."""
    d = target_context(c, settings)
    path = model_path(d.settings)
    source = read_source(d.local, Path(d.settings.source).resolve().parent, allow_dirty, d.settings.app.requirements)
    return d, path, source, read_model(path) if path else None


@task_errors
def live_if_unchanged(c, settings=None, allow_dirty=False, break_lock=False) -> str:
    """On a host of a fleet: what runs there when a deploy would have nothing to do ("" otherwise)."""
    d, _, source, model = deploy_inputs(c, settings, allow_dirty)
    _, live = unchanged.check(d, source, model, given_environ(c))
    return f"{live.id} live (nothing to do)" if live else ""


@task(help={"settings": SETTINGS_HELP,
            "allow_dirty": "deploy uncommitted changes to tracked files (as a commit of their own)",
            "break_lock": BREAK_LOCK_HELP})
@on_fleet(at_once=False, unchanged_on=live_if_unchanged)
@task_errors
def deploy(c, settings=None, allow_dirty=False, break_lock=False):
    """Deploy the app's git revision: a new release, started beside the old one, live once ready."""
    started = time.monotonic()
    d, path, source, model = deploy_inputs(c, settings, allow_dirty)
    if break_lock:
        unlock(d)
    warning = unpinned_message(source.requirements)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"deploying {d.settings.app.name} {source.label} to {where(d)}", flush=True)
    release = deployment.deploy(d, source, model, given_environ(c))
    print(f"{release.id} is live on {d.target.name}: {summary(d, started)}\n{site_lines(d, path)}")
    return f"{release.id} live"


def site_lines(d: context.Context, path: Path | None) -> str:
    """Where the site is, how its health is checked, and what to try (the demo's hints for the demo)."""
    health, _ = deployment.health(d)
    lines = [f"open {d.url}   (health: {d.url.rstrip('/')}{health})"]
    if d.layout.tls(d.settings) and not d.tls:
        lines.append(f"[nginx] tls is set, but {d.target.name} has no certificate yet, so the site is served over "
                     f"HTTP: fab {'-H ' + d.target.name + ' ' if d.target.remote else ''}certificate gets one")
    if d.target.remote and not d.reached_from_elsewhere:
        lines.append(f"the site answers only the names in [nginx] server_names "
                     f"({', '.join(d.settings.nginx.server_names)}): set them to {d.target.name}'s DNS name "
                     "(or address) to reach it from elsewhere, then fab deploy")
    made = buildable(path) if path else None
    if made:
        lines.append(made.hints(d.url))
    return "\n".join(lines)


@task(help={"settings": SETTINGS_HELP, "break_lock": BREAK_LOCK_HELP})
@task_errors
def certificate(c, settings=None, break_lock=False):
    """Get a TLS certificate for the site's names from the ACME server (certbot) and serve HTTPS; renewed by itself.
    A fleet's certificate is its balancers'."""
    started = time.monotonic()
    if fleet_hosts(c, settings):
        fleet_settings = load_settings(c, settings)
        if fleet_settings.fleet.balancer:
            return balancer_certificate(c, fleet_settings, break_lock, started)
    one_host(c, settings, "certificate")
    d = target_context(c, settings)
    names = certificates.certificate_names(d)
    if break_lock:
        unlock(d)
    print(f"certificate for {', '.join(names)} from {d.settings.nginx.acme_server} on {where(d)}", flush=True)
    info = certificates.certificate(d)
    print(f"{d.url} serves a certificate for {', '.join(info.names)} until {info.expires:%Y-%m-%d}; certbot renews "
          f"it 30 days before: {summary(d, started)}")


def balancer_certificate(c, settings, break_lock: bool, started: float) -> None:
    """The certificate of a fleet's site on each of its balancers (the app hosts serve them plain HTTP)."""
    hosts = list(settings.fleet.app)
    for b in balancer_contexts(c, settings):
        names = certificates.certificate_names(b)
        if break_lock:
            unlock(b)
        print(f"{b.target.name} | certificate for {', '.join(names)} from {settings.nginx.acme_server} on the "
              f"balancer of {', '.join(hosts)}", flush=True)
        info = balancing.certificate(b, upstreams_of(c, settings, hosts, set()))
        print(f"{b.target.name} | {b.url} serves a certificate for {', '.join(info.names)} until "
              f"{info.expires:%Y-%m-%d}; certbot renews it 30 days before: {summary(b, started)}")


def relay_context(c, d: context.Context) -> exposing.Relay:
    """The relay of [expose] relay, reached over SSH from this machine (its ssh config, its host key
    checked), as root through sudo when the SSH user is not root."""
    connection = Connection(d.settings.expose.relay, config=c.config)
    check_host_keys(connection)
    relayed = relay_settings(d.settings)
    relay = context.Context(Target(connection, root=True), relayed, system_layout(relayed), report=print_step)
    relay.steps = d.steps  # one list: the summary counts the steps of both ends
    relay.facts  # connects (and gathers what the relay steps need)
    key = connection.transport.get_remote_server_key()
    port = d.settings.expose.relay_port or connection.port
    return exposing.Relay(relay, d.settings.expose.relay_address or connection.host, port,
                          (key.get_name(), key.get_base64()))


@task(help={"settings": SETTINGS_HELP, "stop": "take the tunnel, its key and the relay's site away again",
            "break_lock": BREAK_LOCK_HELP})
@task_errors
def expose(c, settings=None, stop=False, break_lock=False):
    """Serve the app at [expose] domain over HTTPS from your relay, through an SSH tunnel from its target."""
    one_host(c, settings, "expose")
    started = time.monotonic()
    d = target_context(c, settings)
    domain = exposing.exposed(d)
    if break_lock:
        unlock(d)
    relay = relay_context(c, d)
    if stop:
        removed = exposing.stop(d, relay)
        print("removed: " + "; ".join(removed) if removed else f"nothing of https://{domain}/ was set up")
        print(f"remove [expose] from {d.settings.source}: with it, fab deploy gives the site its tunnel socket again")
        return
    print(f"exposing {d.settings.app.name} on {where(d)} at https://{domain}/ through {relay.ctx.target.name}",
          flush=True)
    port = exposing.expose(d, relay)
    print(f"https://{domain}{d.settings.nginx.prefix}/ serves the app through {relay.ctx.target.name} "
          f"(127.0.0.1:{port} there): {summary(d, started)}")


@task(help={"settings": SETTINGS_HELP,
            "to": "the release to go back to: its id, or its git commit (default: the one before the live one)",
            "break_lock": BREAK_LOCK_HELP})
@on_fleet(at_once=False)
@task_errors
def rollback(c, settings=None, to=None, break_lock=False):
    """Make the previous release live again (the same gated cutover as a deploy)."""
    d = target_context(c, settings)
    if break_lock:
        unlock(d)
    release = deployment.rollback(d, to)
    print(f"{release.id} is live again on {d.target.name}")
    return f"{release.id} live again"


@task(help={"settings": SETTINGS_HELP})
@on_fleet(at_once=True)
@task_errors
def status(c, settings=None):
    """Show what runs (supervisord, both gunicorn programs, the app's processes, the live release, readiness,
    nginx, its scheduled jobs, the firewall) and how the machine is doing (memory, and what a board reports:
    power, temperature, storage, swap)."""
    d = target_context(c, settings)
    s = deployment.status(d)
    rows: list[tuple[str, str]] = []  # (label, what it says), printed in two columns
    if s.manager:
        rows.append((s.manager, ('pid ' + str(s.manager_pid) if s.manager_pid else 'not running')
                     + (f": it died, and what it ran still runs ({', '.join(map(str, s.leftovers))}); fab deploy or "
                        "rollback stops that and starts it again, fab stop stops it" if s.leftovers else "")))
    for program in s.programs:
        live = " (live)" if program.color == s.live else ""
        pid = f"pid {program.pid}, up {program.uptime}" if program.pid else ""
        rows.append((program.name, f"{program.state:<9}{pid:<24}release {program.release or '-'}{live}"))
    rows += s.processes
    if s.release:
        rows.append(("release", f"{s.release.id}: revision {s.release.revision}, model {s.release.model_version}, "
                                f"{s.release.workers} workers ({s.release.explanation})"))
    rows.append(("ready", s.ready + f"  (GET {s.health})" if s.ready else "no live program"))
    if s.memory:
        rows.append(("memory", s.memory))
    rows.append(("nginx", f"pid {s.nginx}; {s.health} through nginx: {s.through_nginx}" if s.nginx
                 else "not running"))
    for label, text in (("certificate", s.certificate), ("tunnel", s.tunnel)):
        if text:
            rows.append((label, text))
    rows += [(job.name, f"{job.schedule}  last {job.last or 'none yet'}"
              + (f"; running {job.running}" if job.running else "") + f"; next {job.next}") for job in s.jobs]
    if s.firewall:
        rows.append(("firewall", s.firewall))
    rows += [("host", d.facts.describe()), *health_lines(d.facts.health)]
    print(f"{d.settings.app.name} on {s.target}: {s.url}")
    width = max(len(label) for label, _ in rows) + 2
    for label, text in rows:
        print(f"  {label:<{width}}{text}")
    return {"release": s.release.id if s.release else "none",
            "ready": (s.ready or "no live program")[:40],
            "workers": str(s.release.workers) if s.release else "-",
            "load": load_brief(d.facts), "board": board_brief(d.facts.health)}


@task(help={"settings": SETTINGS_HELP})
@on_fleet(at_once=True)
@task_errors
def releases(c, settings=None):
    """List the releases on the target, newest first, with the live and idle colors marked."""
    d = target_context(c, settings)
    found = state.releases(d)
    print(f"releases of {d.settings.app.name} on {d.target.name}:")
    if not found:
        print("  none yet: fab deploy makes one")
        return "no releases"
    pointers = state.pointers(d)
    results = {h["release"]: h["result"] for h in state.history(d)}
    for release in reversed(found):
        marks = [f"{color}{' (live)' if color == pointers.live else ''}" for color, id in pointers.release.items()
                 if id == release.id]
        print(f"  {release.id:<32}model {release.model_version:<14}{release.workers} workers  "
              f"{results.get(release.id, 'never live'):<11}{', '.join(marks)}")
    return f"{len(found)} releases, live: {pointers.live_release or 'none'}"


@task(help={"settings": SETTINGS_HELP,
            "what": "app (the live gunicorn and the app, default; gunicorn is the same), nginx, supervisord, or tunnel",
            "lines": "how many lines (default 50)", "follow": "keep printing new lines (Ctrl-C stops)"})
@on_fleet(at_once=True)
@task_errors
def logs(c, settings=None, what="app", lines=50, follow=False):
    """Show the last lines of the live app's log (or nginx's, or supervisord's)."""
    d = target_context(c, settings)
    argv = deployment.log_command(d, what, int(lines), follow)
    if follow:
        d.target.stream(argv)
    else:
        result = d.run(argv, check=False)
        print((result.stdout + result.stderr).rstrip())


@task(help={"settings": SETTINGS_HELP})
@on_fleet(at_once=True)
@task_errors
def diff(c, settings=None):
    """Show how the rendered configs differ from the target's files (a unified diff); changes nothing."""
    d = target_context(c, settings)
    path = model_path(d.settings)
    diffs = deployment.diff(d, model_size_mb(path) if path else 0)
    print("".join(diffs).rstrip() if diffs else f"no differences: the configs on {d.target.name} are as rendered")
    return f"{len(diffs)} files differ" if diffs else "no differences"


@task(help={"settings": SETTINGS_HELP})
@on_fleet(at_once=True)
@task_errors
def stop(c, settings=None):
    """Stop the app's gunicorn programs (on this machine also the supervisord and nginx it started)."""
    pids = deployment.stop(target_context(c, settings))
    print(f"stopped {len(pids)} processes ({', '.join(map(str, pids))})" if pids else "nothing was running")
    return f"stopped {len(pids)} processes"


@task(help={"settings": SETTINGS_HELP, "release": "the release to run in (default: the live one; before any went "
            "live, the newest)"})
@task_errors
def run(c, command, settings=None, release=None):
    """Run COMMAND in the live release as the app, with its environment and secrets; exits with its status.

    COMMAND is one shell command, quoted: a migration, init-db, a shell."""
    one_host(c, settings, "run")
    d = target_context(c, settings)
    chosen, argv = deployment.run_command(d, command, release)
    print(f"running in {chosen.id} on {d.target.name} as {d.layout.secrets_owner or d.layout.user}: {command}",
          file=sys.stderr, flush=True)
    status = d.target.stream(argv, stdin=True)
    if status:
        raise Exit(code=status)


@task(help={"out": "where to write the settings (default ./deploy.toml; an existing file is never replaced)"})
def init(c, out=deploy_settings.SETTINGS_FILE):
    """Write a commented deploy.toml for the app in this directory, saying what was found and guessed."""
    checkout = Path.cwd()
    out = Path(out)
    if out.exists():
        raise Exit(f"error: {out} exists, and init never replaces it: move it away, or write the new one "
                   f"elsewhere to compare (modelhost init --out deploy.new.toml)", code=2)
    local = Target(Context())
    listed = local.run(commands.git(checkout, "ls-files", "-z"), check=False)
    tracked = set(filter(None, listed.stdout.split("\0"))) if listed.exited == 0 else None
    try:
        found = discover.discover(checkout, tracked)
    except ERRORS as exc:
        raise Exit(f"error: {exc}", code=1) from None
    for line in discover.report(found):
        print(line)
    out.write_text(discover.deploy_toml(found), encoding="utf-8")
    print(f"wrote {out}: read it, change what was guessed wrong, then `modelhost deploy` "
          "(or `modelhost -H user@host provision deploy`)")


def main() -> None:
    """The `modelhost` command: Fabric's own program (its options: -H, -S, --prompt-for-sudo-password,
    ...) with these tasks."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        kit = version("modelhost")
    except PackageNotFoundError:
        kit = "unknown"
    Fab(name="modelhost", version=kit, namespace=Collection.from_module(sys.modules[__name__]),
        executor_class=Executor, config_class=Config).run()
