"""A host's firewall: ufw's commands and what it says, modelhost's own nftables table, the session's
SSH port, and the timer that turns a new firewall off again unless it is cancelled in time.

A rule is an incoming port (and protocol) opened to everyone or to one address or network. Ours
carry a comment starting with "modelhost" (ufw's rule comments, nft's rule comments): that is how
provision tells its own rules from the ones you added by hand, which it never touches.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

OURS = "modelhost"  # the first word of our rules' comments
TABLE = ("inet", "modelhost")  # our nftables table (family, name): nothing else of the host's is touched
UNDO_UNIT = "modelhost-firewall-undo"  # the systemd timer (and service) of the safety switch


@dataclass(frozen=True, order=True)
class Rule:
    """An incoming port let in: for everyone (source "") or from an address or network."""
    port: int
    proto: str = "tcp"
    source: str = ""
    label: str = field(default="", compare=False)  # why it is open: ssh, http, https, allow

    @property
    def spec(self) -> str:
        """As people (and [firewall] allow) write it: "22/tcp", "9100/tcp from 10.0.0.0/8"."""
        port = str(self.port) if self.proto == "any" else f"{self.port}/{self.proto}"  # a rule of yours: ufw allow 80
        return port + (f" from {self.source}" if self.source else "")

    @property
    def comment(self) -> str:
        return f"{OURS} {self.label}".strip()

    def describe(self) -> str:
        return self.spec + (f" ({self.label})" if self.label else "")


SPEC = re.compile(r"(\d{1,5})/(tcp|udp)(?: from (\S+))?")


def parse_rule(line: str) -> Rule:
    """A rule from its spec and an optional label after it ("80/tcp http"); ValueError otherwise."""
    words = line.split()
    label = words.pop() if len(words) in (2, 4) else ""
    match = SPEC.fullmatch(" ".join(words))
    if not match or not 1 <= int(match[1]) <= 65535:
        raise ValueError(f"not a firewall rule: {line!r}")
    return Rule(int(match[1]), match[2], match[3] or "", label)


def rules_text(rules: list[Rule], header: str) -> str:
    """A file of rules, one per line with its label (what parse_rules reads back)."""
    return "".join([f"# {line}\n" for line in header.splitlines()] + [f"{r.spec} {r.label}\n" for r in rules])


def parse_rules(text: str) -> list[Rule]:
    """The rules of files rules_text wrote (comments and blank lines skipped)."""
    return [parse_rule(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_rule_files(directory: Path) -> list[str]:
    """Every *.rules file of the directory, one after the other (nothing when there is none)."""
    return ["sh", "-c", 'for f in "$1"/*.rules; do [ -f "$f" ] && cat -- "$f"; done; true', "sh", str(directory)]


# ---- what the host has --------------------------------------------------------------------------

FIREWALL_READ = """PATH="$PATH:/usr/sbin:/sbin"
echo '### tools'
for tool in ufw nft; do command -v "$tool" >/dev/null && echo "$tool"; done
[ -e "$1" ] && echo ours
if command -v ufw >/dev/null; then
  echo '### status'; ufw status
  echo '### added'; ufw show added
  echo '### defaults'; grep '^DEFAULT_' /etc/default/ufw
fi
if command -v nft >/dev/null && table=$(nft list table inet modelhost 2>/dev/null); then
  echo '### nft'; echo "$table"
