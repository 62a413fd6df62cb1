"""Rendering: every variant of the templates, compared with golden samples and checked by the real
tools (nginx -t, supervisor's parser, gunicorn --check-config, systemd-analyze verify)."""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Context

from deploy import commands
from deploy.facts import parse_facts
from deploy.layout import local_layout, system_layout
from deploy.render import RenderError, plan_app, render, supervisor_environment
from deploy.settings import check_settings
from deploy.target import Target
from deploy.validate import ValidationError, check_rendered, find_nginx, free_loopback_port
from tests.servers import ROOT

GOLDEN = Path(__file__).parent / "golden"
FACTS = Path(__file__).parent / "data" / "facts"
UPDATE = os.environ.get("MODELHOST_UPDATE_GOLDEN") == "1"
HOST = {"nginx": {"server_names": ["models.example.com"]}}


def facts(name: str, **changes):
    return dataclasses.replace(parse_facts((FACTS / f"{name}.txt").read_text()), **changes)


def merged(*tables: dict) -> dict:
    # The reference app's settings (deploy.toml), with a model size that needs no model
    out: dict = {"model": {"size_mb": 120, "path": "var/models/demo", "env": "FLASK_MODEL_PATH"},
                 "nginx": {"static_dir": "app/static"}, "deploy": {"health_path": "/readyz"}}
    for table in tables:
        for section, values in table.items():
            out[section] = {**out.get(section, {}), **values}
    return out


# name: (deploy.toml of each app, target, host facts)
VARIANTS = {
    "local": ([{}], "local", facts("debian-12-amd64")),
    "host-supervisor": ([HOST], "system", facts("ubuntu-24.04-amd64")),
    "host-tls": ([merged(HOST, {"nginx": {"tls": True}})], "system", facts("raspios-bookworm-arm64")),
    "host-tls-nginx-1.26": ([merged(HOST, {"nginx": {"tls": True}})], "system",
                            facts("ubuntu-24.04-amd64", nginx_version=(1, 26, 3))),
    "host-auth-cache-prefix-systemd": (
        [merged(HOST, {"nginx": {"basic_auth": True, "cache": True, "prefix": "/words"},
                       "app": {"process_manager": "systemd"}})], "system", facts("ubuntu-24.04-amd64")),
    "host-sync-no-limits": (
        [merged(HOST, {"gunicorn": {"worker_class": "sync", "workers": 3}, "model": {"shared": False},
                       "nginx": {"rate_limit": "off", "static_dir": ""},
                       "app": {"env": {"GREETING": 'say "%(x)s"'}}})], "system", facts("raspios-bookworm-armhf")),
    "two-apps-two-names": (
        [HOST, {"app": {"name": "words"}, "nginx": {"server_names": ["words.example.com"], "tls": True}}],
        "system", facts("ubuntu-24.04-amd64")),
    "two-apps-one-name": (
        [HOST, merged(HOST, {"app": {"name": "words", "process_manager": "systemd"},
                             "nginx": {"prefix": "/words", "cache": True}})], "system", facts("ubuntu-24.04-amd64")),
    # fab expose: the site also takes the relay tunnel's requests on a unix socket.
    "host-exposed": ([{"nginx": {"server_names": ["localhost"]},
                       "expose": {"relay": "admin@relay.example.com", "domain": "words.example.com"}}],
                     "system", facts("raspios-bookworm-arm64")),
}


def apps_for(variant: str):
    tables, kind, host = VARIANTS[variant]
    apps = []
    for table in tables:
        settings = check_settings(merged(table))
        if kind == "local":
            settings.local.root = "/home/pi/.local/share/modelhost"
            layout = local_layout(settings, user="pi", group="pi", home=Path("/home/pi"))
        else:
            layout = system_layout(settings)
        apps.append(plan_app(settings, layout, host))
    return apps, host


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_files_match_the_golden_samples(variant):
    apps, host = apps_for(variant)
    files = render(apps, host)
    directory = GOLDEN / variant
    if UPDATE:
        shutil.rmtree(directory, ignore_errors=True)
        for file in files:
            (directory / file.path).parent.mkdir(parents=True, exist_ok=True)
            (directory / file.path).write_text(file.content)
    expected = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    assert sorted(f.path for f in files) == expected
    for file in files:
        golden = (directory / file.path).read_text()
        diff = "".join(difflib.unified_diff(golden.splitlines(True), file.content.splitlines(True),
                                            f"golden/{variant}/{file.path}", "rendered"))
        assert not diff, f"rendered output changed (MODELHOST_UPDATE_GOLDEN=1 to accept):\n{diff}"


def nginx_version() -> tuple[int, ...]:
    out = subprocess.run([find_nginx(), "-v"], capture_output=True, text=True).stderr
    return tuple(int(x) for x in out.split("/")[1].split()[0].split("."))


needs_nginx = pytest.mark.skipif(not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")),
                                 reason="needs nginx: apt-get install nginx")


