#!/usr/bin/env python3
"""A caller of the coordinator's API with the Python client package
(clients/python, package coordinator_client).

It registers a name twice, as a restart does, shows the first incarnation's
submission refused as superseded, submits through a session, waits until the
batch is applied, reads the value back from memcached with pymemcache
(Debian: python3-pymemcache) and prints one JSON line:

    coordinator_client.py --api 127.0.0.1:8080 --memcached 127.0.0.1:11211 \\
        --name py-demo --key hello --value world

Run from a checkout it uses the checkout's package; elsewhere, install it
first (docs/api.md, "A caller in Python").
"""

import argparse
import json
import os
import sys

# This file shares its name with the package: its own directory must not
# shadow it. From a checkout, the checkout's package is the one to use.
_here = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != _here]
_checkout = os.path.join(_here, os.pardir, os.pardir, "clients", "python")
if os.path.isdir(os.path.join(_checkout, "coordinator_client")):
    sys.path.insert(0, os.path.realpath(_checkout))

from coordinator_client import Client, SetOp, Superseded  # noqa: E402


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--api", required=True, help="the node's API, host:port (http:// is allowed)")
    p.add_argument("--memcached", required=True, help="memcached host:port to read the value back from")
    p.add_argument("--name", default="py-demo")
    p.add_argument("--key", default="hello")
    p.add_argument("--value", default="world")
    a = p.parse_args(argv)

    from pymemcache.client.base import Client as Memcache  # Debian: python3-pymemcache

    api = a.api.split("://", 1)[-1].rstrip("/")
    with Client([api]) as c:
        old = c.register(a.name, ttl=5)
        session = c.session(a.name, ttl=5)  # supersedes old, as a restart does
        try:
            try:
                old.submit([SetOp(a.key, "stale")])
                superseded = ""
            except Superseded as e:
                superseded = "%s/%d" % (e.reason, e.http_status)
            tok = session.submit([SetOp(a.key, a.value)])
            session.wait_applied(tok)
            host, port = a.memcached.rsplit(":", 1)
            got = Memcache((host, int(port))).get(a.key)  # no serde: the raw bytes
            applied = c.status().applied
        finally:
            session.close()
            old.close()
    print(json.dumps({
        "token": str(tok), "incarnation": session.incarnation, "superseded": superseded,
        "value": None if got is None else got.decode(), "applied": applied,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