fi
true"""


def firewall_read(ruleset: Path) -> list[str]:
    """The host's firewall in one go: which tools it has, whether our nftables file is there, ufw's
    state (active or not, the rules added, also while it is off, the default policies), and our
    nftables table when it is loaded."""
    return ["sh", "-c", FIREWALL_READ, "sh", str(ruleset)]


@dataclass(frozen=True)
class FirewallState:
    ufw_installed: bool
    nft_installed: bool
    ruleset: bool  # our nftables file is there (provision chose nftables before)
    ufw: UfwState | None  # when ufw is installed
    nft: NftState  # our table (loaded or not)


def parse_firewall(output: str) -> FirewallState:
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^### |\Z)", output, re.M | re.S))
    tools = sections.get("tools", "").split()
    return FirewallState(ufw_installed="ufw" in tools, nft_installed="nft" in tools, ruleset="ours" in tools,
                         ufw=parse_ufw(sections) if "ufw" in tools else None,
                         nft=parse_nft(sections.get("nft", ""), "nft" in sections))


def apt_candidates(packages: list[str]) -> list[str]:
    """What apt would install of each package (its lists as they are)."""
    return ["apt-cache", "policy", *packages]


def parse_candidates(text: str) -> dict[str, str | None]:
    """package -> the version apt would install, None when it has none (unknown, or pinned away)."""
    found: dict[str, str | None] = {}
    package = None
    for line in text.splitlines():
        header = re.fullmatch(r"(\S+):", line.strip()) if not line.startswith(" ") else None
        if header:
            package = header[1]
            found[package] = None
        elif package and line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            found[package] = None if version == "(none)" else version
    return found


# ---- the session's SSH port ----------------------------------------------------------------------

def ssh_connection() -> list[str]:
    """$SSH_CONNECTION as sshd set it for this session: "client port server port". Run as the SSH
    user: sudo's env_reset drops it."""
    return ["sh", "-c", 'echo "$SSH_CONNECTION"']


def parse_ssh_connection(text: str) -> tuple[str, int] | None:
    """(the host's address, the port) this session came in on; None when it is not an SSH session."""
    words = text.split()
    if len(words) != 4 or not words[3].isdigit():
        return None
    return words[2], int(words[3])


# ---- ufw ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UfwRule:
    """One line of `ufw show added`: its words (after "ufw") and, when it lets a port in from
    anywhere or from one source (no interface, app or source port), that rule."""
    words: tuple[str, ...]
    comment: str
    rule: Rule | None

    @property
    def ours(self) -> bool:
        return self.comment.split()[:1] == [OURS]


@dataclass(frozen=True)
class UfwState:
    active: bool
    rules: tuple[UfwRule, ...]
    incoming: str  # the default policy: "deny", "reject" or "allow" (ufw's words)
    outgoing: str

    def covering(self, wanted: Rule) -> UfwRule | None:
        """The rule of ours or yours that lets wanted's port in already, if any."""
        return next((r for r in self.rules if r.rule and covers(r.rule, wanted)), None)


def covers(present: Rule, wanted: Rule) -> bool:
    """present lets in what wanted would: the same port, the same or any protocol, from anywhere or the same source."""
    return (present.port == wanted.port and present.proto in (wanted.proto, "any")
            and present.source in ("", wanted.source))


POLICIES = {"DROP": "deny", "REJECT": "reject", "ACCEPT": "allow"}


def parse_ufw(sections: dict[str, str]) -> UfwState:
    """ufw's sections of firewall_read."""
    defaults = dict(re.findall(r'^DEFAULT_(\w+)_POLICY="?(\w+)"?', sections.get("defaults", ""), re.M))
    rules = []
    for line in sections.get("added", "").splitlines():
        try:
            words = shlex.split(line)
        except ValueError:  # a comment with a quote in it: someone's, not ours
            continue
        if words[:1] == ["ufw"] and len(words) > 2:
            rules.append(parse_ufw_rule(tuple(words[1:])))
    return UfwState(active=bool(re.search(r"^Status: active", sections.get("status", ""), re.M)),
                    rules=tuple(rules), incoming=POLICIES.get(defaults.get("INPUT", ""), "allow"),
                    outgoing=POLICIES.get(defaults.get("OUTPUT", ""), "allow"))


