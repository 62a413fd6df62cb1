"""The firewall's pure parts (which rules, ufw's and nft's words, the safety timer's commands), and
the provision step's branches against a fake target with a fake ufw (tests/fake.py), in
milliseconds. The real thing, on a host with a network of its own, is tests/test_firewall.py."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from deploy import commands, firewall
from deploy.commands.firewall import Rule, nft_ruleset, parse_firewall, parse_rule, parse_ufw_rule
from deploy.context import DeployError
from deploy.settings import check_settings
from tests.fake import fake_context

DATA = Path(__file__).parent / "data" / "firewall"
SSH, HTTP, HTTPS = Rule(22, "tcp", "", "ssh"), Rule(80, "tcp", "", "http"), Rule(443, "tcp", "", "https")


# ---- what is let in ------------------------------------------------------------------------------

# settings -> (the app's rules, the note on HTTP)
APP_RULES = [
    ({}, [HTTP], ""),
    ({"nginx": {"port": 8080}}, [Rule(8080, "tcp", "", "http")], ""),
    ({"nginx": {"tls": True}}, [HTTP, HTTPS], ""),
    ({"nginx": {"tls": True, "port": 8080, "tls_port": 8443}},
     [Rule(8080, "tcp", "", "http"), Rule(8443, "tcp", "", "https")], ""),
    ({"nginx": {"address": "10.0.0.5"}}, [HTTP], ""),  # nginx answers there only; opening the port elsewhere is moot
    ({"nginx": {"address": "127.0.0.1"}}, [], "no inbound HTTP: nginx listens on 127.0.0.1 only"),
    ({"nginx": {"address": "[::1]"}}, [], "no inbound HTTP: nginx listens on [::1] only"),
    ({"expose": {"relay": "admin@relay.example.com", "domain": "words.example.com"}, "nginx": {"tls": True}}, [],
     "no inbound HTTP: the site is reached through its tunnel to the relay admin@relay.example.com ([expose])"),
    ({"firewall": {"allow": [9100, "51820/udp", "5432 from 10.1.2.3/16"]}},
     [HTTP, Rule(9100, "tcp", "", "allow"), Rule(51820, "udp", "", "allow"), Rule(5432, "tcp", "10.1.0.0/16", "allow")],
     ""),
]


@pytest.mark.parametrize("given, rules, note", APP_RULES)
def test_an_app_wants_its_sites_ports_and_allow_and_no_http_behind_a_relay(given, rules, note):
    settings = check_settings(given)
    assert firewall.app_rules(settings) == rules
    assert [r.label for r in firewall.app_rules(settings)] == [r.label for r in rules]
    assert firewall.site_ports(settings)[1] == note


def test_a_balancer_in_front_lets_the_sites_ports_in_from_its_addresses_only():
    assert firewall.site_rules([(80, "http"), (443, "https")], ("10.0.0.7", "10.0.0.8")) == [
        Rule(80, "tcp", "10.0.0.7"), Rule(80, "tcp", "10.0.0.8"), Rule(443, "tcp", "10.0.0.7"),
        Rule(443, "tcp", "10.0.0.8")]


def test_an_app_host_behind_the_fleets_balancer_lets_its_site_in_from_the_balancer_only():
    settings = check_settings({"fleet": {"app": ["pi1", "pi2"], "balancer": ["edge"],
                                         "addresses": {"edge": "10.0.0.7"}}})
    assert firewall.app_rules(settings) == [Rule(80, "tcp", "10.0.0.7", "http")]


def test_the_firewall_lets_in_ssh_first_then_what_every_app_wants_once_in_port_order():
    stored = [Rule(8080, "tcp", "", "http"), HTTP, Rule(80, "tcp", "", "allow"), Rule(22, "tcp", "", "allow"),
              Rule(9100, "tcp", "10.0.0.0/8", "allow"), Rule(8080, "tcp", "", "allow")]
    wanted = firewall.wanted_rules(SSH, stored)
    assert [r.describe() for r in wanted] == ["22/tcp (ssh)", "80/tcp (http)", "8080/tcp (http)",
                                              "9100/tcp from 10.0.0.0/8 (allow)"]
    assert firewall.wanted_rules(SSH, list(reversed(stored))) == wanted  # whichever app provisions


# ---- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("given, written", [
    (8080, "8080/tcp"), ("8080", "8080/tcp"), (" 51820/udp ", "51820/udp"), ("9100/tcp from 192.168.1.7/24",
                                                                              "9100/tcp from 192.168.1.0/24"),
    ("22 from 10.0.0.1/32", "22/tcp from 10.0.0.1"), ("53/udp from 2001:db8::1/32", "53/udp from 2001:db8::/32"),
])
def test_firewall_allow_is_written_one_way(given, written):
    assert check_settings({"firewall": {"allow": [given]}}).firewall.allow == (written,)
    assert parse_rule(f"{written} allow").spec == written


# ---- what the host says ---------------------------------------------------------------------------

def test_ufws_rules_are_read_as_it_writes_them_and_ours_are_told_from_yours():
    state = parse_firewall((DATA / "ufw-active.txt").read_text())
    assert state.ufw_installed and state.nft_installed and not state.ruleset and not state.nft.loaded
    ufw = state.ufw
    assert ufw.active and ufw.incoming == "deny" and ufw.outgoing == "allow"
    assert [(r.rule.describe() if r.rule else None, r.ours) for r in ufw.rules] == [
        ("22/tcp (ssh)", True), ("9100/tcp from 10.0.0.0/8 (allow)", True), ("8082/tcp", False),
        ("2222/tcp", False),  # limit: lets in, slowly
        (None, False),  # from a network to every port
        (None, False),  # on one interface only
        (None, False),  # deny
        ("51820/tcp from 2001:db8::/32 (allow)", True)]
    assert ufw.rules[1].words == ("allow", "from", "10.0.0.0/8", "to", "any", "port", "9100", "proto", "tcp",
                                  "comment", "modelhost allow")
    assert firewall.ufw_listing(state) == ("22/tcp (ssh), 9100/tcp from 10.0.0.0/8 (allow), 51820/tcp from "
                                           "2001:db8::/32 (allow), 8082/tcp (yours), 2222/tcp (yours)")


def test_ufw_off_still_shows_the_rules_added():
    state = parse_firewall((DATA / "ufw-inactive.txt").read_text())
    assert not state.ufw.active and [" ".join(r.words) for r in state.ufw.rules][0] == "allow 8082/tcp"


# line of `ufw show added` -> the rule it lets in, if it is a plain one
UFW_LINES = [
    ("ufw allow 22/tcp comment 'modelhost ssh'", Rule(22, "tcp", "", "ssh")),
    ("ufw allow 22", Rule(22, "any")),
    ("ufw allow log 80/tcp", Rule(80, "tcp")),
    ("ufw allow OpenSSH", None),  # an application profile
    ("ufw allow out 53/udp", None),
    ("ufw allow 8000:8010/tcp", None),
    ("ufw allow 80,443/tcp", None),
    ("ufw allow from 10.0.0.0/8 port 1234 to any port 80 proto tcp", None),
    ("ufw allow from 10.0.0.0/8 to 10.0.0.5 port 80 proto tcp", None),
    ("ufw reject 25/tcp", None),
    ("ufw route allow 80/tcp", None),
    ("ufw allow from 10.0.0.0/8 to any port 5432 proto tcp comment 'db, by hand'", Rule(5432, "tcp", "10.0.0.0/8")),
]


@pytest.mark.parametrize("line, rule", UFW_LINES)
def test_a_line_of_ufw_show_added_is_a_rule_only_when_it_plainly_lets_a_port_in(line, rule):
    parsed = parse_ufw_rule(tuple(shlex.split(line)[1:]))
    assert parsed.rule == rule and (parsed.rule.label if rule else "") == (rule.label if rule else "")


@pytest.mark.parametrize("present, covered", [
    (Rule(22, "tcp"), True), (Rule(22, "any"), True), (Rule(22, "udp"), False), (Rule(2222, "tcp"), False),
    (Rule(22, "tcp", "10.0.0.0/8"), False)])
def test_a_rule_of_yours_that_lets_the_port_in_stands_in_for_ours(present, covered):
    assert commands.firewall.covers(present, SSH) is covered


def test_our_nftables_table_is_read_back_as_nft_lists_it():
    state = parse_firewall((DATA / "nftables-loaded.txt").read_text())
    assert state.ruleset and state.nft_installed and not state.ufw_installed and state.ufw is None
    assert state.nft.loaded and state.nft.drops
    assert [r.describe() for r in state.nft.rules] == [
        "22/tcp (ssh)", "80/tcp (http)", "443/tcp (https)", "9100/tcp from 10.0.0.0/8 (allow)",
        "51820/udp from 2001:db8::/32 (allow)"]
    assert not parse_firewall("### tools\nnft\n").nft.loaded


def test_the_nftables_file_makes_our_table_anew_and_touches_no_other():
    text = nft_ruleset([SSH, HTTP, Rule(9100, "tcp", "10.0.0.0/8", "allow"), Rule(53, "udp", "2001:db8::/32", "allow")])
    assert "flush ruleset" not in text and text.count("table inet modelhost") == 3
    assert "table inet modelhost {}\ndelete table inet modelhost\n" in text
    assert "policy drop;" in text and 'iif "lo" accept' in text and "ct state established,related accept" in text
    body = text.split("table inet modelhost {\n", 1)[1]
    assert body.index("tcp dport 22 accept") < body.index("tcp dport 80 accept")
    assert 'ip saddr 10.0.0.0/8 tcp dport 9100 accept comment "modelhost allow"' in text
    assert 'ip6 saddr 2001:db8::/32 udp dport 53 accept comment "modelhost allow"' in text


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
                    reason="needs root, nft and ip (a scratch network namespace)")
def test_nft_takes_the_file_twice_and_lists_what_the_parser_reads(tmp_path):
    """In a network namespace of the test's own: this machine's rules are never touched."""
    rules = [SSH, HTTP, Rule(9100, "tcp", "10.0.0.0/8", "allow"), Rule(53, "udp", "2001:db8::/32", "allow")]
    path = tmp_path / "modelhost.nft"
    path.write_text(nft_ruleset(rules))
    name = f"mhfw{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        inside = ["ip", "netns", "exec", name]
        for argv in (commands.nft_check(path), ["nft", "-f", str(path)], ["nft", "-f", str(path)]):
            subprocess.run(inside + argv, check=True, capture_output=True)
        listed = subprocess.run(inside + commands.nft_list(), check=True, capture_output=True, text=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
    state = commands.parse_nft(listed)
    assert state.drops and list(state.rules) == rules and [r.label for r in state.rules] == ["ssh", "http", "allow",
                                                                                             "allow"]


@pytest.mark.parametrize("text, found", [
    ("198.51.100.1 53980 198.51.100.2 22\n", ("198.51.100.2", 22)),
    ("fe80::1%eth0 40000 2001:db8::5 2222", ("2001:db8::5", 2222)),
    ("\n", None), ("1.2.3.4 5 6.7.8.9", None)])
def test_the_sessions_port_is_the_one_the_host_saw(text, found):
    assert commands.parse_ssh_connection(text) == found


def test_apts_candidates_say_what_it_would_install():
    text = ("ufw:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n     0.36.2-1 -1\n"
            "        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n"
            "nftables:\n  Installed: (none)\n  Candidate: 1.0.6-2+deb12u2\n  Version table:\n")
    assert commands.parse_candidates(text) == {"ufw": None, "nftables": "1.0.6-2+deb12u2"}


def test_rules_files_are_read_back_as_written():
    rules = [HTTP, Rule(9100, "tcp", "10.0.0.0/8", "allow")]
    text = commands.rules_text(rules, "two lines\nof header")
    assert text.startswith("# two lines\n# of header\n") and commands.parse_rules(text) == rules
    assert [r.label for r in commands.parse_rules(text)] == ["http", "allow"]


def test_the_safety_timer_is_a_systemd_timer_or_a_sleeping_shell_of_its_own_session():
    undo = ["ufw", "disable"]
    assert shlex.join(commands.undo_later(True, 90, undo, Path("/run/x.pid"))) == (
        "systemd-run --quiet --unit modelhost-firewall-undo --description 'modelhost: the firewall off again, unless "
        "fab provision confirmed it' --on-active=90s --timer-property=AccuracySec=1s -- ufw disable")
    argv = commands.undo_later(False, 90, undo, Path("/run/x.pid"))
    assert argv[3:] == ["sh", "90", "ufw disable", "/run/x.pid"] and argv[2].startswith("setsid sh -c")
    assert "kill -s TERM -- " in commands.cancel_undo(False, Path("/run/x.pid"))[2]


@pytest.mark.skipif(not shutil.which("dash"), reason="needs dash, Debian's sh")
def test_the_sleeping_undo_runs_unless_cancelled_and_the_cancel_leaves_nothing(tmp_path):
    def sh(*argvs):  # each command in one shell, one straight after the other
        subprocess.run(["dash", "-c", "\n".join(shlex.join(argv) for argv in argvs)], check=True, timeout=5)

    cancelled, fired, pid = tmp_path / "cancelled", tmp_path / "fired", tmp_path / "undo.pid"
    # cancelled at once, before the sleeping shell may even have its own session (the kill then finds no
    # process group): it still never runs
    sh(commands.undo_later(False, 1, ["touch", str(cancelled)], pid), commands.cancel_undo(False, pid))
    assert not pid.exists()
    sh(commands.undo_later(False, 1, ["touch", str(fired)], pid))
    assert pid.exists()
    deadline = time.monotonic() + 10
    while not fired.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    assert fired.exists() and not cancelled.exists() and not pid.exists()
    sh(commands.cancel_undo(False, pid))  # nothing pending: a quiet no-op


# ---- the step, against a fake target -------------------------------------------------------------

class FakeUfw:
    """ufw as the fake target's commands see it: installed or not, on or off, its rules."""

    def __init__(self, target, installed=True, active=False, lines=(), nft=False):
        self.target, self.installed, self.active, self.lines, self.nft = target, installed, active, list(lines), nft
        self.incoming = "DROP"
        self.loaded = False  # our nftables table
        session = "198.51.100.1 50000 198.51.100.2 22\n"
        target.respond(r"^sh -c 'echo \"\$SSH_CONNECTION\"'", lambda *_: (session, "", 0))
        target.respond(r"### tools", lambda *_: (self.read(), "", 0))
        target.respond(r"/\*\.rules", lambda *_: (self.rule_files(), "", 0))
        target.respond(r"^ufw ", self.ufw)
        target.respond(r"apt-cache policy", lambda *_: ("ufw:\n  Candidate: 0.36.2-1\nnftables:\n  Candidate: 1.0.6\n",
                                                         "", 0))
        target.respond(r"apt-get .* install ufw", self.install)
        target.respond(r"reload-or-restart modelhost-firewall", lambda *_: self.load(True))
        target.respond(r"nft delete table inet modelhost", lambda *_: self.load(False))

    def load(self, loaded: bool):
        self.loaded = loaded
        return "", "", 0

    def install(self, argv, command):
        self.installed = True
        return "", "", 0

    def read(self) -> str:
        text = "### tools\n" + ("ufw\n" if self.installed else "") + ("nft\n" if self.nft else "")
        text += "ours\n" if firewall.RULESET in self.target.files else ""
        if self.installed:
            text += (f"### status\nStatus: {'active' if self.active else 'inactive'}\n### added\n"
                     + "".join(f"ufw {line}\n" for line in self.lines)
                     + f'### defaults\nDEFAULT_INPUT_POLICY="{self.incoming}"\nDEFAULT_OUTPUT_POLICY="ACCEPT"\n')
        if self.loaded:  # the file's lines, as nft lists them near enough
            text += "### nft\n" + self.target.files[firewall.RULESET]
        return text

    def rule_files(self) -> str:
        return "".join(text for path, text in sorted(self.target.files.items())
                       if path.parent == firewall.DIRECTORY and path.suffix == ".rules")

    def ufw(self, argv, command):
        words = argv[1:]
        if words[0] == "allow":
            rule = shlex.join(words)
            self.lines.append(rule)
        elif words[0] == "delete":
            self.lines.remove(shlex.join(words[1:]))
        elif words == ["--force", "enable"]:
            self.active = True
        elif words == ["disable"]:
            self.active = False
        elif words[:2] == ["default", "deny"]:
            self.incoming = "DROP"
        self.loaded = False  # our nftables table
        return "", "", 0


