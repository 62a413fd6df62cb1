"""A host's system: services, packages, users, and the Python environments of releases."""
from __future__ import annotations

from pathlib import Path

from deploy.layout import Layout

# The environment the local target's daemons start with: nothing from the shell that ran `fab`
# (a FLASK_* variable exported there must not reach the app).
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


def clean_env(layout: Layout) -> list[str]:
    return ["env", "-i", f"HOME={layout.home}", f"PATH={CLEAN_PATH}", "LANG=C.UTF-8"]


def service(systemd: bool, name: str, action: str) -> list[str]:
    """A system service, the host's way: systemctl when systemd runs, else the init.d script.

    action: start, stop, reload, is-active, enable or is-enabled (exit 0 when it is).
    """
    if systemd:
        return ["systemctl", action, name]
    if action == "is-active":
        return ["service", name, "status"]
    if action == "is-enabled":  # an S link in a multi-user runlevel
        return ["sh", "-c", 'ls /etc/rc[2345].d/S??"$1" >/dev/null 2>&1', "sh", name]
    if action == "enable":
        return ["sh", "-c", 'update-rc.d "$1" defaults && update-rc.d "$1" enable', "sh", name]
    return ["service", name, action]


def missing_packages(packages: list[str]) -> list[str]:
    """Prints the packages of the list that are not installed, one per line."""
    script = ('for p; do [ "$(dpkg-query -W -f \'${db:Status-Status}\' "$p" 2>/dev/null)" = installed ] '
              '|| echo "$p"; done')
    return ["sh", "-c", script, "sh", *packages]


def apt_get(*args: str, sudo: bool = False) -> list[str]:
    """apt-get that never asks (a host's unattended install) and keeps config files changed by hand;
    with sudo, through passwordless sudo (the local target, run as a user)."""
    return [*(["sudo", "-n"] if sudo else []), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y",
            "-o", "Dpkg::Options::=--force-confold", *args]


def user_id() -> list[str]:
    return ["id", "-u"]


def passwordless_sudo() -> list[str]:
    """Exits 0 when sudo works without a password."""
    return ["sudo", "-n", "true"]


def passwd_entry(user: str) -> list[str]:
    """The user's line of the password database (nothing, exit 2, when there is no such user)."""
    return ["getent", "passwd", user]


def groups(user: str) -> list[str]:
    return ["id", "-nG", user]


def add_system_user(user: str, home: Path, shell: str, comment: str) -> list[str]:
    """A system user with a group of its own name and no home directory made."""
    return ["useradd", "--system", "--user-group", "--home-dir", str(home), "--no-create-home", "--shell", shell,
            "--comment", comment, user]


def delete_user(user: str) -> list[str]:
    return ["userdel", user]


def kill_user(user: str) -> list[str]:
    """Every process of the user, killed (exit 1 when there was none)."""
    return ["pkill", "-KILL", "-u", user]


def add_to_group(user: str, group: str) -> list[str]:
    return ["usermod", "--append", "--groups", group, user]


def missing_for_deploy(user: str, python: str, nginx_group: str, process_manager: str) -> list[str]:
    """What `fab provision` installs and a host lacks, one line each ("the user modelhost",
    "supervisor", ...); nothing when the host is provisioned (nginx is looked for apart)."""
    script = ('id -u "$1" >/dev/null 2>&1 || echo "the user $1"; '
              'id -nG "$3" 2>/dev/null | grep -qw "$1" || echo "$3 in group $1"; '
              '[ "$4" = systemd ] || command -v supervisorctl >/dev/null || echo supervisor; '
              '"$2" -c "import venv, ensurepip" 2>/dev/null || echo python3-venv')
    return ["sh", "-c", script, "sh", user, python, nginx_group, process_manager]


def python_has_venv(python: str) -> list[str]:
    """Exits 0 when python can make environments with pip in them."""
    return [python, "-c", "import venv, ensurepip"]


def make_venv(python: str, venv: Path, system_site_packages: bool = False) -> list[str]:
    """A virtualenv; with system_site_packages it also sees the system's (Debian's python3-*) packages."""
    return [python, "-m", "venv", *(["--system-site-packages"] if system_site_packages else []), str(venv)]


def pip(venv: Path, *args: str) -> list[str]:
    """The venv's pip, quiet, with the host's own pip configuration (/etc/pip.conf) in force."""
    return [str(venv / "bin" / "python"), "-m", "pip", *args[:1], "--quiet", "--disable-pip-version-check", *args[1:]]


def pip_install(venv: Path, requirements: Path) -> list[str]:
    return pip(venv, "install", "-r", str(requirements))


