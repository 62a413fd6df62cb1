"""The host's firewall, the last step of `fab provision`: only SSH and the site come in.

    tool     ufw when it is installed or apt can install it (Debian, Ubuntu and Raspberry Pi OS all
             have it). Else nftables: a table of our own, `inet modelhost`, in RULESET, loaded at
             boot by the modelhost-firewall service; the host's other tables and /etc/nftables.conf
             are left alone. Once on nftables, provision keeps to it until ufw is installed; then it
             turns ufw on and takes its table away.
    policy   what comes in is dropped unless a rule lets it in; what goes out is allowed; loopback,
             answers to connections made from here, and ICMP pass (ufw's own rules, or ours)
    rules    each with a comment that starts with "modelhost":
               ssh    the port this SSH session came in on, as the host saw it ($SSH_CONNECTION),
                      which is right behind a jump host or a port forward too
               http   [nginx] port, and https: [nginx] tls_port with [nginx] tls. None with [expose]:
                      the relay reaches the site through the tunnel the host opens itself
               allow  each of [firewall] allow
             A rule of yours (no such comment) is never changed or removed, and one that lets a port
             in already stands in for ours.
    apps     each app's ports are kept in DIRECTORY/<app>.rules; the firewall lets in those of every
             app on the host, and removes a rule of ours that none of them wants (an old port)

It never cuts off the SSH session it runs over: SSH is let in before the firewall goes on, and before
any change a timer on the host is set to turn the firewall off again (now and at boot) UNDO_SECONDS
later. Provision cancels it once a new SSH connection, made as this one was, has logged in. If that
fails, the firewall is turned off over the session still open, and provision stops, saying what
to check; if the session is lost, the timer turns it off.

Behind a balancer ([fleet] balancer) an app host lets the site's ports in from the balancers'
addresses only (site_rules takes the sources).
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Callable

from deploy import commands
from deploy.commands.firewall import UNDO_UNIT, FirewallState, Rule, UfwRule
from deploy.context import Context, DeployError
from deploy.target import CommandFailed, TargetError

DIRECTORY = Path("/etc/modelhost-firewall")
RULESET = DIRECTORY / "modelhost.nft"
BOOT = "modelhost-firewall"  # the service that loads RULESET at boot
BOOT_UNIT = Path("/etc/systemd/system") / f"{BOOT}.service"
BOOT_SCRIPT = Path("/etc/init.d") / BOOT
UNDO_SECONDS = 90  # from arming the timer to a confirmed change: seconds on a Pi, with a new SSH login
UNDO_PID = Path("/run/modelhost-firewall-undo.pid")  # the sleeping undo of an init.d host
CHECK_SECONDS = 20  # for the new SSH connection to log in
PACKAGES = ["ufw", "nftables"]  # the firewalls apt may install, in order of preference
LABELS = ("ssh", "https", "http", "allow")  # a port wanted for several reasons is shown with the first

BOOT_UNIT_TEXT = f"""# modelhost's firewall (fab provision): loads the nftables table inet modelhost at boot.
[Unit]
Description=modelhost's firewall (nftables table inet modelhost)
Documentation=file://{RULESET}
# Early, as Debian's nftables.service, and after it: its /etc/nftables.conf may flush the ruleset.
DefaultDependencies=no
After=nftables.service
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f {RULESET}
# nft -f replaces the table in one transaction: no moment without it.
ExecReload=/usr/sbin/nft -f {RULESET}
ExecStop=/usr/sbin/nft delete table inet modelhost

[Install]
WantedBy=sysinit.target
"""

BOOT_SCRIPT_TEXT = f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          {BOOT}
# Required-Start:    $local_fs
# Required-Stop:     $local_fs
# Default-Start:     2 3 4 5
# Default-Stop:
# Short-Description: modelhost's firewall (nftables table inet modelhost)
### END INIT INFO
# Written by fab provision: loads {RULESET} at boot.
case "$1" in
  start|restart|reload|force-reload) exec /usr/sbin/nft -f {RULESET} ;;
  stop) exec /usr/sbin/nft delete table inet modelhost ;;
  status) exec /usr/sbin/nft list table inet modelhost >/dev/null ;;
  *) echo "Usage: $0 {{start|stop|restart|status}}" >&2; exit 3 ;;
esac
"""


# ---- what is let in (pure) ----------------------------------------------------------------------

def site_rules(ports: list[tuple[int, str]], sources: tuple[str, ...] = ("",)) -> list[Rule]:
    """The site's (port, label)s let in from each source ("" for everyone). With a balancer in front
    (issue 17), its addresses as the sources: the site then takes requests from it only."""
    return [Rule(port, "tcp", source, label) for port, label in ports for source in sources]


