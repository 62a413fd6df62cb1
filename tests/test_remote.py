"""`fab -H user@host provision deploy ...` against real Debian hosts that this suite builds
(tests/hosts.py): one with systemd as PID 1, one with plain init.d scripts, each with sshd on its
own loopback address. Nothing is mocked: apt, sudo, nginx, supervisor and gunicorn run there.

Per flavor, in order: fresh host -> provision -> deploy -> the site through the host's nginx ->
provision and deploy again (nothing changes) -> a code change -> rollback -> status, logs, diff -> stop,
a boot -> kill -9 drills -> the deploy lock -> sudo users -> an unknown host key. Then one command for
both hosts (-H a,b).
"""
from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

from tests import hosts
from tests.remote import APP, KITS_TOOLS, Site, label, make_site, ssh_config, steps, timed
from tests.servers import FAB, MIN_REQUESTS, ROOT, commit_change, drill, eventually, fab, git, ok, request, steady_load

MISSING = hosts.missing_requirements() or (None if os.geteuid() == 0 else "needs root (debootstrap, unshare)")
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=f"test hosts: {MISSING}"), pytest.mark.slow]


def pytest_generate_tests(metafunc):
    """Every test runs on both flavors (amd64); those marked arm64 also run on an arm64 host under
    qemu (the 64-bit Raspberry Pi OS base), where everything is several times slower: the path from
    a fresh host to a rollback, not the drills."""
    if "site" in metafunc.fixturenames:
        arm64 = ["arm64"] if metafunc.definition.get_closest_marker("arm64") else []
        metafunc.parametrize("site", [*hosts.FLAVORS, *arm64], indirect=True, scope="module")


@pytest.fixture(scope="module")
def site(request, tmp_path_factory, demo_model) -> Site:
    if request.param == "arm64":
        host = request.getfixturevalue("arm64_host")
    else:
        host = request.getfixturevalue("test_hosts")[request.param]
    return make_site(host, tmp_path_factory.mktemp(f"remote-{request.param}"), demo_model)


@pytest.mark.arm64
def test_provision_makes_a_fresh_host_ready(site):
    assert not (site.host.root / "usr/sbin/nginx").exists()  # a fresh host
    out = timed("fresh provision", site, "provision")
    changed = steps(out)
    assert changed == {"packages": "changed", "user": "changed", "directories": "changed", "boot": "changed",
                       "nginx site": "changed", "services": "changed", "keepers": "changed",
                       "log rotation": "changed", "firewall": "unchanged"}, out
    assert "off ([firewall] enabled = false)" in out  # a firewall is tested on a host of its own: test_firewall.py
    assert re.search(r"packages .* installed nginx, supervisor, python3-venv(, procps)?(, logrotate)? with apt", out), out
    assert site.on_host(f"getent passwd {APP}").strip().endswith(":/var/lib/modelhost:/usr/sbin/nologin")
    assert APP in site.on_host("id -nG www-data").split()  # nginx reaches the app's sockets
    modes = site.on_host(f"stat -c '%n %U:%G %a' /srv/{APP} /etc/{APP} /run/{APP} /var/log/{APP}").splitlines()
    assert modes == [f"/srv/{APP} root:root 755", f"/etc/{APP} root:{APP} 750", f"/run/{APP} {APP}:www-data 750",
                     f"/var/log/{APP} root:adm 750"]
    assert not (site.host.root / "etc/nginx/sites-enabled/default").exists()
    if site.host.flavor == "systemd":  # /run/<app> comes back at boot
        assert "d /run/modelhost 0750 modelhost www-data -" in (site.host.root / f"etc/tmpfiles.d/{APP}.conf").read_text()
    else:
        assert (f"install -d -o {APP} -g www-data -m 0750 /run/{APP}"
                in (site.host.root / "etc/default/supervisor").read_text())
    way = "systemctl" if site.host.flavor == "systemd" else "service (init.d scripts)"
    assert f"started nginx, started supervisor, by {way}" in out or f"by {way}" in out
    for service in ("nginx", "supervisor"):
        check = f"systemctl is-active {service}" if site.host.flavor == "systemd" else f"service {service} status"
        assert site.host.ssh(check).returncode == 0, f"{service} is not running"
    # The site's nginx logs are rotated; logrotate itself reads the file without an error.
    check = site.host.ssh(f"logrotate --debug /etc/logrotate.d/{APP}")
    assert check.returncode == 0 and "error:" not in check.stdout + check.stderr, check.stderr
    assert f"/var/log/{APP}/nginx-access.log" in check.stdout + check.stderr
    # What keeps them: systemd's drop-ins, or the keeper daemon where init.d scripts run.
    if site.host.flavor == "systemd":
        shown = site.on_host("systemctl show -p Restart,RestartUSec,KillMode supervisor nginx").split()
        assert shown.count("Restart=on-failure") == 2 and shown.count("KillMode=control-group") == 2, shown
        assert shown.count("RestartUSec=2s") == 2, shown
    else:
        assert site.host.ssh("service modelhost-keeper status").returncode == 0
        assert any((site.host.root / "etc/rc2.d").glob("S??modelhost-keeper"))  # and at boot