def assert_nginx_takes_tls_site(files: dict[Path, str], tmp_path: Path, moved: tuple[str, ...] = ()) -> None:
    """nginx -t of a host's files for words.example.com over HTTPS, moved under tmp_path: the
    certificate (made here, self-signed), the DH parameters, the paths in moved, and ports 80 and
    443 to free ones here."""
    for path, text in files.items():
        for old in ("/etc/letsencrypt/live/words.example.com", *moved):
            text = text.replace(old, str(tmp_path))
        (tmp_path / path.name).write_text(text.replace("/etc/nginx/ffdhe2048.pem", str(tmp_path / "ffdhe2048.pem")))
    subprocess.run(commands.self_signed(str(tmp_path / "fullchain.pem"), str(tmp_path / "privkey.pem"),
                                        "words.example.com"), check=True, capture_output=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{\n    include {tmp_path}/modelhost.conf;\n"
                    f"    include {tmp_path}/words.example.com.conf;\n}}\n")
    port = free_loopback_port()
    for name in ("modelhost.conf", "words.example.com.conf"):
        text = (tmp_path / name).read_text()
        (tmp_path / name).write_text(text.replace("listen 80", f"listen 127.0.0.1:{port}")
                                     .replace("listen 443", f"listen 127.0.0.1:{port + 1}"))
    result = subprocess.run(commands.nginx_check(find_nginx(), conf, tmp_path), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@needs_nginx
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_passes_the_real_tools(variant, tmp_path):
    apps, host = apps_for(variant)
    if host.nginx_version and host.nginx_version >= (1, 25, 1) > nginx_version():
        pytest.skip("renders `http2 on;`, which the nginx installed here is too old to check")
    passed = check_rendered(Target(Context()), apps, host, tmp_path)
    assert passed[0].startswith("nginx -t")
    assert any(line.startswith("gunicorn --check-config") for line in passed)
    if any(app.layout.process_manager == "supervisor" for app in apps):
        assert any(line.startswith("supervisor's parser") for line in passed)
    if any(app.layout.process_manager == "systemd" for app in apps) and shutil.which("systemd-analyze"):
        assert any(line.startswith("systemd-analyze verify") for line in passed)


def test_rendering_is_reproducible():
    for variant in VARIANTS:
        assert render(*apps_for(variant)) == render(*apps_for(variant))


def test_the_http2_form_follows_the_nginx_version():
    old, new = (render(*apps_for(v))[1].content for v in ("host-tls", "host-tls-nginx-1.26"))
    assert "listen 443 ssl http2;" in old and "http2 on;" not in old
    assert "listen 443 ssl;" in new and "    http2 on;" in new


def test_the_worker_explanation_is_in_the_gunicorn_config_and_the_readme():
    apps, host = apps_for("host-tls")  # a 4 GB Pi 4 with 4 cores
    files = {f.path: f.content for f in render(apps, host)}
    assert "workers = 9\n" in files["srv/modelhost/blue/.modelhost/gunicorn.conf.py"]
    assert "2n+1 = 9 (4 cores); memory allows" in files["srv/modelhost/blue/.modelhost/gunicorn.conf.py"]
    assert f"- modelhost: {apps[0].plan.explanation}" in files["README.md"]
    assert "Raspberry Pi 4 Model B Rev 1.4" in files["README.md"]


def test_the_readme_says_where_every_file_goes():
    files = render(*apps_for("two-apps-one-name"))
    readme = files[0].content
    for file in files[1:]:
        assert f"| `{file.path}` | `{file.destination}` |" in readme


def settings_for(name: str, **nginx):
    return check_settings(merged({"app": {"name": name}, "nginx": {"server_names": ["models.example.com"], **nginx}}))


@pytest.mark.parametrize("second, message", [
    (settings_for("words"), "apps modelhost and words are both served at / on models.example.com: give each a "
                            "different [nginx] prefix"),
    (settings_for("words", tls=True, prefix="/words"), "apps modelhost and words share the host name(s) "
                                                       "models.example.com but differ in tls, tls_listen"),
    (settings_for("modelhost", prefix="/other"), "two apps are named modelhost"),
])
def test_apps_that_would_collide_in_nginx_are_refused(second, message):
    first = settings_for("modelhost")
    host = facts("ubuntu-24.04-amd64")
    apps = [plan_app(s, system_layout(s), host) for s in (first, second)]
    with pytest.raises(RenderError) as error:
        render(apps, host)
    assert message in str(error.value)


def test_supervisor_reads_back_exactly_the_environment_written():
    from supervisor.datatypes import dict_of_key_value_pairs
    env = {"PLAIN": "/srv/app/blue/model", "QUOTES": 'say "hi", then \\leave', "PERCENT": "100% %(ENV_HOME)s",
           "SPACES": "a b, c=d", "SINGLE": "it's"}
    written = supervisor_environment(env)
    assert "%%(ENV_HOME)s" in written
    assert dict_of_key_value_pairs(written.replace("%%", "%")) == env  # supervisor expands %% first
    with pytest.raises(RenderError, match="BOTH=.*cannot hold this value"):
        supervisor_environment({"BOTH": "\"it's\""})


def test_the_app_environment_reaches_gunicorn_exactly(tmp_path):
    apps, host = apps_for("host-sync-no-limits")
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(next(f.content for f in render(apps, host) if f.path.endswith("gunicorn.conf.py")))
    probe = f"exec(open({str(conf)!r}).read()); import os, json; print(json.dumps(os.environ['GREETING']))"
    result = subprocess.run([sys.executable, "-c", probe], env={"FLASK_SECRET_KEY": "x", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert json.loads(result.stdout) == 'say "%(x)s"', result.stderr


def test_the_gunicorn_config_refuses_to_start_without_its_secrets(tmp_path):
    apps, host = apps_for("host-supervisor")
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(next(f.content for f in render(apps, host) if f.path.endswith("gunicorn.conf.py")))
    result = subprocess.run([sys.executable, str(conf)], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "FLASK_SECRET_KEY not set: put NAME=value lines in /etc/modelhost/secrets.env" in result.stderr


@needs_nginx
@pytest.mark.parametrize("path_end, broken, tool", [
    ("localhost.conf", ("proxy_buffering on;", "proxy_buffering maybe;"), "nginx -t"),
    ("localhost.conf", ("server_name localhost", "server_name localhost localhost"), "nginx -t"),  # a warning
    ("conf.d/modelhost.conf", ("stopsignal=TERM", "stopsignal=SOMETIMES"), "supervisor's parser"),
    ("gunicorn.conf.py", ("threads = 4", "threads = int('four')"), "gunicorn --check-config"),
])
def test_a_broken_config_fails_its_tool_with_the_tools_own_message(monkeypatch, tmp_path, path_end, broken, tool):
    import deploy.validate
    apps, host = apps_for("local")

    def render_broken(*args):
        return [dataclasses.replace(f, content=f.content.replace(*broken)) if f.path.endswith(path_end) else f
                for f in render(*args)]
    monkeypatch.setattr(deploy.validate, "render", render_broken)
    with pytest.raises(ValidationError) as error:
        check_rendered(Target(Context()), apps, host, tmp_path)
    assert str(error.value).startswith(tool)


def test_fab_render_writes_a_reproducible_tree_and_refuses_to_overwrite_other_files(tmp_path):
    settings = tmp_path / "deploy.toml"
    settings.write_text('[model]\nsize_mb = 50\n[local]\nroot = "%s"\n' % (tmp_path / "prefix"))
    # Captured facts: this machine's free memory moves between two runs, and with it the rule's figures.
    fab = [str(Path(sys.executable).parent / "fab"), "-r", str(ROOT), "render", "--settings", str(settings),
           "--facts", str(FACTS / "raspios-bookworm-arm64.txt")]
    runs = [subprocess.run(fab + ["--out", str(tmp_path / out)], capture_output=True, text=True, timeout=120)
            for out in ("a", "b")]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "modelhost workers: 2n+1 = " in run.stdout
    tree = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    assert tree == {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    # Again into an earlier render: replaced. Into a directory of other files: refused, nothing lost.
    assert subprocess.run(fab + ["--out", str(tmp_path / "a")], capture_output=True, timeout=120).returncode == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused = subprocess.run(fab + ["--out", str(tmp_path / "mine")], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "is not an earlier `fab render` output" in refused.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@needs_nginx
def test_fab_render_check_runs_the_real_tools_through_fab(tmp_path):
    settings = tmp_path / "deploy.toml"
    settings.write_text('[model]\nsize_mb = 50\n[local]\nroot = "%s"\n' % (tmp_path / "prefix"))
    fab = [str(Path(sys.executable).parent / "fab"), "-r", str(ROOT), "render", "--settings", str(settings),
           "--facts", str(FACTS / "debian-12-amd64.txt"), "--check", "--out", str(tmp_path / "out")]
    result = subprocess.run(fab, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checked: nginx -t" in result.stdout and "checked: gunicorn --check-config" in result.stdout


def test_fab_render_stops_on_bad_settings_before_writing(tmp_path):
    settings = tmp_path / "deploy.toml"
    settings.write_text("[gunicorn]\nworkers = 0\n")
    fab = [str(Path(sys.executable).parent / "fab"), "-r", str(ROOT), "render", "--settings", str(settings),
           "--out", str(tmp_path / "out")]
    result = subprocess.run(fab, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "[gunicorn] workers = 0: must be" in result.stderr
    assert not (tmp_path / "out").exists()


@needs_nginx
def test_the_check_passes_while_a_live_site_holds_the_port(tmp_path):
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        settings = check_settings(merged({"local": {"root": str(tmp_path / "live"), "port": live.getsockname()[1]}}))
        host = facts("debian-12-amd64")
        app = plan_app(settings, local_layout(settings), host)
        assert check_rendered(Target(Context()), [app], host, tmp_path / "scratch")[0].startswith("nginx -t")


def test_a_socket_path_too_long_for_unix_sockets_is_refused_with_the_fix():
    settings = check_settings(merged({"local": {"root": "/home/" + "x" * 80}}))
    with pytest.raises(RenderError, match=r"green.sock is 111 bytes; unix sockets allow 107: set \[local\] root"):
        plan_app(settings, local_layout(settings), facts("debian-12-amd64"))
