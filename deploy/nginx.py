"""nginx on a target: its files written, tested with nginx -t, enabled, reloaded gracefully, or put back.

The local target runs its own nginx (as the user, with the rendered nginx.conf); a host's is its
system service. A new configuration never reaches a running nginx unless nginx -t passes it.
"""
from __future__ import annotations

import functools
from pathlib import Path

from deploy import commands
from deploy.context import Context, DeployError


class Nginx:
    def __init__(self, ctx: Context):
        self.ctx, self.layout = ctx, ctx.layout

    @functools.cached_property
    def binary(self) -> str:
        """nginx's path on the target ("nginx" when it is not installed: see installed)."""
        return self.ctx.run(commands.locate(), check=False).stdout.strip() or "nginx"

    @property
    def installed(self) -> bool:
        return self.binary != "nginx"

    def look_again(self) -> None:
        """Forget where nginx was (after installing it)."""
        self.__dict__.pop("binary", None)

    def command(self, *args: str) -> list[str]:
        return commands.nginx(self.layout, self.binary, *args)

    def pid(self) -> int | None:
        """The master's pid, when it runs."""
        text = (self.ctx.target.read(self.layout.nginx_pid_file) or "").strip()
        if text.isdigit() and self.ctx.run(commands.alive(int(text)), check=False).exited == 0:
            return int(text)
        return None

    def test(self) -> None:
        result = self.ctx.run(self.command("-t", "-q"), check=False)
        if result.exited != 0:
            raise DeployError(f"nginx -t refused the new configuration:\n{(result.stdout + result.stderr).strip()}")

    def reload_if_running(self) -> None:
        if self.pid():
            self.ctx.run(self.command("-s", "reload"))

    def enable_sites(self, files: dict[Path, str]) -> dict[Path, str | None]:
        """Debian's nginx reads sites-enabled: a link to each site file; returns the new links (as
        write_files does: None, so restore removes them)."""
        made = {}
        for path in files:
            link = self.layout.nginx_enabled / path.name if path.parent == self.layout.nginx_sites else None
            if link and not self.ctx.exists(link):
                self.ctx.link(path, link)
                made[link] = None
        return made

    def ensure(self, files: dict[Path, str]) -> str:
        """nginx runs with these files: checked with nginx -t first (the old files are put back if it
        fails), then started, or reloaded gracefully, waiting until the old workers have finished
        their requests. Returns "started", "reloaded" or "" (nothing changed)."""
        ctx = self.ctx
        earlier = ctx.write_files(files)
        stale = self.stale_sites(files)
        for path in stale:  # the app's site under its old first name: its upstream would clash
            earlier[path] = ctx.target.read(path)
            ctx.run(commands.remove(path, *([self.layout.nginx_enabled / path.name] if self.layout.nginx_enabled
                                             else [])))
        if self.layout.nginx_enabled:
            earlier.update(self.enable_sites(files))
        try:
            self.test()
        except DeployError:
            ctx.restore(earlier)
            if self.layout.nginx_enabled:
                self.enable_sites(dict.fromkeys(stale, ""))
            raise
        master = self.pid()
        if master is not None and not self.kept(master):
            self.stop_own()
            master = None
        if master is None:
            self.start(earlier)
            return "started"
        if not earlier:
            return ""
        self.reload(master)
        return "reloaded"

    def stale_sites(self, files: dict[Path, str]) -> list[Path]:
        """Site files of this app alone that the new files do not have: rendered for names it no longer
        has first (a site file is named after its first server name). One command, whatever the number
        of sites."""
        found = self.ctx.run(commands.sites_of(self.layout.nginx_sites, self.layout.app), check=False).stdout
        return [Path(line) for line in found.splitlines() if line and Path(line) not in files]

    def start(self, earlier: dict[Path, str | None]) -> None:
        """Start nginx; if it does not, put back the files (earlier) and say why."""
        ctx, own = self.ctx, self.layout.nginx_conf is not None
        if own:  # supervisord's program; added first if supervisord's configuration is older than it
            ctx.run(commands.supervisorctl(self.layout, "update", "nginx"), check=False, timeout=120)
        result = ctx.run(commands.nginx_start(self.layout, ctx.facts.systemd), check=False, timeout=120)
        started = result.exited == 0 or "already started" in result.stdout
        if not started or not ctx.wait(lambda: self.pid() is not None, 10):
            ctx.restore(earlier)
            output = result.stdout + result.stderr
            if own:  # supervisorctl says "spawn error"; nginx's own words are in its log
                output += ctx.run(commands.tail([self.layout.nginx_logs[0]], 10), check=False).stdout
            said = "\n".join(dict.fromkeys(output.strip().splitlines()))  # it retries
            setting = "[local] port" if self.layout.nginx_conf else "[nginx] port or address"
            fix = (f"\nanother program listens on {self.layout.http_listen}: stop it, or set {setting} in "
                   "deploy.toml" if "Address already in use" in said else "")
            raise DeployError(f"nginx did not start:\n{said}{fix}")

    def reload(self, master: int) -> None:
        """A graceful reload: new workers take new connections, the old ones finish theirs first."""
        ctx = self.ctx
        old_workers = ctx.run(commands.children(master), check=False).stdout.split()
        ctx.run(self.command("-s", "reload"))
        timeout = ctx.settings.gunicorn.timeout + 10
        gone = lambda: not set(old_workers) & set(ctx.run(commands.children(master), check=False).stdout.split())
        if not ctx.wait(gone, timeout):
            raise DeployError(f"nginx's old workers ({', '.join(old_workers)}) did not finish within {timeout} s "
                              "after the reload")

    def kept(self, master: int) -> bool:
        """The master is the one its keeper knows: the local target's supervisord's program (a host's
        nginx is its service's). Else it is the local nginx an older modelhost started by itself, or
        one a dead supervisord left: stopped, so that supervisord's can take the port."""
        if not self.layout.nginx_conf:
            return True
        said = self.ctx.run(commands.supervised_nginx(self.layout), check=False).stdout.strip()
        return said == str(master)

    def stop_own(self) -> list[int]:
        """Stop the local target's own nginx, gracefully (a host's serves more than this app: left
        alone); returns its master's pid, once it has exited."""
        master = self.pid() if self.layout.nginx_conf else None
        if master:
            self.ctx.run(self.command("-s", "quit"), check=False)
            timeout = self.ctx.settings.gunicorn.timeout + 10
            if not self.ctx.wait(lambda: self.pid() is None, timeout):
                raise DeployError(f"nginx ({master}) did not stop within {timeout} s")
        return [master] if master else []