@pytest.fixture
def fake():
    ctx, target = fake_context()
    ctx.__dict__["facts"] = replace(ctx.facts, init="systemd")
    target.commands.clear()
    return ctx, target, FakeUfw(target)


def last(target, pattern: str) -> int:
    """Where the last command matching pattern ran (-1 when none did)."""
    return max((i for i, c in enumerate(target.commands) if re.search(pattern, c)), default=-1)


def firewall_step(ctx):
    firewall.ensure_firewall(ctx)
    return ctx.steps[-1]


def test_ufw_is_turned_on_under_the_safety_timer_ssh_first_and_confirmed_by_a_new_connection(fake):
    ctx, target, ufw = fake
    step = firewall_step(ctx)
    assert step.changed and ufw.active
    assert step.detail == ("let in 22/tcp (ssh), 80/tcp (http); turned it on (also at boot); a new SSH connection "
                           "logged in; ufw active: 22/tcp (ssh), 80/tcp (http); the rest of incoming dropped")
    order = [target.index(p) for p in (r"^systemd-run .* -- ufw disable$", r"ufw allow .* port 22 comment 'modelhost",
                                       r"ufw allow .* port 80 ", r"^ufw --force enable$", "^connects again$")]
    assert order == sorted(order) and max(order) < 10**9, target.commands
    assert last(target, r"systemctl stop .*modelhost-firewall-undo") > order[-1]  # the timer cancelled
    assert target.files[firewall.DIRECTORY / "modelhost.rules"].endswith("80/tcp http\n")


