#!/usr/bin/env python3
"""Submissions per second of one Session through a node's API.

Workers share one session (threads: Session; asyncio: AsyncSession) and each
submits one set at a time, waiting for its token, for --duration seconds;
prints one JSON line: mode, workers, submissions, seconds, rate, p50_ms,
p99_ms. integration/pyclient's TestPythonSessionThroughput runs it beside the
Go pkg/apiclient session (see BENCHMARKS.md):

    session_throughput.py --addr 127.0.0.1:8080 --mode threads --workers 16 --duration 5
"""

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from typing import List

from coordinator_client import AsyncClient, Client, SetOp


def summary(mode: str, workers: int, lat: List[float], seconds: float) -> dict:
    lat.sort()

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3) if lat else 0.0

    return {"mode": mode, "workers": workers, "submissions": len(lat), "seconds": round(seconds, 3),
            "rate": round(len(lat) / seconds, 1), "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def run_threads(a: argparse.Namespace, value: bytes) -> dict:
    with Client([a.addr]) as c:
        s = c.session(a.name)
        for i in range(50):  # warm the channel and the node's paths
            s.submit([SetOp("%s/warm/%d" % (a.name, i), value)])
        start = threading.Event()
        lats: List[List[float]] = [[] for _ in range(a.workers)]
        ends = [0.0] * a.workers
        t0 = [0.0]

        def work(w: int) -> None:
            start.wait()
            stop_at = t0[0] + a.duration
            i, lat = 0, lats[w]
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    break
                s.submit([SetOp("%s/%d/%d" % (a.name, w, i % a.keys), value)])
                lat.append(time.perf_counter() - now)
                i += 1
            ends[w] = time.perf_counter()

        threads = [threading.Thread(target=work, args=(w,)) for w in range(a.workers)]
        for t in threads:
            t.start()
        t0[0] = time.perf_counter()
        start.set()
        for t in threads:
            t.join()
        s.close()
    return summary("threads", a.workers, [x for lat in lats for x in lat], max(ends) - t0[0])


async def run_asyncio(a: argparse.Namespace, value: bytes) -> dict:
    async with AsyncClient([a.addr]) as c:
        s = await c.session(a.name)
        for i in range(50):
            await s.submit([SetOp("%s/warm/%d" % (a.name, i), value)])
        t0 = time.perf_counter()
        stop_at = t0 + a.duration
        lats: List[List[float]] = [[] for _ in range(a.workers)]
        ends = [0.0] * a.workers

        async def work(w: int) -> None:
            i, lat = 0, lats[w]
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    break
                await s.submit([SetOp("%s/%d/%d" % (a.name, w, i % a.keys), value)])
                lat.append(time.perf_counter() - now)
                i += 1
            ends[w] = time.perf_counter()

        await asyncio.gather(*(work(w) for w in range(a.workers)))
        await s.close()
    return summary("asyncio", a.workers, [x for lat in lats for x in lat], max(ends) - t0)


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--addr", required=True, help="the node's API, host:port")
    p.add_argument("--mode", choices=("threads", "asyncio"), default="threads")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0, help="seconds")
    p.add_argument("--name", default="pybench-%d" % os.getpid())
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--keys", type=int, default=1000, help="distinct keys per worker")
    a = p.parse_args(argv)
    value = b"x" * a.value_size
    out = run_threads(a, value) if a.mode == "threads" else asyncio.run(run_asyncio(a, value))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