def parse_ufw_rule(words: tuple[str, ...]) -> UfwRule:
    """A rule as `ufw show added` writes it (its short or full syntax, see ufw's parser.get_command)."""
    fields = {"action": words[0], "direction": "in", "from": "any", "to": "any", "proto": "any", "comment": ""}
    plain = []
    i = 1
    while i < len(words):
        word, following = words[i], words[i + 1] if i + 1 < len(words) else ""
        if word in ("in", "out") and following == "on":
            fields["interface"] = words[i + 2] if i + 2 < len(words) else ""
            i += 3
        elif word in ("in", "out"):
            fields["direction"] = word
            i += 1
        elif word in ("from", "to"):
            fields[word] = following
            i += 2
            if i < len(words) and words[i] in ("port", "app"):
                fields[f"{word} {words[i]}"] = words[i + 1] if i + 1 < len(words) else ""
                i += 2
        elif word in ("proto", "comment"):
            fields[word] = following
            i += 2
        else:  # the short syntax's PORT[/PROTO] or app, and log / log-all
            plain.append(word)
            i += 1
    plain = [w for w in plain if w not in ("log", "log-all")]
    if plain:
        port, _, proto = plain[0].partition("/")
        fields["to port"], fields["proto"] = port, proto or "any"
    rule = None
    simple = not ({"interface", "from port", "from app", "to app"} & set(fields))
    if (fields["action"] in ("allow", "limit") and fields["direction"] == "in" and simple and fields["to"] == "any"
            and fields.get("to port", "").isdigit() and fields["proto"] in ("tcp", "udp", "any")):
        source = "" if fields["from"] == "any" else fields["from"]
        label = fields["comment"].split(" ", 1)[1] if fields["comment"].startswith(f"{OURS} ") else ""
        rule = Rule(int(fields["to port"]), fields["proto"], source, label)
    return UfwRule(words, fields["comment"], rule)


def ufw_allow(rule: Rule) -> list[str]:
    """The rule, added with its comment (ufw writes it to its files and, when active, to the kernel)."""
    return ["ufw", "allow", "proto", rule.proto, "from", rule.source or "any", "to", "any", "port", str(rule.port),
            "comment", rule.comment]


def ufw_delete(rule: UfwRule) -> list[str]:
    """The rule as `ufw show added` wrote it, deleted."""
    return ["ufw", "delete", *rule.words]


def ufw_default(policy: str, direction: str) -> list[str]:
    return ["ufw", "default", policy, direction]


def ufw_enable() -> list[str]:
    """On now and at boot; --force: no question about SSH sessions (ours is checked apart)."""
    return ["ufw", "--force", "enable"]


def ufw_disable() -> list[str]:
    return ["ufw", "disable"]


# ---- nftables: a table of our own ---------------------------------------------------------------

NFT_HEADER = """#!/usr/sbin/nft -f
# modelhost's firewall, written by fab provision: only SSH and the site's ports come in.
# A table of its own: the host's other tables (/etc/nftables.conf's, ufw's, docker's) are left
# alone, but each of them can drop what this one accepts. Loaded at boot by modelhost-firewall.
"""
# Before the ports: what a host needs whatever it serves.
NFT_BASE = [
    ('iif "lo" accept', "this machine's own connections"),
    ("ct state established,related accept", "answers to connections made from here, and the sessions let in"),
    ("ct state invalid drop", ""),
    ("meta l4proto { icmp, ipv6-icmp } accept", "ping, path MTU discovery, IPv6 neighbour discovery"),
    ("ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept", "DHCPv6 answers"),
]


def nft_match(rule: Rule) -> str:
    """The rule's match in nft's words: "tcp dport 22", "ip saddr 10.0.0.0/8 tcp dport 9100"."""
    source = ""
    if rule.source:
        source = f"{'ip6' if ':' in rule.source else 'ip'} saddr {rule.source} "
    return f"{source}{rule.proto} dport {rule.port}"


def nft_ruleset(rules: list[Rule]) -> str:
    """The file nft -f loads: our table made anew in one transaction (the empty table first, so
    that the delete also works the first time)."""
    family, name = TABLE
    lines = [f"\t\t{match}" + (f' comment "{why}"' if why else "") for match, why in NFT_BASE]
    lines += [f'\t\t{nft_match(rule)} accept comment "{rule.comment}"' for rule in rules]
    return (NFT_HEADER + f"table {family} {name} {{}}\ndelete table {family} {name}\ntable {family} {name} {{\n"
            "\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n"
            + "\n".join(lines) + "\n\t}\n}\n")