def test_a_second_run_changes_nothing_and_sets_no_timer(fake):
    ctx, target, ufw = fake
    firewall_step(ctx)
    target.commands.clear()
    step = firewall_step(ctx)
    assert not step.changed and step.detail == "ufw active: 22/tcp (ssh), 80/tcp (http); the rest of incoming dropped"
    assert not target.ran("systemd-run|^ufw |connects again|apt-get"), target.commands


def test_a_rule_of_ours_no_app_wants_goes_and_yours_and_other_apps_stay(fake):
    ctx, target, ufw = fake
    ufw.active = True
    ufw.lines = ["allow 22/tcp comment 'modelhost ssh'", "allow 80/tcp comment 'modelhost http'",
                 "allow 8081/tcp comment 'modelhost allow'", "allow 2200/tcp comment 'modelhost ssh'", "allow 8082/tcp",
                 "allow 443/tcp comment 'modelhost https'"]
    target.files[firewall.DIRECTORY / "words.rules"] = "443/tcp https\n"  # another app's, on the host
    step = firewall_step(ctx)
    assert step.changed and target.ran(r"^ufw delete ") == ["ufw delete allow 8081/tcp comment 'modelhost allow'",
                                                            "ufw delete allow 2200/tcp comment 'modelhost ssh'"]
    assert not target.ran(r"^ufw (allow|--force)")
    assert step.detail.startswith("removed 8081/tcp (allow), 2200/tcp (ssh); a new SSH connection logged in; ufw "
                                  "active: 22/tcp (ssh), 80/tcp (http), 443/tcp (https), 8082/tcp (yours)")