def pip_wheels_only(venv: Path, requirements: Path, platform: str = "", python_version: str = "") -> list[str]:
    """Resolves each requirement to a wheel without installing anything; fails naming the first that has
    none ("No matching distribution found for X"). With platform: wheels for that machine instead."""
    # pip takes another machine's options only for a --target install (a dry run writes nothing there).
    other = ["--platform", platform, "--python-version", python_version, "--target", str(venv / "other-machine")] \
        if platform else []
    return pip(venv, "install", "--dry-run", "--ignore-installed", "--no-deps", "--only-binary=:all:", *other,
               "-r", str(requirements))


# The Python projects Debian packages provide ("<package> <dist-info or egg-info name>" per line,
# "<package> -" for one that is not installed), from the files each installed.
PYTHON_PROJECTS = r"""for p; do
  files=$(dpkg-query -L "$p" 2>/dev/null) || { echo "$p -"; continue; }
  echo "$files" | sed -n "s#^/usr/lib/python3/dist-packages/\([^/]*\)\.\(dist\|egg\)-info\$#$p \1#p"
done"""


def python_projects(packages: list[str]) -> list[str]:
    return ["sh", "-c", PYTHON_PROJECTS, "sh", *packages]


# Loads NAME=value lines of the secrets file into the environment (as gunicorn.conf.py does: a
# value already set wins), then runs the command in the release directory.
WITH_SECRETS = """import os, sys
secrets, directory, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    with open(secrets, encoding="utf-8") as lines:
        for line in lines:
            name, sep, value = line.strip().partition("=")
            if sep and not name.startswith("#"):
                os.environ.setdefault(name.strip(), value.strip())
except FileNotFoundError:
    pass
os.chdir(directory)
os.execvp(argv[0], argv)
"""


def as_app(python: Path, user: str | None, env: dict, secrets: Path, directory: Path, command: str) -> list[str]:
    """A shell command run in directory as the app's user (None: the user running it), with only
    env and the secrets file's values as its environment, by the release's own Python."""
    switch = ["runuser", "-u", user, "--"] if user else []
    return [*switch, "env", "-i", *(f"{k}={v}" for k, v in env.items()), str(python), "-c", WITH_SECRETS,
            str(secrets), str(directory), "sh", "-c", command]


def now() -> list[str]:
    """The target's clock, as journalctl --since reads it."""
    return ["date", "+%Y-%m-%d %H:%M:%S"]


def children(pid: int) -> list[str]:
    """The pids whose parent is pid, one per line."""
    return ["ps", "-o", "pid=", "--ppid", str(pid)]


def alive(pid: int) -> list[str]:
    return ["kill", "-0", str(pid)]


def logrotate_check(path: Path) -> list[str]:
    """logrotate reads the file and says what it would do, changing nothing; "error:" lines for
    what it refuses."""
    return ["logrotate", "--debug", str(path)]


def crontab(*args: str) -> list[str]:
    """The user's crontab: -l prints it (exit 1 when there is none), FILE replaces it."""
    return ["crontab", *args]


def has_command(name: str) -> list[str]:
    return ["sh", "-c", 'command -v "$1"', "sh", name]


def working_directory(pid: int) -> list[str]:
    return ["readlink", f"/proc/{pid}/cwd"]


def running(name: str) -> list[str]:
    """Exits 0 when a process of that name runs."""
    return ["pgrep", "-x", name]


def process_state(pid: int) -> list[str]:
    """A process's state letters (Z: a zombie, dead but not yet reaped); nothing when there is none."""
    return ["ps", "-o", "stat=", "-p", str(pid)]


def session(leader: int) -> list[str]:
    """The pids of a session, one per line: what its leader (a daemon) started. Its pid is not
    given to another process while the session has members, so once the leader is dead these are
    its leftovers."""
    return ["pgrep", "-s", str(leader)]


def signal_session(leader: int, signal: str) -> list[str]:
    return ["pkill", f"-{signal}", "-s", str(leader)]



# A gunicorn master's and its workers' memory, one line each (the master first): pid, Rss and
# private memory (Private_Clean + Private_Dirty), in KiB, from smaps_rollup (Linux 4.14+).
MEMORY_OF = """for pid in "$1" $(pgrep -P "$1"); do
  awk -v pid="$pid" '/^Rss:/ {r = $2} /^Private_(Clean|Dirty):/ {u += $2} END {if (r) print pid, r, u}' \\
    "/proc/$pid/smaps_rollup" 2>/dev/null
done"""


def memory_of(master: int) -> list[str]:
    return ["sh", "-c", MEMORY_OF, "sh", str(master)]