def site_ports(settings) -> tuple[list[tuple[int, str]], str]:
    """The ports the site is reached on from elsewhere, with their labels; when there are none, why."""
    if settings.expose.domain:
        return [], (f"no inbound HTTP: the site is reached through its tunnel to the relay {settings.expose.relay} "
                    "([expose])")
    address = settings.nginx.address.strip("[]")
    if address and ipaddress.ip_address(address).is_loopback:
        return [], f"no inbound HTTP: nginx listens on {settings.nginx.address} only"
    ports = [(settings.nginx.port, "http")]
    if settings.nginx.tls:
        ports.append((settings.nginx.tls_port, "https"))
    return ports, ""


def app_rules(settings) -> list[Rule]:
    """What this app wants let in, SSH apart: its site's ports and [firewall] allow."""
    sources = settings.fleet.balancer_addresses or ("",)  # behind a balancer, from it only
    return site_rules(site_ports(settings)[0], sources) + [commands.parse_rule(f"{spec} allow")
                                                  for spec in settings.firewall.allow]


def _rank(rule: Rule) -> int:
    return LABELS.index(rule.label) if rule.label in LABELS else len(LABELS)


def wanted_rules(ssh: Rule, stored: list[Rule]) -> list[Rule]:
    """What the firewall lets in: SSH first, then each rule of the apps once, in port order (the
    same whichever app provisions)."""
    best: dict[Rule, Rule] = {}
    for rule in stored:
        if rule != ssh and (rule not in best or _rank(rule) < _rank(best[rule])):
            best[rule] = rule
    return [ssh, *sorted(best.values())]


def listing(rules: list[Rule], yours: list[Rule] = ()) -> str:
    return ", ".join([rule.describe() for rule in rules] + [f"{rule.spec} (yours)" for rule in yours]) or "nothing"


def ufw_listing(state: FirewallState) -> str:
    ours = [r.rule for r in state.ufw.rules if r.rule and r.ours]
    return listing(ours, [r.rule for r in state.ufw.rules if r.rule and not r.ours])


# ---- the step -----------------------------------------------------------------------------------

def ensure_firewall(ctx: Context) -> None:
    """The firewall on, letting in SSH and what the apps on the host want; changed only where it differs."""
    with ctx.step("firewall") as step:
        if not ctx.settings.firewall.enabled:
            step.detail = "off ([firewall] enabled = false): the host's firewall is left as it is"
            return
        ssh = session_rule(ctx)
        note = site_ports(ctx.settings)[1]
        ctx.run(commands.make_directory(DIRECTORY))
        header = (f"What {ctx.layout.app} wants the host's firewall to let in, besides SSH (fab provision writes "
                  f"this).\nThe firewall lets in what every file of {DIRECTORY} wants: remove this one when the app "
                  "leaves the host.")
        own = DIRECTORY / f"{ctx.layout.app}.rules"
        noted = ctx.target.write(own, commands.rules_text(app_rules(ctx.settings), header))
        try:
            rules = wanted_rules(ssh, commands.parse_rules(ctx.run(commands.read_rule_files(DIRECTORY)).stdout))
        except ValueError as exc:
            raise DeployError(f"{DIRECTORY}/*.rules on {ctx.target.name}: {exc}: write it as PORT/PROTO [from "
                              "NETWORK] LABEL, or remove the line") from None
        state = read(ctx)
        tool, installed = choose_tool(ctx, state)
        if installed:
            state = read(ctx)
        done = ([f"installed {installed} with apt"] if installed else []) + (
            ensure_ufw(ctx, state, rules, ssh) if tool == "ufw" else ensure_nftables(ctx, state, rules, ssh))
        if done:
            state = read(ctx)
            if not (state.ufw.active if tool == "ufw" else state.nft.drops):
                raise DeployError(f"{tool} is not on after the changes on {ctx.target.name}: did the safety timer turn "
                                  f"it off (it does {UNDO_SECONDS} s after a change not confirmed in time)? Provision "
                                  "again")
        live = f"ufw active: {ufw_listing(state)}" if tool == "ufw" else \
            f"nftables active (table inet modelhost): {listing(list(state.nft.rules))}"
        if noted and not done:  # another app on the host wanted the same already
            done = [f"noted {ctx.layout.app}'s ports in {own}"]
        step.changed = bool(done)
        step.detail = "; ".join([*done, live + "; the rest of incoming dropped", *([note] if note else [])])