def test_a_rule_of_yours_for_the_same_port_is_left_as_it_is(fake):
    ctx, target, ufw = fake
    ufw.active, ufw.lines = True, ["limit 22/tcp", "allow 80"]
    step = firewall_step(ctx)
    assert not target.ran(r"^ufw "), target.commands
    assert step.changed and step.detail == ("noted modelhost's ports in /etc/modelhost-firewall/modelhost.rules; ufw "
                                            "active: 22/tcp (yours), 80 (yours); the rest of incoming dropped")
    assert not firewall_step(ctx).changed


def test_when_the_new_connection_fails_ufw_goes_off_over_the_session_and_the_timer_is_cancelled(fake):
    ctx, target, ufw = fake
    target.reconnect_fails = "cannot connect to 198.51.100.2: timed out"
    with pytest.raises(DeployError, match=r"after the firewall changed, a new SSH connection to fake failed \(cannot "
                                          r"connect to 198.51.100.2: timed out\), so the firewall is off again .* "
                                          r"port 22 \(the port this session came in on"):
        firewall.ensure_firewall(ctx)
    assert not ufw.active and ctx.steps[-1].failed
    assert target.index("^connects again$") < target.index(r"^ufw disable$") < last(target, r"systemctl stop .*-undo")


def test_on_an_initd_host_the_timer_is_a_sleeping_shell(fake):
    ctx, target, ufw = fake
    ctx.__dict__["facts"] = replace(ctx.facts, init="init")
    firewall_step(ctx)
    assert target.ran(r"^sh -c 'setsid sh -c") and not target.ran("systemd-run")
    assert target.index("setsid") < target.index(r"^ufw --force enable$") < last(target, r"kill -s TERM")


