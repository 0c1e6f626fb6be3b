"""Bad input and timeouts: the documented errors, and nothing written."""

from __future__ import annotations

import time

import pytest

from coordinator_client import (
    Client,
    CoordinatorError,
    DeleteOp,
    Invalid,
    NameHeld,
    SetOp,
    Timeout,
    Token,
)
from conftest import Cluster, SetCount, active, unique


def test_bad_input_is_invalid_and_writes_nothing(cluster: Cluster, client: Client) -> None:
    name = unique("py-bad")
    good = name + "/good"
    s = client.session(name)
    count = SetCount(cluster, client)
    before = client.status()
    bad_batches = [
        [SetOp(good, "v"), SetOp("bad key", "v")],  # one bad op refuses the batch
        [SetOp("k" * 251, "v")],
        [SetOp("", "v")],
        [SetOp(name + "/neg", "v", expiration=-1)],
        [SetOp(name + "/big", b"x" * ((1 << 20) + 1))],
        [SetOp(name + "/exp", "v", expiration=1 << 40)],  # not an int32
        [SetOp(name + "/type", 42)],  # type: ignore[arg-type]
        [DeleteOp("bad\nkey")],
        [],
    ]
    for batch in bad_batches:
        with pytest.raises(Invalid) as ei:
            s.submit(batch)
        assert ei.value.http_status == 400
    with pytest.raises(Invalid):
        s.submit([SetOp(good, "v")], batch_id="a/b")
    with pytest.raises(Invalid):
        client.register("bad name")
    with pytest.raises(Invalid):
        client.session("")
    after = client.status()
    assert after.pending_batches == before.pending_batches == 0
    assert after.applied == before.applied
    count.check(0)
    assert cluster.memcache().get(good) is None
    # The session is unharmed.
    tok = s.submit([SetOp(good, "ok")])
    s.wait_applied(tok)
    assert cluster.memcache().get(good) == b"ok"
    assert s.renewals == 0 and active(client, name) == [s.incarnation]
    s.close()


def test_wait_applied_timeout(client: Client) -> None:
    far = Token(10**12)
    t0 = time.monotonic()
    with pytest.raises(Timeout) as ei:
        client.wait_applied(far, timeout=0.3)
    assert time.monotonic() - t0 < 5
    assert ei.value.reason == "TIMEOUT" and ei.value.http_status == 504
    with pytest.raises(Invalid):
        client.wait_applied("not-a-token", timeout=1)


def test_name_held_and_caller_lifecycle(client: Client) -> None:
    """A Caller keeps its incarnation; if_absent refuses a held name;
    close frees the name at once."""
    name = unique("py-caller")
    caller = client.register(name, ttl=5)
    with pytest.raises(NameHeld) as ei:
        client.register(name, if_absent=True)
    assert isinstance(ei.value, CoordinatorError) and ei.value.http_status == 409
    tok = caller.submit([SetOp(name + "/a", "1"), DeleteOp(name + "/b")], batch_id="my-batch-1")
    # The same batch id again is the same batch: its token, stored once.
    assert caller.submit([SetOp(name + "/a", "1"), DeleteOp(name + "/b")], batch_id="my-batch-1") == tok
    caller.wait_applied(tok)
    assert active(client, name) == [caller.incarnation]
    caller.close()
    assert active(client, name) == []
    assert caller.error is not None
