"""Reads keys with a Python memcached client at its default settings and
reports what it returned (see readers_test.go).

Usage: read_python.py CLIENT SERVERS KEYS_FILE
CLIENT is pylibmc (libmemcached's weighted ketama over SERVERS), pymemcache
(its Client, on the one server SERVERS names) or pymemcache-pickle (the same
with serde=pymemcache.serde.pickle_serde). SERVERS is host:port[:weight],...
KEYS_FILE holds one "key hexvalue" per line. No subclass, no custom serde or
deserializer: the value is what the client returns by default.
"""
import json
import sys


def returned(value):
    """The bytes a value stands for, and the name of its type."""
    if isinstance(value, bytes):
        return value, "bytes"
    if isinstance(value, str):
        return value.encode("utf-8"), "str"
    return None, type(value).__name__


def main():
    client, servers, path = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
    if client == "pylibmc":
        import pylibmc
        mc = pylibmc.Client(servers, behaviors={"ketama_weighted": True})
        get_multi = mc.get_multi
    elif client in ("pymemcache", "pymemcache-pickle"):
        from pymemcache.client.base import Client
        host, port = servers[0].split(":")[:2]
        kwargs = {}
        if client == "pymemcache-pickle":
            from pymemcache import serde
            kwargs["serde"] = serde.pickle_serde
        mc = Client((host, int(port)), **kwargs)
        get_multi = mc.get_many
    else:
        sys.exit("unknown client %r" % client)
    want = {}
    with open(path) as f:
        for line in f:
            k, v = line.split()
            want[k] = bytes.fromhex(v)
    report = {}
    names = list(want)
    for i in range(0, len(names), 100):
        chunk = names[i:i + 100]
        got = get_multi(chunk)
        for k in chunk:
            kind = k.split("-", 1)[0]
            r = report.setdefault(kind, {"checked": 0, "ok": 0, "missing": 0, "wrong": 0, "types": {}, "examples": []})
            r["checked"] += 1
            if k not in got:
                r["missing"] += 1
                continue
            b, typ = returned(got[k])
            r["types"][typ] = r["types"].get(typ, 0) + 1
            if b == want[k]:
                r["ok"] += 1
            else:
                r["wrong"] += 1
                if len(r["examples"]) < 3:
                    r["examples"].append("%s: %r" % (k, got[k])[:200])
    json.dump(report, sys.stdout)


main()