def test_without_ufw_apt_installs_it_once(fake):
    ctx, target, ufw = fake
    ufw.installed = False
    step = firewall_step(ctx)
    assert step.detail.startswith("installed ufw with apt; let in 22/tcp (ssh)"), step.detail
    assert len(target.ran("apt-get .* update")) == 1
    target.commands.clear()
    firewall_step(ctx)
    assert not target.ran("apt-")


def test_where_apt_has_no_ufw_it_is_nftables_with_our_file_checked_first_and_loaded_at_boot(fake):
    ctx, target, ufw = fake
    ufw.installed = False
    no_ufw = "ufw:\n  Candidate: (none)\nnftables:\n  Candidate: 1.0.6\n"
    target.respond(r"apt-cache policy", lambda *_: (no_ufw, "", 0))
    target.answer(r"^systemctl is-enabled modelhost-firewall$", exited=1)
    step = firewall_step(ctx)
    text = target.files[firewall.RULESET]
    assert "tcp dport 22 accept" in text and "tcp dport 80 accept" in text
    assert step.detail.startswith("installed nftables with apt; loaded table inet modelhost: 22/tcp (ssh), 80/tcp "
                                  "(http), now and at boot (modelhost-firewall); a new SSH connection logged in; "
                                  "nftables active"), step.detail
    order = [target.index(p) for p in (r"^nft -c -f ", r"^systemd-run .* -- sh -c .*nft delete table inet modelhost",
                                       r"^systemctl enable modelhost-firewall$",
                                       r"^systemctl reload-or-restart modelhost-firewall$", "^connects again$")]
    assert order == sorted(order) and max(order) < 10**9, target.commands
    assert firewall.BOOT_UNIT in target.files


