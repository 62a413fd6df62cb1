"""fab expose's parts that need no host: the relay's authorized_keys lines and listen points, the
ssh -R it runs, the relay's site checked by nginx -t, and deploy/tunnel.py's loop (reconnects,
backoff, the end-to-end check that restarts a tunnel passing nothing) run for real against a local
HTTPS server. End to end between test hosts: tests/test_tunnel.py."""
from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deploy import commands
from deploy.facts import parse_facts
from deploy.layout import system_layout
from deploy.render import relay_settings, render_relay, tunnel_program
from deploy.settings import check_settings
from tests.test_facts import DATA
from tests.test_render import assert_nginx_takes_tls_site, needs_nginx

TUNNEL = Path(__file__).resolve().parent.parent / "deploy" / "tunnel.py"
EXPOSED = {"expose": {"relay": "admin@relay.example.com", "domain": "words.example.com"}}


def test_each_key_may_hold_its_own_listen_point_and_nothing_else():
    line = commands.authorized_line("ssh-ed25519 AAAAC3Nza tunnel@pi", 20003, "words@pi")
    assert line == ('restrict,port-forwarding,permitlisten="127.0.0.1:20003" ssh-ed25519 AAAAC3Nza '
                    'modelhost-tunnel words@pi')
    text = f"ssh-ed25519 AAAAother someone's own key\n{line}\n"
    assert commands.parse_authorized(text) == {"words@pi": (20003, line)}


def test_listening_ports_are_read_from_proc_net_tcp():
    proc = ("  sl  local_address rem_address   st tx_queue rx_queue\n"
            "   0: 0100007F:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 0 1 1\n"
            "   1: 0100007F:0016 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0 0 2 1\n")
    assert commands.listening_ports(proc) == {20001}


def test_the_tunnel_is_ssh_R_to_the_socket_with_the_relays_key_pinned_and_keep_alives():
    argv = commands.tunnel(Path("/etc/words/tunnel/id_ed25519"), Path("/etc/words/tunnel/known_hosts"), "ssh-ed25519",
                           "modelhost-relay", "relay.example.com", 22, 20001, Path("/run/words/tunnel.sock"))
    assert argv[:5] == ["ssh", "-F", "/dev/null", "-N", "-T"] and argv[-1] == "modelhost-relay@relay.example.com"
    assert argv[argv.index("-R") + 1] == "127.0.0.1:20001:/run/words/tunnel.sock"
    for option in ("ExitOnForwardFailure=yes", "StrictHostKeyChecking=yes", "BatchMode=yes",
                   "UserKnownHostsFile=/etc/words/tunnel/known_hosts", "HostKeyAlgorithms=ssh-ed25519",
                   "ServerAliveInterval=5", "ServerAliveCountMax=3"):
        assert option in argv


@needs_nginx
def test_the_relays_site_passes_nginx_t(tmp_path):
    settings = relay_settings(check_settings(EXPOSED | {"nginx": {"prefix": "/words"}}))
    layout = system_layout(settings)
    files = render_relay(settings, layout, parse_facts((DATA / "debian-12-amd64.txt").read_text()), 20001, True)
    site = files[layout.nginx_sites / "words.example.com.conf"]
    assert "server 127.0.0.1:20001 fail_timeout=0;" in site and "proxy_hide_header X-Frame-Options;" in site
    assert "listen unix:" not in site and "/words/metrics {\n            proxy_pass http://relay-words-example-com;\n" \
        "            deny all;" in site
    assert_nginx_takes_tls_site(files, tmp_path)


def test_the_tunnel_program_runs_tunnel_py_under_either_manager():
    layout = system_layout(check_settings(EXPOSED))
    path, text = tunnel_program(layout, "supervisor")
    assert path == Path("/etc/supervisor/conf.d/modelhost-tunnel.conf")
    assert "command=/usr/bin/python3 /etc/modelhost/tunnel/tunnel.py /etc/modelhost/tunnel/tunnel.json" in text
    assert "user=modelhost" in text and "autorestart=true" in text
    path, text = tunnel_program(layout, "systemd")
    assert path == Path("/etc/systemd/system/modelhost-tunnel.service")
    assert "Restart=always" in text and "StartLimitIntervalSec=0" in text and "User=modelhost" in text


class Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(Answer.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def https_site(tmp_path):
    """A local HTTPS server answering Answer.status: the public URL as the tunnel checks it."""
    subprocess.run(commands.self_signed(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), "localhost"),
                   check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Answer.status = 200
    yield server.server_address[1]
    server.shutdown()


def run_tunnel(tmp_path: Path, ssh: list[str], port: int):
    spec = {"ssh": ssh, "domain": "localhost", "port": port, "path": "/readyz", "ready": "ok", "interval": 1,
            "failures": 3, "state": str(tmp_path / "tunnel.state")}
    (tmp_path / "tunnel.json").write_text(json.dumps(spec))
    log = open(tmp_path / "tunnel.log", "w")
    return subprocess.Popen([sys.executable, str(TUNNEL), str(tmp_path / "tunnel.json")], stdout=log,
                            stderr=subprocess.STDOUT)


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "tunnel.state").read_text())


def wait_for(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)


def test_the_tunnel_connects_again_when_ssh_exits_and_when_the_public_url_fails(tmp_path, https_site):
    tunnel = run_tunnel(tmp_path, ["sleep", "1000"], https_site)
    try:
        wait_for(lambda: (tmp_path / "tunnel.state").exists() and state(tmp_path)["check"] == "200")
        first = state(tmp_path)
        assert first["connects"] == 1 and first["tunnel_since"] and first["passed"]
        subprocess.run(["pkill", "-f", "^sleep 1000$"])  # ssh exits: started again after 1 s
        wait_for(lambda: state(tmp_path)["connects"] == 2)
        Answer.status = 502  # the tunnel is up but passes nothing: 3 failures, then a new ssh
        wait_for(lambda: state(tmp_path)["connects"] == 3, 15)
        assert state(tmp_path)["check"] == "502"
    finally:
        tunnel.terminate()
        assert tunnel.wait(timeout=10) == 0
    log = (tmp_path / "tunnel.log").read_text()
    assert "ssh exited with status -15; connecting again in 1 s" in log
    assert "https://localhost/readyz failed 3 times in a row (last: 502) while ssh ran: connecting again" in log
    assert subprocess.run(["pgrep", "-f", "^sleep 1000$"]).returncode == 1  # its ssh went with it


def test_a_tunnel_that_keeps_failing_backs_off(tmp_path, https_site):
    tunnel = run_tunnel(tmp_path, ["false"], https_site)
    try:
        time.sleep(8)
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)
    delays = [line.rsplit(" in ", 1)[1] for line in (tmp_path / "tunnel.log").read_text().splitlines()
              if "connecting again in" in line]
    assert delays[:3] == ["1 s", "2 s", "4 s"] and len(delays) <= 4, delays
