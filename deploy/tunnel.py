"""The tunnel of an exposed app, run on its target by the process manager: `python3 tunnel.py SPEC`
(standard library only; `fab expose` writes it and SPEC there).

It runs ssh -R to the relay (SPEC "ssh": the whole command; ExitOnForwardFailure and keep-alives
make ssh exit when the forwarding cannot be made or the connection is dead) and starts it again
whenever it exits, after 1 s, doubling up to 10 s while it keeps failing. That brings the tunnel
back after a network drop, a relay reboot or the relay's sshd restarting.

Every SPEC "interval" seconds it asks the public URL end to end (HTTPS to SPEC "domain" as this
machine resolves it, the health path through the relay and the tunnel). After SPEC "failures"
failures in a row while ssh runs, the tunnel is up but passes nothing (a hung ssh, a forwarding the
relay lost): ssh is killed and started again.

What it knows goes to SPEC "state" (JSON, for `fab status`): since when ssh runs, how many times it
was started again, and the last check's time, answer and the last time it passed.
"""
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

BACKOFF_MAX = 10


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def log(message):
    print(f"{now()} {message}", flush=True)


def check(spec):
    """(passed, what it said): GET the health path over HTTPS at the public name; the certificate is
    not checked here: the question is whether requests pass, not whether the name's certificate is
    valid (fab status shows that)."""
    context = ssl._create_unverified_context()
    try:
        connection = http.client.HTTPSConnection(spec["domain"], spec.get("port", 443),
                                                 timeout=min(10, spec["interval"]), context=context)
        connection.request("GET", spec["path"], headers={"User-Agent": "modelhost-tunnel-check"})
        status = connection.getresponse().status
        connection.close()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    passed = status == 200 if spec["ready"] == "ok" else 0 < status < 500
    return passed, f"{status}"


class Tunnel:
    def __init__(self, spec):
        self.spec = spec
        self.ssh = None
        self.stopping = False
        self.state = {"pid": os.getpid(), "since": now(), "tunnel_since": None, "connects": 0,
                      "checked": None, "check": None, "passed": None, "domain": spec["domain"]}

    def save(self):
        partial = self.spec["state"] + ".partial"
        with open(partial, "w") as handle:
            json.dump(self.state, handle)
        os.replace(partial, self.spec["state"])

    def stop(self, *_):
        self.stopping = True
        if self.ssh and self.ssh.poll() is None:
            self.ssh.terminate()

    def run(self):
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        delay = 1
        while not self.stopping:
            started = time.monotonic()
            self.connect()
            restarted = self.watch()
            status = self.ssh.wait()
            self.state["tunnel_since"] = None
            self.save()
            if self.stopping:
                break
            if restarted or time.monotonic() - started > 60:  # it worked for a while: no backoff
                delay = 1
            log(f"ssh exited with status {status}; connecting again in {delay} s")
            self.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        return 0

    def connect(self):
        self.ssh = subprocess.Popen(self.spec["ssh"], stdin=subprocess.DEVNULL)
        self.state["connects"] += 1
        self.state["tunnel_since"] = now()
        self.save()
        log(f"ssh started (pid {self.ssh.pid}): {self.spec['domain']} -> this machine's site")

    def watch(self):
        """While ssh runs: the end-to-end check every interval; a tunnel that fails it too often is
        connected again (returns True then)."""
        failures, next_check = 0, time.monotonic() + self.spec["interval"]
        while self.ssh.poll() is None and not self.stopping:
            time.sleep(0.25)
            if time.monotonic() < next_check:
                continue
            passed, said = check(self.spec)
            next_check = time.monotonic() + self.spec["interval"]
            self.state.update(checked=now(), check=said, passed=now() if passed else self.state["passed"])
            self.save()
            failures = 0 if passed else failures + 1
            if failures >= self.spec["failures"]:
                log(f"https://{self.spec['domain']}{self.spec['path']} failed {failures} times in a row "
                    f"(last: {said}) while ssh ran: connecting again")
                self.ssh.kill()  # a hung ssh may not take TERM
                return True
        return False

    def sleep(self, seconds):
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.1)


def main(argv):
    with open(argv[1]) as handle:
        spec = json.load(handle)
    socket.setdefaulttimeout(15)
    return Tunnel(spec).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
