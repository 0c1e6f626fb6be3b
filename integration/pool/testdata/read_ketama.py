"""Reads keys through pylibmc (libmemcached) and reports what it finds.

Input on stdin, JSON: {"servers": ["host:port[:weight]", ...],
"behaviors": {...pylibmc behaviors...}, "keys": {"key": "value", ...}}.
Output on stdout, JSON: {"checked": n, "missing": [...], "wrong": [...]},
where missing are keys pylibmc did not find and wrong are keys it found
with another value (each list cut to its first 20 keys), with their counts,
and the distribution and hashes pylibmc reports it uses.
Exit status 3 means pylibmc cannot be imported.
"""
import json
import sys

try:
    import pylibmc
except ImportError as e:
    print("pylibmc: %s" % e, file=sys.stderr)
    sys.exit(3)


def main():
    req = json.load(sys.stdin)
    # pylibmc's own client: the coordinator's item flags (the term in the
    # high 16 bits, 0 in the low 16) read as a plain value.
    mc = pylibmc.Client(req["servers"], binary=False, behaviors=req["behaviors"])
    keys = req["keys"]
    missing, wrong = [], []
    names = list(keys)
    for i in range(0, len(names), 100):
        chunk = names[i:i + 100]
        got = mc.get_multi(chunk)
        for k in chunk:
            if k not in got:
                missing.append(k)
            elif got[k] != keys[k].encode():
                wrong.append(k)
    json.dump({"checked": len(names), "missing_count": len(missing),
               "wrong_count": len(wrong), "missing": missing[:20],
               "wrong": wrong[:20], "behaviors": {k: mc.behaviors[k] for k in
                                                  ("distribution", "hash", "ketama_hash")}},
              sys.stdout)


main()