def read(ctx: Context) -> FirewallState:
    return commands.parse_firewall(ctx.run(commands.firewall_read(RULESET)).stdout)


def session_rule(ctx: Context) -> Rule:
    """SSH on the port this session came in on, as the host saw it."""
    said = ctx.run(commands.ssh_connection(), as_user=True).stdout
    found = commands.parse_ssh_connection(said)
    if not found:
        raise DeployError(f"cannot tell which port this SSH session came in on: $SSH_CONNECTION is {said.strip()!r} "
                          f"on {ctx.target.name}, so the firewall could shut SSH out. Set [firewall] enabled = false "
                          "and set up the host's firewall yourself")
    return Rule(found[1], "tcp", "", "ssh")


def choose_tool(ctx: Context, state: FirewallState) -> tuple[str, str]:
    """ufw when installed, nftables when provision chose it before and ufw is still not there; else
    what apt can install, ufw first. Returns the tool and the package installed ("" for none)."""
    if state.ufw_installed:
        return "ufw", ""
    if state.ruleset and state.nft_installed:
        return "nftables", ""
    try:
        ctx.run(commands.apt_get("update"), timeout=900)
        candidates = commands.parse_candidates(ctx.run(commands.apt_candidates(PACKAGES)).stdout)
        for package in PACKAGES:
            if package == "nftables" and state.nft_installed:
                return "nftables", ""
            if candidates.get(package):
                ctx.run(commands.apt_get("install", package), timeout=1800)
                return package, package
    except CommandFailed as exc:
        raise DeployError(f"apt-get could not install a firewall on {ctx.target.name}: {exc}") from None
    raise DeployError(f"no firewall on {ctx.target.name}: neither ufw nor nftables is installed, and apt can install "
                      "neither (see apt-cache policy ufw nftables there). Install one, or set [firewall] enabled = "
                      "false")


def ensure_ufw(ctx: Context, state: FirewallState, rules: list[Rule], ssh: Rule) -> list[str]:
    """ufw on, denying what comes in but the rules; returns what it did (nothing when all was so)."""
    ufw = state.ufw
    add = [rule for rule in rules if not ufw.covering(rule)]  # SSH first
    remove = [rule for rule in ufw.rules if rule.ours and rule.rule not in rules]
    policies = [("deny", "incoming")] if ufw.incoming == "allow" else []  # reject is yours to choose
    if not ufw.active and ufw.outgoing != "allow":  # ours from the start; later, yours to choose
        policies.append(("allow", "outgoing"))
    leftover = state.ruleset or state.nft.loaded
    done = [*([f"let in {listing(add)}"] if add else []),
            *([f"removed {', '.join(describe_ufw(rule) for rule in remove)}"] if remove else []),
            *[f"default {policy} {direction}" for policy, direction in policies],
            *(["turned it on (also at boot)"] if not ufw.active else []),
            *([f"took modelhost's nftables table and {RULESET} away"] if leftover else [])]
    if not done:
        return []

    def change():
        for rule in add:
            ctx.run(commands.ufw_allow(rule), timeout=120)
        for rule in remove:
            ctx.run(commands.ufw_delete(rule), timeout=120)
        for policy, direction in policies:
            ctx.run(commands.ufw_default(policy, direction), timeout=120)
        if not ufw.active:
            ctx.run(commands.ufw_enable(), timeout=120)
        if leftover:
            remove_nftables(ctx)

    guarded(ctx, change, commands.ufw_disable(), ssh)
    return [*done, "a new SSH connection logged in"]


def describe_ufw(rule: UfwRule) -> str:
    return rule.rule.describe() if rule.rule else " ".join(rule.words)


def nft_off(ctx: Context) -> list[str]:
    return commands.nft_off(ctx.facts.systemd, BOOT)


def ensure_nftables(ctx: Context, state: FirewallState, rules: list[Rule], ssh: Rule) -> list[str]:
    """Our table loaded with the rules (checked by nft first) by its service, also at boot; returns what
    it did."""
    text = commands.nft_ruleset(rules)
    current = ctx.target.read(RULESET)
    done = []
    if not (current == text and state.nft.drops and list(state.nft.rules) == rules):
        if ctx.target.write(RULESET, text):
            check = ctx.run(commands.nft_check(RULESET), check=False)
            if check.exited != 0:
                ctx.restore({RULESET: current})
                raise DeployError(f"nft refused {RULESET} on {ctx.target.name} (the old one is back):\n"
                                  f"{(check.stdout + check.stderr).strip()}")

        def change():
            ensure_boot(ctx)
            ctx.run(commands.nft_service_load(ctx.facts.systemd, BOOT), timeout=120)
        try:
            guarded(ctx, change, nft_off(ctx), ssh)
        except DeployError:
            if current is not None:  # what was loaded before, and passed, for the next boot
                ctx.target.write(RULESET, current)
            raise
        return [f"loaded table inet modelhost: {listing(rules)}, now and at boot ({BOOT})",
                "a new SSH connection logged in"]
    if ensure_boot(ctx):
        done.append(f"loaded at boot by {BOOT}")
    return done


