#!/usr/bin/env python3
"""A caller of the coordinator's HTTP/JSON API, with the standard library only.

    from coordinator_client import Client, ApiError

    c = Client("http://127.0.0.1:8080")
    reg = c.register("agent-7", ttl_seconds=10)        # a new incarnation
    keeper = c.keep_alive_in_background(reg)           # renews every ttl/3
    tok = c.submit(reg, [c.set_op("config/eu", "v2")])  # "REV" or "REV.IDX"
    c.wait_applied(tok)                                # read your write
    keeper.stop()
    c.unregister(reg)

A refused call raises ApiError; its reason is what to switch on: INVALID,
SUPERSEDED (final: another process holds the name), EXPIRED (register
again), NAME_HELD, NOT_ACCEPTED (resend under a new batch id),
OUTCOME_UNKNOWN, PERMISSION_DENIED, UNAVAILABLE, TIMEOUT, TOO_LARGE.

Run as a script it registers, submits a set, waits until it is applied and
reads the value back from memcached with pymemcache (Debian:
python3-pymemcache), printing one JSON line:

    coordinator_client.py --api http://127.0.0.1:8080 --memcached 127.0.0.1:11211 \\
        --name py-demo --key hello --value world
"""

import argparse
import base64
import json
import sys
import threading
import urllib.error
import urllib.request

ERROR_DOMAIN = "coordinator.v1"


class ApiError(Exception):
    """A call the API refused: HTTP status, gRPC code, reason and message."""

    def __init__(self, http_status, body):
        self.http_status = http_status
        self.code = body.get("code")
        self.message = body.get("message", "")
        self.reason = ""
        self.metadata = {}
        for d in body.get("details", []):
            if d.get("domain") == ERROR_DOMAIN:
                self.reason = d.get("reason", "")
                self.metadata = d.get("metadata", {})
        super().__init__("%s (HTTP %d): %s" % (self.reason or "error", http_status, self.message))


class Registration:
    """One incarnation of a name: what every later call names."""

    def __init__(self, name, body):
        self.name = name
        # int64 fields arrive as JSON strings (protobuf's JSON mapping).
        self.incarnation = int(body["incarnation"])
        self.lease_id = int(body["lease_id"])
        self.ttl_seconds = int(body["ttl_seconds"])

    def ident(self):
        return {"name": self.name, "incarnation": str(self.incarnation), "lease_id": str(self.lease_id)}


class KeepAlive:
    """Renews a registration's lease every third of its TTL in a thread."""

    def __init__(self, client, reg):
        self._client, self._reg = client, reg
        self._stop = threading.Event()
        self.error = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(max(self._reg.ttl_seconds / 3.0, 0.2)):
            try:
                self._client.keep_alive_once(self._reg)
            except ApiError as e:
                if e.reason in ("SUPERSEDED", "EXPIRED"):
                    self.error = e
                    return
            except OSError:
                pass  # the node is unreachable: try again, the lease has time

    def stop(self):
        self._stop.set()
        self._thread.join()


class Client:
    """The HTTP/JSON API of one coordinator node."""

    def __init__(self, base_url, timeout=30.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method, path, body=None, timeout=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"message": raw.decode(errors="replace")}
            raise ApiError(e.code, payload) from None

    def register(self, name, ttl_seconds=10, if_absent=False, wait_drained=False):
        """Registers name; returns a Registration. Keep its lease alive."""
        body = self._call("POST", "/v1/register", {
            "name": name, "ttl_seconds": ttl_seconds, "if_absent": if_absent, "wait_drained": wait_drained,
        })
        return Registration(name, body)

    def keep_alive_once(self, reg):
        """Renews the lease once; returns its TTL in seconds."""
        return int(self._call("POST", "/v1/keepalive", reg.ident())["ttl_seconds"])

    def keep_alive_in_background(self, reg):
        """Starts a KeepAlive thread for reg; stop() it when done."""
        return KeepAlive(self, reg)

    def unregister(self, reg):
        self._call("POST", "/v1/unregister", reg.ident())

    @staticmethod
    def set_op(key, value, expiration_seconds=0):
        """A set of key to value (str is sent as text, bytes as base64)."""
        op = {"key": key, "expiration_seconds": expiration_seconds}
        if isinstance(value, bytes):
            op["value"] = base64.b64encode(value).decode()
        else:
            op["text"] = value
        return {"set": op}

    @staticmethod
    def delete_op(key):
        return {"delete": {"key": key}}

    def submit(self, reg, ops, batch_id=""):
        """Submits ops as one batch; returns the token ("REV" or "REV.IDX")."""
        body = {"name": reg.name, "incarnation": str(reg.incarnation), "ops": ops}
        if batch_id:
            body["batch_id"] = batch_id
        return self._call("POST", "/v1/submit", body)["token"]

    def wait_applied(self, token, timeout_ms=0):
        """Returns once token is applied to memcached."""
        self._call("POST", "/v1/wait-applied", {"token": token, "timeout_ms": timeout_ms},
                   timeout=(timeout_ms / 1000.0 + 5) if timeout_ms else None)

    def status(self):
        return self._call("GET", "/v1/status")

    def registrations(self):
        return self._call("GET", "/v1/registrations").get("registrations", [])

    def ops(self, limit=0):
        return self._call("GET", "/v1/ops?limit=%d" % limit)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--api", required=True, help="the node's API, http://host:port")
    p.add_argument("--memcached", required=True, help="memcached host:port to read the value back from")
    p.add_argument("--name", default="py-demo")
    p.add_argument("--key", default="hello")
    p.add_argument("--value", default="world")
    a = p.parse_args(argv)

    from pymemcache.client.base import Client as Memcache  # Debian: python3-pymemcache

    c = Client(a.api)
    old = c.register(a.name, ttl_seconds=5)
    reg = c.register(a.name, ttl_seconds=5)  # supersedes old, as a restart does
    keeper = c.keep_alive_in_background(reg)
    try:
        try:
            c.submit(old, [c.set_op(a.key, "stale")])
            superseded = ""
        except ApiError as e:
            superseded = "%s/%d" % (e.reason, e.http_status)
        tok = c.submit(reg, [c.set_op(a.key, a.value)])
        c.wait_applied(tok)
        host, port = a.memcached.rsplit(":", 1)
        got = Memcache((host, int(port))).get(a.key)  # no serde: the raw bytes
        status = c.status()
    finally:
        keeper.stop()
        c.unregister(reg)
    print(json.dumps({
        "token": tok, "incarnation": reg.incarnation, "superseded": superseded,
        "value": None if got is None else got.decode(), "applied": status["applied"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