def nft_check(path: Path) -> list[str]:
    """nft reads the file and says what is wrong, changing nothing."""
    return ["nft", "-c", "-f", str(path)]



def nft_list() -> list[str]:
    """Our table as the kernel has it (exit 1 when it is not loaded)."""
    return ["nft", "list", "table", *TABLE]



def nft_off(systemd: bool, boot: str) -> list[str]:
    """Our table deleted and its boot service off: the nftables firewall off, now and at boot. Exits 0
    once the table is gone."""
    disable = 'systemctl disable --quiet "$1"' if systemd else 'update-rc.d -f "$1" remove'
    table = " ".join(TABLE)
    script = (f'PATH="$PATH:/usr/sbin:/sbin"; nft delete table {table} 2>/dev/null; {disable} >/dev/null 2>&1; '
              f'! nft list table {table} >/dev/null 2>&1')
    return ["sh", "-c", script, "sh", boot]


def nft_service_load(systemd: bool, boot: str) -> list[str]:
    """Our table loaded (anew) through its boot service, so that stopping the service deletes it: a
    reload when the unit is active (nft -f replaces the table in one transaction, never a moment
    without it), else a start; the init.d script's reload is nft -f."""
    return ["systemctl", "reload-or-restart", boot] if systemd else ["service", boot, "reload"]


@dataclass(frozen=True)
class NftState:
    loaded: bool
    drops: bool  # the input chain's policy is drop
    rules: tuple[Rule, ...]  # ours, in the table's order


NFT_RULE = re.compile(r'^\s*(?:ip6? saddr (\S+) )?(tcp|udp) dport (\d+) accept comment "modelhost ?([^"]*)"\s*$', re.M)


def parse_nft(output: str, loaded: bool = True) -> NftState:
    """`nft list table inet modelhost`: the policy, and our rules."""
    rules = tuple(Rule(int(port), proto, source, label) for source, proto, port, label in NFT_RULE.findall(output))
    return NftState(loaded, loaded and "policy drop;" in output, rules)


# ---- the safety switch: the firewall turns itself off unless the change is confirmed in time ------

def undo_later(systemd: bool, seconds: int, undo: list[str], pid_file: Path) -> list[str]:
    """Runs undo in seconds unless cancel_undo comes first, whatever happens to the SSH session: a
    transient systemd timer, or on init.d hosts a sleeping shell in a session of its own (its pid,
    which is its process group, in pid_file). That shell runs undo only while pid_file is there (and
    takes it away first), so a cancel that came before the shell had its own session, when the kill
    finds no group, still holds."""
    if systemd:
        return ["systemd-run", "--quiet", "--unit", UNDO_UNIT, "--description",
                "modelhost: the firewall off again, unless fab provision confirmed it",
                f"--on-active={seconds}s", "--timer-property=AccuracySec=1s", "--", *undo]
    script = ("setsid sh -c 'sleep \"$1\"; [ -e \"$3\" ] || exit 0; rm -f -- \"$3\"; eval \"$2\"' "
              'undo "$1" "$2" "$3" '
              '</dev/null >/dev/null 2>&1 &\n'
              'echo $! > "$3"')
    return ["sh", "-c", script, "sh", str(seconds), shlex.join(undo), str(pid_file)]


def cancel_undo(systemd: bool, pid_file: Path) -> list[str]:
    """The pending undo of undo_later cancelled (also one a killed provision left); exits 0 when none is
    pending any more."""
    if systemd:
        script = ('systemctl stop "$1.timer" "$1.service" 2>/dev/null; '
                  'systemctl reset-failed "$1.timer" "$1.service" 2>/dev/null; '
                  '! systemctl -q is-active "$1.timer"')
        return ["sh", "-c", script, "sh", UNDO_UNIT]
    script = '[ -s "$1" ] || exit 0; p=$(cat "$1"); rm -f -- "$1"; kill -s TERM -- "-$p" 2>/dev/null; exit 0'
    return ["sh", "-c", script, "sh", str(pid_file)]