@pytest.mark.arm64
def test_provision_again_changes_nothing_and_runs_no_apt_get_update(site):
    lists = site.host.root / "var/lib/apt/lists"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in lists.iterdir())
    out = timed("no-op provision", site, "provision")
    assert set(steps(out).values()) == {"unchanged"} and " 0 of 9 steps changed something" in out, out
    assert sorted((p.name, p.stat().st_mtime_ns) for p in lists.iterdir()) == before


@pytest.mark.arm64
def test_first_deploy_serves_the_ui_the_api_and_readyz_through_the_hosts_nginx(site):
    out = timed("first deploy", site, "deploy")
    assert set(steps(out)) == {"prerequisites", "directories", "secrets", "model", "python", "release", "cutover",
                               "verify", "prune"}, out
    assert f"open http://{site.host.address}/" in out
    status, _, page = site.get("/")
    assert status == 200 and b"<form" in page
    status, _, body = site.get("/api/v1/similar?word=fire&topn=3")
    assert status == 200 and len(json.loads(body)["results"]) == 3
    status, _, body = site.get("/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    assert site.on_host(f"stat -c '%U %a' /etc/{APP}/secrets.env").split() == [APP, "600"]
    assert site.on_host("ps -o user= -C gunicorn | sort -u").split() == [APP]  # the app's user, never root
    # The app's virtualenv holds the app's dependencies, built for this machine, and none of the kit's tools.
    installed = {path.split("-")[0].lower() for path in site.on_host(
        f"cd /srv/{APP}/venvs/*/lib/python3*/site-packages && ls -d *.dist-info").split()}
    assert {"flask", "gensim", "numpy", "gunicorn"} <= installed and not KITS_TOOLS & installed, installed
    machine = site.on_host("uname -m").strip()
    assert machine == {"arm64": "aarch64"}.get(site.host.arch, "x86_64")
    assert site.on_host(f"ls /srv/{APP}/venvs/*/lib/python3*/site-packages/numpy/_core/_multiarray_umath.*.so"
                        ).strip().endswith(f"-{machine}-linux-gnu.so")


@pytest.mark.arm64
def test_provision_and_deploy_again_change_nothing(site):
    assert " 0 of 9 steps changed something" in timed("no-op provision", site, "provision")
    out = timed("no-op deploy", site, "deploy")
    assert steps(out) == {"unchanged": "unchanged"} and " 0 of 1 steps changed something" in out, out


def live_build(site: Site) -> dict:
    status, _, body = site.get("/livez")
    assert status == 200
    return json.loads(body)


@pytest.mark.arm64
def test_a_code_change_deploys_without_pip_and_without_a_failed_request(site):
    commit_change(site.repo, "app/health.py", 'return jsonify({"status": "ok"})',
                  'return jsonify({"status": "ok", "build": "two"})', "livez says which build")
    with steady_load(80, address=site.host.address, host=site.host.address) as counts:
        out = timed("code-only deploy", site, "deploy")
    print(f"{label(site.host)}: requests during the code-only deploy: {dict(counts)}")
    assert sum(counts.values()) >= MIN_REQUESTS and set(counts) == {200}, counts
    assert steps(out)["python"] == "unchanged" and steps(out)["model"] == "unchanged", out
    assert "live on green" in out and "on blue stopped" in out
    assert live_build(site) == {"status": "ok", "build": "two"}


@pytest.mark.arm64
def test_rollback_brings_back_the_previous_release(site):
    out = timed("rollback", site, "rollback")
    assert "is live again" in out
    assert live_build(site) == {"status": "ok"}
    history = [json.loads(line) for line in (site.host.root / f"srv/{APP}/history.jsonl").read_text().splitlines()]
    assert [h["action"] for h in history] == ["deploy", "deploy", "rollback"]
    assert all(h["result"] == "ok" and h["user"] for h in history)


def test_status_logs_and_diff_describe_the_host(site):
    out = ok(site.fab("status"))
    assert out.startswith(f"{APP} on {site.host.address}: http://{site.host.address}/")
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "RUNNING" in lines[f"{APP}-blue"] and "(live)" in lines[f"{APP}-blue"]
    assert "STOPPED" in lines[f"{APP}-green"]
    version = json.loads(site.get("/api/v1/model")[2])["version"]
    assert f"model {version}, 2 workers (2 workers set in deploy.toml" in lines["release"]
    assert lines["ready"].split()[1] == "200" and "/readyz through nginx: 200" in lines["nginx"]

    out = ok(site.fab("logs", "--lines", "100"))
    assert out.startswith(f"==> /var/log/{APP}/blue.log <==") and "Booting worker" in out
    assert "GET /" not in out  # requests are logged once, by nginx
    site.get("/livez?last")
    assert eventually(lambda: "GET /livez?last" in ok(site.fab("logs", "--what", "nginx", "--lines", "5")))
    out = ok(site.fab("logs", "--what", "nginx", "--lines", "5"))
    assert f"==> /var/log/{APP}/nginx-access.log <==" in out and "GET /livez?last" in out
    # Following nginx's log: a request's line comes once nginx writes its buffer (5 s at most).
    follow = subprocess.Popen([str(FAB), "-S", str(site.config), "-H", f"root@{site.host.address}", "logs",
                               "--what", "nginx", "--follow", "--lines", "0", "--settings",
                               str(site.repo / "deploy.toml")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    deadline = threading.Timer(60, follow.terminate)  # bounds the reads: its output ends then
    deadline.start()
    try:
        assert follow.stdout.readline().startswith(f"==> /var/log/{APP}/nginx-")
        site.get("/livez?followed")
        while "/livez?followed" not in (line := follow.stdout.readline()):
            assert line, "fab logs --follow did not show the new line within 60 s"
    finally:
        deadline.cancel()
        follow.terminate()
        follow.wait(timeout=30)

    assert "no differences" in ok(site.fab("diff"))
    site_file = site.host.root / "etc/nginx/sites-available/localhost.conf"
    edited = site_file.read_text().replace("server_tokens off;", "server_tokens on;  # by hand", 1)
    site_file.write_text(edited)
    out = ok(site.fab("diff"))
    assert f"--- {site.host.address}:/etc/nginx/sites-available/localhost.conf" in out
    assert "-    server_tokens on;  # by hand" in out and "+    server_tokens off;" in out
    assert site_file.read_text() == edited  # diff changes nothing
    assert steps(ok(site.fab("deploy")))["cutover"] == "changed"  # a deploy puts the rendered file back
    assert "no differences" in ok(site.fab("diff"))


def test_render_reads_the_hosts_facts(site, tmp_path):
    out = ok(site.fab("render", "--out", str(tmp_path / "out")))
    assert "host: 2 cores" in out and "Debian GNU/Linux 12 (bookworm)" in out
    assert (tmp_path / "out/etc/supervisor/conf.d/modelhost.conf").is_file()


def test_stop_stops_the_apps_programs_and_a_deploy_starts_the_live_one_again(site):
    assert "stopped 1 processes" in ok(site.fab("stop"))  # the live gunicorn master (its workers with it)
    assert site.host.ssh("pgrep -f gunicorn").returncode == 1  # none left
    assert site.get("/readyz")[0] == 502  # nginx stays: it is the host's
    out = ok(site.fab("deploy"))
    assert re.search(r"cutover +changed .* is live on \w+ \(started it\)", out), out
    assert site.get("/readyz")[0] == 200


def test_the_site_comes_back_when_the_host_boots(site):
    """What a reboot does to the app: /run is emptied, then the init system starts supervisor."""
    boot = {"systemd": "systemctl stop supervisor && rm -rf /run/{0} && systemd-tmpfiles --create {0}.conf && "
                       "systemctl start supervisor",
            "service": "service supervisor stop && timeout 60 sh -c 'while pgrep -x supervisord >/dev/null; do sleep 0.2; done' "
                       "&& rm -rf /run/{0} && service supervisor start"}
    site.on_host(boot[site.host.flavor].format(APP))
    deadline = time.monotonic() + 60
    while site.get("/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert site.get("/readyz")[0] == 200, "the live color did not come back"
    assert site.on_host(f"stat -c '%U:%G %a' /run/{APP}").split() == [f"{APP}:www-data", "750"]


LIVE = f"modelhost-$(basename $(readlink /srv/{APP}/current))"
# fault -> (the command that injects it, failed requests allowed, seconds to recovery allowed)
HOST_DRILLS = {
    # gunicorn forks another worker; the requests it held fail (one per load thread at most)
    "kill -9 of a gunicorn worker": (f"kill -9 $(pgrep -P $(supervisorctl pid {LIVE}) | head -1)", 4, 5),
    # supervisor starts the master again; the app loads again
    "kill -9 of the live gunicorn master": (f"kill -9 $(supervisorctl pid {LIVE})", None, 30),
    # systemd (the drop-in) or modelhost-keeper stops what it left, then starts it again
    "kill -9 of supervisord": ("kill -9 $(cat /run/supervisord.pid)", None, 30),
    "kill -9 of nginx's master": ("kill -9 $(cat /run/nginx.pid)", None, 15),
}


def test_kill_9_drills_the_host_recovers_from_by_itself(site):
    """Each fault under steady load, every answer counted; the figures are printed for the notes."""
    for fault, (command, failed, seconds) in HOST_DRILLS.items():
        result = drill(fault, lambda: site.on_host(command), 80, address=site.host.address, host=site.host.address)
        print(f"{site.host.flavor}: {result}")
        assert failed is None or sum(result.failed.values()) <= failed, result
        assert result.recovered <= seconds, result
        # Nothing orphaned: one gunicorn master, supervisord's child; none under PID 1.
        masters = site.on_host("ps -o ppid= -C gunicorn | sort | uniq -c").split()
        supervisord = site.on_host("cat /run/supervisord.pid").strip()
        assert supervisord in masters and "1" not in masters[1::2], (fault, masters)
        assert site.on_host("ps -o ppid= -C nginx").split().count("1") == 1  # one master, under init


def test_a_deploy_lock_left_behind_is_named_and_can_be_broken(site):
    lock = site.host.root / f"srv/{APP}/deploy.lock"
    lock.mkdir()
    (lock / "holder").write_text("deploy by someone@elsewhere (pid 4242) since 2026-01-01T00:00:00Z\n")
    result = site.fab("deploy")
    assert result.returncode == 1
    assert (f"another deploy is running on {site.host.address}: deploy by someone@elsewhere (pid 4242)"
            in result.stderr)
    out = ok(site.fab("deploy", "--break-lock"))
    assert f"removed the deploy lock on {site.host.address} (deploy by someone@elsewhere" in out
    assert not lock.exists()


def test_sudo_users_deploy_and_a_password_is_asked_through_fabric(site):
    out = ok(site.fab("deploy", user="nopass"))  # nothing to do, seen through sudo
    assert steps(out) == {"unchanged": "unchanged"} and "0 of 1 steps changed" in out, out
    refused = site.fab("status", user="deployer")
    assert refused.returncode == 1
    assert (f"error: sudo on {site.host.address} asks deployer's password: run fab with "
            "--prompt-for-sudo-password" in refused.stderr)
    wrong = site.fab("status", user="deployer", env={"FABRIC_SUDO_PASSWORD": "wrong"})
    assert wrong.returncode == 1 and "refused the password" in wrong.stderr
    out = ok(site.fab("status", user="deployer", env={"FABRIC_SUDO_PASSWORD": hosts.DEPLOYER_PASSWORD}))
    assert "(live)" in out


def test_an_unknown_host_key_is_refused_with_how_to_trust_it(site, tmp_path):
    config = ssh_config(tmp_path / "ssh_config", site.host, tmp_path / "empty_known_hosts")
    (tmp_path / "empty_known_hosts").write_text("")
    result = site.fab("status", config=config)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line
    assert f"{site.host.address} is not a known host" in result.stderr and "ssh-keyscan" in result.stderr
    wrong = tmp_path / "wrong_known_hosts"
    key = site.host.known_hosts_line().split()
    wrong.write_text(f"{key[0]} {key[1]} AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    result = site.fab("status", config=ssh_config(tmp_path / "ssh_config2", site.host, wrong))
    assert result.returncode == 1 and "is not the one in known_hosts" in result.stderr, result.stderr


def test_a_second_app_runs_as_systemd_units_where_systemd_runs(site, tmp_path, demo_model):
    """[app] process_manager = "systemd": the programs are the units words@blue and words@green."""
    words = make_site(site.host, tmp_path, demo_model, app="words", manager="systemd", names='"words.test"')
    if site.host.flavor != "systemd":
        result = words.fab("provision")
        assert result.returncode == 1
        assert 'process_manager = "systemd", but systemd does not run on' in result.stderr
        return
    assert re.search(r"packages +unchanged", ok(words.fab("provision")))
    out = ok(words.fab("deploy"))
    assert "live on blue" in out, out
    status, _, body = request(80, "/api/v1/model", host="words.test", address=site.host.address)
    assert status == 200 and json.loads(body)["name"] == "demo"
    assert site.on_host("systemctl is-enabled words@blue words@green").split() == ["enabled", "disabled"]
    assert site.on_host("ps -o user= -C gunicorn | sort -u").split() == sorted([APP, "words"])
    commit_change(words.repo, "app/health.py", 'return jsonify({"status": "ok"})',
                  'return jsonify({"status": "ok", "build": "units"})', "livez says which build")
    with steady_load(80, address=site.host.address, host="words.test") as counts:
        out = ok(words.fab("deploy"))
    assert "live on green" in out and "on blue stopped" in out, out
    assert sum(counts.values()) >= MIN_REQUESTS and set(counts) == {200}, counts
    assert site.on_host("systemctl is-enabled words@blue words@green").split() == ["disabled", "enabled"]
    lines = {line.split()[0]: line for line in ok(words.fab("status")).splitlines()[1:]}
    assert "RUNNING" in lines["words@green"] and "(live)" in lines["words@green"] and "STOPPED" in lines["words@blue"]
    out = ok(words.fab("logs", "--lines", "5"))  # from the journal
    assert len(out.splitlines()) == 5 and all(" gunicorn[" in line for line in out.splitlines()), out
    assert site.get("/readyz")[0] == 200  # the first app still serves beside it


def test_an_app_over_https_under_a_prefix_is_verified_as_clients_see_it(site, tmp_path, demo_model):
    """[nginx] tls and prefix: the deploy checks https://<name>/<prefix>/readyz (SNI and all)."""
    if site.host.flavor != "service":
        pytest.skip("once is enough: the same on both flavors")
    certs = site.host.root / "etc/ssl/secure"
    certs.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=secure.test", "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem")],
                   check=True, capture_output=True)
    secure = make_site(site.host, tmp_path, demo_model, app="secure", names='"secure.test"')
    settings = secure.repo / "deploy.toml"
    settings.write_text(settings.read_text().replace('rate_limit = "off"', 'rate_limit = "off"\ntls = true\n'
                        'prefix = "/words"\ntls_certificate = "/etc/ssl/secure/cert.pem"\n'
                        'tls_certificate_key = "/etc/ssl/secure/key.pem"'))
    git(secure.repo, "commit", "-qam", "HTTPS under /words")
    ok(secure.fab("provision"))
    out = ok(secure.fab("deploy"))
    assert f"https://{site.host.address}:443/words/readyz 200" in out and "open https://secure.test/words/" in out
    context = ssl.create_default_context(cafile=str(certs / "cert.pem"))
    context.check_hostname = False  # the certificate is for secure.test, reached at the host's address
    with socket.create_connection((site.host.address, 443), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="secure.test") as tls:
        tls.sendall(b"GET /words/readyz HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\r\n")
        answer = b"".join(iter(lambda: tls.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ready"' in answer, answer[:300]
    status, headers, _ = request(80, "/words/readyz", host="secure.test", address=site.host.address)
    assert status == 301 and headers["Location"] == "https://secure.test/words/readyz"


def test_a_connection_error_is_one_line_naming_the_host(tmp_path, site):
    result = fab("-S", str(site.config), "-H", "root@127.0.0.254", "status", "--settings",
                 str(site.repo / "deploy.toml"))
    assert result.returncode == 1
    assert result.stderr.strip() == "error: cannot connect to 127.0.0.254: Connection refused", result.stderr


def test_several_hosts_at_once(test_hosts, tmp_path, demo_model):
    """-H a,b runs the task on each host in turn."""
    known = tmp_path / "known_hosts"
    known.write_text("".join(h.known_hosts_line() + "\n" for h in test_hosts.values()))
    config = tmp_path / "ssh_config"
    config.write_text("".join(f"Host {h.address}\n  IdentityFile {h.key}\n  UserKnownHostsFile {known}\n"
                              for h in test_hosts.values()))
    addresses = ",".join(f"root@{h.address}" for h in test_hosts.values())
    out = ok(fab("-S", str(config), "-H", addresses, "releases"))
    for host in test_hosts.values():
        assert f"releases of {APP} on {host.address}:\n" in out