def test_on_nftables_a_second_run_changes_nothing_and_asks_apt_nothing(fake):
    ctx, target, ufw = fake
    ufw.installed = False
    no_ufw = "ufw:\n  Candidate: (none)\nnftables:\n  Candidate: 1.0.6\n"
    target.respond(r"apt-cache policy", lambda *_: (no_ufw, "", 0))
    firewall_step(ctx)
    ufw.nft = True  # installed by then
    target.commands.clear()
    step = firewall_step(ctx)
    assert not step.changed and step.detail == ("nftables active (table inet modelhost): 22/tcp (ssh), 80/tcp (http); "
                                                "the rest of incoming dropped")
    assert not target.ran("apt|reload-or-restart|systemd-run"), target.commands


def test_once_ufw_is_there_it_takes_over_and_our_nftables_table_goes_after_it_is_on(fake):
    ctx, target, ufw = fake
    ufw.nft, ufw.loaded = True, True
    target.files[firewall.RULESET] = nft_ruleset([SSH, HTTP])
    target.files[firewall.BOOT_UNIT] = firewall.BOOT_UNIT_TEXT
    step = firewall_step(ctx)
    assert "took modelhost's nftables table and /etc/modelhost-firewall/modelhost.nft away" in step.detail
    assert target.index(r"^ufw --force enable$") < target.index(r"nft delete table inet modelhost; systemctl disable")
    assert not ufw.loaded and firewall.RULESET not in target.files and firewall.BOOT_UNIT not in target.files


def test_a_file_nft_refuses_is_put_back_and_nothing_is_loaded(fake):
    ctx, target, ufw = fake
    ufw.installed, ufw.nft = False, True
    target.files[firewall.RULESET] = "the old one\n"
    target.answer(r"^nft -c -f ", exited=1, stderr="Error: syntax error")
    with pytest.raises(DeployError, match="nft refused /etc/modelhost-firewall/modelhost.nft on fake .the old one is "
                                          "back.:\nError: syntax error"):
        firewall.ensure_firewall(ctx)
    assert target.files[firewall.RULESET] == "the old one\n" and not target.ran(r"reload-or-restart|systemd-run")


def test_turned_off_in_the_settings_it_touches_nothing(fake):
    ctx, target, _ = fake
    ctx.settings.firewall.enabled = False
    step = firewall_step(ctx)
    assert not step.changed and step.detail == "off ([firewall] enabled = false): the host's firewall is left as it is"
    assert target.commands == []


def test_without_ssh_connection_it_stops_before_touching_anything(fake):
    ctx, target, _ = fake
    target.answer(r"SSH_CONNECTION", stdout="\n")
    with pytest.raises(DeployError, match=r"cannot tell which port this SSH session came in on: \$SSH_CONNECTION "
                                          "is ''"):
        firewall.ensure_firewall(ctx)
    assert not target.ran("ufw|nft|systemd-run")


def test_status_says_what_is_let_in(fake):
    ctx, target, ufw = fake
    assert firewall.describe(ctx) == "ufw inactive: fab provision turns it on"
    firewall_step(ctx)
    assert firewall.describe(ctx) == "ufw active: 22/tcp (ssh), 80/tcp (http); the rest of incoming dropped"
    ctx.settings.firewall.enabled = False
    assert firewall.describe(ctx) == ("off ([firewall] enabled = false); provision leaves it alone: ufw active: "
                                      "22/tcp (ssh), 80/tcp (http)")
