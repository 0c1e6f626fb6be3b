"""AsyncSession and AsyncClient: G9 for asyncio tasks, as for threads."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Dict, List, Tuple

import pytest

from coordinator_client import (
    AsyncClient,
    Invalid,
    SessionSuperseded,
    SetOp,
    Timeout,
    Token,
)
from conftest import SUBMIT, AioHold, Cluster, check_values, revoke, unique
from test_session import DOCUMENTED, other_process_registers


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def until(cond: Callable[[], Any], timeout: float, what: str) -> None:
    """Polls cond on the loop until it is true, or fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        await asyncio.sleep(0.01)


def test_tasks_share_one_renewal(cluster: Cluster) -> None:
    """200 asyncio tasks submit through one AsyncSession while its lease is
    revoked under them: one re-registration, every call succeeds or raises a
    documented error, every accepted op is in memcached."""
    name = unique("py-tasks")

    async def main() -> Tuple[Any, List[Tuple[Token, str, bytes]], List[BaseException], List[int]]:
        async with AsyncClient(cluster.addresses()) as c:
            s = await c.session(name)
            old_inc, old_lease = s.incarnation, s.lease_id
            stop = asyncio.Event()
            accepted: List[Tuple[Token, str, bytes]] = []
            errors: List[BaseException] = []

            async def work(tid: int) -> None:
                i = 0
                while not stop.is_set():
                    key, value = "%s/%d/%d" % (name, tid, i), b"v%d.%d" % (tid, i)
                    try:
                        accepted.append((await s.submit([SetOp(key, value)]), key, value))
                    except BaseException as e:
                        errors.append(e)
                        return
                    i += 1

            tasks = [asyncio.ensure_future(work(t)) for t in range(200)]
            try:
                await until(lambda: len(accepted) >= 400, 60, "400 submissions before the revoke")
                await asyncio.get_running_loop().run_in_executor(None, revoke, cluster, name, old_inc, old_lease)
                at_revoke = len(accepted)
                await until(lambda: s.incarnation != old_inc, 30, "the re-registration")
                await until(lambda: len(accepted) >= at_revoke + 400, 60, "400 submissions after the revoke")
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            await s.wait_applied(max(a[0] for a in accepted))
            regs = [r.incarnation for r in await c.registrations() if r.name == name and r.status == "active"]
            st = s.stats()
            assert regs == [s.incarnation], regs
            await s.close()
            return st, accepted, errors, regs

    st, accepted, errors, _ = run(main())
    print("200 tasks: %d accepted; %s" % (len(accepted), st))
    assert st.renewals == 1, st
    assert all(isinstance(e, DOCUMENTED) for e in errors), errors[:3]
    assert not errors, "calls failed: %r" % errors[:3]
    assert st.expired + st.waits > 0, st
    toks = [a[0] for a in accepted]
    assert len(set(toks)) == len(toks)
    check_values(cluster, {k: v for _, k, v in accepted})


def test_async_late_refusal_retries_without_second_renewal(cluster: Cluster) -> None:
    """The cookie compare in an AsyncSession: a refusal under the old
    incarnation held until after the re-registration is resent under the
    new one, without a second re-registration."""
    name = unique("py-alate")
    held_key = name + "/held"

    async def main() -> Dict[str, Any]:
        hold = AioHold(SUBMIT, lambda r: r.ops[0].set.key == held_key)
        async with AsyncClient(cluster.addresses(), interceptors=[hold]) as c:
            s = await c.session(name)
            old_inc = s.incarnation
            hold.armed = True
            held = asyncio.ensure_future(s.submit([SetOp(held_key, "late")]))
            await asyncio.wait_for(hold.reached.wait(), 30)
            await asyncio.get_running_loop().run_in_executor(None, revoke, cluster, name, old_inc, s.lease_id)
            hold.send.set()
            await asyncio.wait_for(hold.answered.wait(), 30)
            other = await s.submit([SetOp(name + "/other", "x")])
            assert s.incarnation != old_inc and s.renewals == 1
            hold.release.set()
            tok = await asyncio.wait_for(held, 30)
            await s.wait_applied(max(tok, other))
            out = {"stats": s.stats(), "inc": s.incarnation,
                   "active": [r.incarnation for r in await c.registrations() if r.name == name and r.status == "active"]}
            await s.close()
            return out

    out = run(main())
    assert out["stats"].renewals == 1, out
    assert out["stats"].retried >= 1, out
    assert out["active"] == [out["inc"]]
    check_values(cluster, {held_key: b"late", name + "/other": b"x"})


def test_async_superseded_and_errors(cluster: Cluster) -> None:
    """An AsyncSession superseded by another process is final; bad input is
    Invalid; a wait_applied timeout is Timeout."""
    name = unique("py-aerr")

    async def main() -> None:
        async with AsyncClient(cluster.addresses()) as c:
            s = await c.session(name)
            with pytest.raises(Invalid):
                await s.submit([SetOp("bad key", "x")])
            far = Token((await c.status()).term + 10**12)
            t0 = time.monotonic()
            with pytest.raises(Timeout):
                await c.wait_applied(far, timeout=0.3)
            assert time.monotonic() - t0 < 5
            loop = asyncio.get_running_loop()
            other = await loop.run_in_executor(None, other_process_registers, cluster, name)
            with pytest.raises(SessionSuperseded):
                await s.submit([SetOp(name + "/a", "x")])
            with pytest.raises(SessionSuperseded):
                await s.submit([SetOp(name + "/b", "x")])
            assert s.renewals == 0
            assert [r.incarnation for r in await c.registrations() if r.name == name and r.status == "active"] == [other]
            await s.close()

    run(main())
