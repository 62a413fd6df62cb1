"""HTTP checks run on the target itself: `python3 -c <this file's source> SPEC` (standard library only).

A deploy asks a new gunicorn, over its own unix socket, for its health path until it is ready or a
deadline passes, then for a smoke query; it asks nginx the same on its port. Running on the target
keeps that one command per check, over SSH too, and needs nothing installed there but python3.

SPEC is JSON: {"socket": path or "", "address": nginx's address, "port": n, "tls": HTTPS or not,
"host": Host header, "paths": [...], "wait": seconds, "ready": "ok" or "answer"}.
The first path is retried until it is ready (ok: it answers 200; answer: anything below 500), it
answers 404 (ok: a route that is missing stays missing) or `wait` runs out; the others are asked
once after it, when it is ready. Prints one JSON object per path: {"path", "status" (0 if no
answer), "body" or "error"}.
"""
import http.client
import json
import socket
import ssl
import sys
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class AddressedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address, with the site's name in SNI and Host. The certificate is not checked:
    the probe asks whether this nginx serves the app, not whether the name's certificate is valid."""

    def __init__(self, address, port, name, timeout):
        super().__init__(name, port, timeout=timeout, context=ssl._create_unverified_context())
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def ask(spec, path, timeout=10.0):
    if spec.get("socket"):
        connection = UnixConnection(spec["socket"], timeout)
    elif spec.get("tls"):
        connection = AddressedHTTPSConnection(spec["address"], spec["port"], spec.get("host", "localhost"), timeout)
    else:
        connection = http.client.HTTPConnection(spec.get("address", "127.0.0.1"), spec["port"], timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": spec.get("host", "localhost")})
        response = connection.getresponse()
        return {"path": path, "status": response.status, "body": response.read(4096).decode("utf-8", "replace")}
    except (OSError, http.client.HTTPException) as exc:
        return {"path": path, "status": 0, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        connection.close()


def ready(answer, mode):
    return answer["status"] == 200 if mode == "ok" else 0 < answer["status"] < 500


def main(argv):
    spec = json.loads(argv[1])
    first, rest, mode = spec["paths"][0], spec["paths"][1:], spec.get("ready", "ok")
    deadline = time.monotonic() + spec.get("wait", 0)
    while True:
        answer = ask(spec, first)
        if ready(answer, mode) or (mode == "ok" and answer["status"] == 404) or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    answers = [answer] + ([ask(spec, path) for path in rest] if ready(answer, mode) else [])
    for answer in answers:
        print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