def ensure_boot(ctx: Context) -> bool:
    """The service that loads our table at boot, there and enabled; whether anything changed."""
    systemd = ctx.facts.systemd
    if systemd:
        changed = ctx.target.write(BOOT_UNIT, BOOT_UNIT_TEXT)
        if changed:
            ctx.run(commands.systemctl("daemon-reload"))
    else:
        changed = ctx.target.write(BOOT_SCRIPT, BOOT_SCRIPT_TEXT, mode=0o755)
    if ctx.run(commands.service(systemd, BOOT, "is-enabled"), check=False).exited != 0:
        ctx.run(commands.service(systemd, BOOT, "enable"))
        changed = True
    return changed


def remove_nftables(ctx: Context) -> None:
    """Our table, its file and its boot service gone (ufw has taken over)."""
    ctx.run(nft_off(ctx), check=False)
    ctx.run(commands.remove(RULESET, BOOT_UNIT, BOOT_SCRIPT))
    if ctx.facts.systemd:
        ctx.run(commands.systemctl("daemon-reload"))


# ---- never cut off the session ------------------------------------------------------------------

def guarded(ctx: Context, change: Callable[[], object], undo: list[str], ssh: Rule) -> None:
    """change() with the safety timer set, confirmed by a new SSH connection; the firewall turned off
    again (undo) when that connection fails."""
    systemd = ctx.facts.systemd
    ctx.run(commands.cancel_undo(systemd, UNDO_PID), check=False)  # one a killed provision left pending
    ctx.run(commands.undo_later(systemd, UNDO_SECONDS, undo, UNDO_PID))
    failed = None
    try:
        change()
    except CommandFailed as exc:
        failed = exc
    except TargetError as exc:
        raise lost(ctx, exc) from None
    problem = ctx.target.connects_again(CHECK_SECONDS)
    if problem:
        try:
            ctx.run(undo, timeout=60)
            ctx.run(commands.cancel_undo(systemd, UNDO_PID), timeout=60)
        except (CommandFailed, TargetError) as exc:
            raise lost(ctx, exc) from None
        raise DeployError(
            f"after the firewall changed, a new SSH connection to {ctx.target.name} failed ({problem}), so the "
            f"firewall is off again (also at boot). Check that sshd takes new connections on port {ssh.port} (the "
            "port this session came in on, as the host saw it) and that nothing between you and the host drops "
            "them, then provision again; or set [firewall] enabled = false"
            + (f". The change itself failed too: {failed}" if failed else ""))
    if ctx.run(commands.cancel_undo(systemd, UNDO_PID), check=False).exited != 0:
        raise DeployError(f"could not cancel the timer that turns the firewall off again ({UNDO_UNIT}): it goes off "
                          f"within {UNDO_SECONDS} s; provision again then")
    if failed:
        raise failed


def lost(ctx: Context, exc: Exception) -> DeployError:
    return DeployError(f"lost the connection to {ctx.target.name} while changing its firewall ({exc}): the firewall "
                       f"turns itself off (also at boot) within {UNDO_SECONDS} s; provision again then")


# ---- fab status ---------------------------------------------------------------------------------

def describe(ctx: Context) -> str:
    """The firewall for `fab status`: which, whether on, what it lets in."""
    state = read(ctx)
    if state.ufw and state.ufw.active:
        live = f"ufw active: {ufw_listing(state)}"
    elif state.nft.loaded:
        live = f"nftables active (table inet modelhost): {listing(list(state.nft.rules))}"
    else:
        live = ""
    if not ctx.settings.firewall.enabled:
        return "off ([firewall] enabled = false)" + (f"; provision leaves it alone: {live}" if live else "")
    if not live:
        off = ("ufw inactive" if state.ufw else "nftables: table inet modelhost not loaded" if state.ruleset
               else "none")
        return f"{off}: fab provision turns it on"
    note = site_ports(ctx.settings)[1]
    return f"{live}; the rest of incoming dropped" + (f"; {note}" if note else "")
