"""Sessions shared by threads (G9): one re-registration per lost lease,
the cookie compare, superseded as final, lost replies settled."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Dict, List, Tuple

import pytest

from coordinator_client import (
    Client,
    Expired,
    Invalid,
    NameHeld,
    NoSpace,
    NotAccepted,
    OutcomeUnknown,
    PermissionDenied,
    ResourceExhausted,
    SessionClosed,
    SessionSuperseded,
    SetOp,
    Superseded,
    Timeout,
    Token,
    TooLarge,
    Unavailable,
)
from conftest import (
    REGISTER,
    SUBMIT,
    Cluster,
    DropReplies,
    Hold,
    SetCount,
    active,
    check_values,
    revoke,
    unique,
    wait_until,
)

# The errors docs/api.md documents; anything else a call raises is a bug.
DOCUMENTED = (
    Invalid, Superseded, Expired, NameHeld, NotAccepted, OutcomeUnknown, PermissionDenied, Unavailable,
    Timeout, TooLarge, ResourceExhausted, NoSpace, SessionClosed,
)


def other_process_registers(cluster: Cluster, name: str) -> int:
    """Registers name from another Python process, which exits without
    unregistering: its registration lives on for its lease's 5 s. Returns
    its incarnation."""
    code = (
        "import sys; from coordinator_client import Client\n"
        "c = Client(sys.argv[1].split(','))\n"
        "print(c.register(sys.argv[2], ttl=5).incarnation)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, ",".join(cluster.addresses()), name],
                         check=True, capture_output=True, text=True, timeout=60)
    return int(out.stdout.strip().splitlines()[-1])


def test_threads_share_one_renewal(cluster: Cluster, client: Client) -> None:
    """200 threads submit through one session while its lease is revoked
    under them: one re-registration, and every call succeeds or raises a
    documented error; every accepted op is in memcached."""
    name = unique("py-threads")
    s = client.session(name)
    old_inc, old_lease = s.incarnation, s.lease_id
    stop = threading.Event()
    lock = threading.Lock()
    accepted: List[Tuple[Token, str, bytes, int]] = []  # token, key, value, incarnation seen before the call
    errors: List[BaseException] = []

    def work(tid: int) -> None:
        i = 0
        while not stop.is_set():
            key, value = "%s/%d/%d" % (name, tid, i), b"v%d.%d" % (tid, i)
            try:
                tok = s.submit([SetOp(key, value)])
                with lock:
                    accepted.append((tok, key, value, s.incarnation))
            except BaseException as e:  # collected: the test judges them
                with lock:
                    errors.append(e)
                return
            i += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(200)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(accepted) >= 400, 60, "400 submissions before the revoke")
        revoke(cluster, name, old_inc, old_lease)
        at_revoke = len(accepted)
        wait_until(lambda: s.incarnation != old_inc, 30, "the re-registration")
        wait_until(lambda: len(accepted) >= at_revoke + 400, 60, "400 submissions after the revoke")
    finally:
        stop.set()
        for t in threads:
            t.join()
    st = s.stats()
    print("200 threads: %d accepted, %d after the revoke; %s" % (len(accepted), len(accepted) - at_revoke, st))
    assert st.renewals == 1, st
    assert all(isinstance(e, DOCUMENTED) for e in errors), errors[:3]
    assert not errors, "calls failed: %r" % errors[:3]
    assert st.expired + st.waits > 0, st  # calls met the dead lease
    assert active(client, name) == [s.incarnation]
    toks = [a[0] for a in accepted]
    assert len(set(toks)) == len(toks), "two submissions share a token"
    s.wait_applied(max(toks))
    check_values(cluster, {k: v for _, k, v, _ in accepted})
    s.close()
    assert active(client, name) == []


def test_late_refusal_retries_without_second_renewal(cluster: Cluster) -> None:
    """A call refused as expired under the old incarnation whose answer
    arrives after the session re-registered compares its cookie, finds a
    newer incarnation, and is resent under it: no second re-registration."""
    name = unique("py-late")
    held_key = name + "/held"
    hold = Hold(SUBMIT, lambda r: r.ops[0].set.key == held_key, hold_send=True)
    with Client(cluster.addresses(), interceptors=[hold]) as c:
        s = c.session(name)
        old_inc = s.incarnation
        hold.armed.set()
        result: Dict[str, object] = {}

        def held() -> None:
            try:
                result["token"] = s.submit([SetOp(held_key, "late")])
            except BaseException as e:
                result["error"] = e

        t = threading.Thread(target=held)
        t.start()
        assert hold.reached.wait(30), "the held call never started"
        # The call is on its way under the old incarnation: end it, then let
        # the call reach the node, which refuses it as expired.
        revoke(cluster, name, old_inc, s.lease_id)
        hold.send.set()
        assert hold.answered.wait(30)
        # Another call meets the dead lease and the session re-registers,
        # while the refusal is still held.
        tok = s.submit([SetOp(name + "/other", "x")])
        assert s.incarnation != old_inc and s.renewals == 1
        hold.release.set()
        t.join(30)
        assert "error" not in result, result
        st = s.stats()
        print("late refusal:", st)
        assert st.renewals == 1, st
        assert st.retried >= 1, st
        assert active(c, name) == [s.incarnation]
        s.wait_applied(max(tok, result["token"]))  # type: ignore[type-var]
        check_values(cluster, {held_key: b"late", name + "/other": b"x"})
        s.close()


def test_superseded_is_final_for_waiting_and_later_calls(cluster: Cluster) -> None:
    """While the session re-registers (held), another process takes the
    name: the re-registration finds it held by another process, and every
    call waiting for it and every later call raises SessionSuperseded."""
    name = unique("py-taken")
    hold = Hold(REGISTER, hold_send=True)
    with Client(cluster.addresses(), interceptors=[hold]) as c:
        s = c.session(name)
        old_inc = s.incarnation
        hold.armed.set()
        revoke(cluster, name, old_inc, s.lease_id)
        assert hold.reached.wait(30), "the session never re-registered"
        outcomes: List[BaseException] = []
        lock = threading.Lock()

        def call(i: int) -> None:
            try:
                s.submit([SetOp("%s/%d" % (name, i), "x")])
                e: BaseException = AssertionError("accepted")
            except BaseException as err:
                e = err
            with lock:
                outcomes.append(e)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        wait_until(lambda: s.stats().waits == 20, 30, "20 calls waiting for the re-registration")
        other = other_process_registers(cluster, name)
        hold.send.set()
        hold.release.set()
        for t in threads:
            t.join(30)
        assert len(outcomes) == 20
        assert all(isinstance(e, SessionSuperseded) for e in outcomes), outcomes[:3]
        with pytest.raises(SessionSuperseded):
            s.submit([SetOp(name + "/later", "x")])
        assert isinstance(s.error, SessionSuperseded)
        assert s.renewals == 0
        assert active(c, name) == [other]
        s.close()


def test_superseded_while_live_is_final(cluster: Cluster, client: Client) -> None:
    """Another process registers the name of a live session: the session
    stops, and does not register over it."""
    name = unique("py-replaced")
    s = client.session(name)
    s.submit([SetOp(name + "/a", "x")])
    other = other_process_registers(cluster, name)
    with pytest.raises(SessionSuperseded) as ei:
        # The keep-alive stream ends the session as soon as the node sees
        # the new registration; a call that goes out before is refused as
        # superseded under the current incarnation. Either way: final.
        s.submit([SetOp(name + "/b", "x")])
    assert ei.value.current in (other, None)
    with pytest.raises(SessionSuperseded):
        s.submit([SetOp(name + "/c", "x")])
    assert s.renewals == 0
    assert active(client, name) == [other]
    s.close()


def test_closed_session_refuses_calls(client: Client) -> None:
    name = unique("py-closed")
    s = client.session(name)
    s.close()
    with pytest.raises(SessionClosed):
        s.submit([SetOp(name + "/a", "x")])
    assert active(client, name) == []


def test_lost_reply_is_settled_by_resending_the_batch_id(cluster: Cluster, client: Client) -> None:
    """The node stored the batch but its reply was lost: the session sends
    the same batch id with the lease again and gets the first token; the
    batch is written once."""
    name = unique("py-lost")
    key = name + "/k"
    drop = DropReplies(key, 1)
    count = SetCount(cluster, client)
    with Client(cluster.addresses(), interceptors=[drop]) as c:
        s = c.session(name)
        tok = s.submit([SetOp(key, "once")])
        assert drop.tokens == [str(tok)]
        assert s.stats().resends == 1
        s.wait_applied(tok)
        check_values(cluster, {key: b"once"})
        count.check(1)
        s.close()


def test_outcome_unknown_only_when_nothing_can_tell(cluster: Cluster, client: Client) -> None:
    """Replies lost until the call's timeout: OutcomeUnknown, which
    resolve() settles to the first token. A reply lost and the incarnation
    gone before the resend (its batch applied, its receipt revoked with the
    lease): nothing can tell, and resolve() says so too; the session goes
    on under a new incarnation."""
    name = unique("py-unknown")
    key = name + "/k"
    drop = DropReplies(key, 1000)
    with Client(cluster.addresses(), interceptors=[drop]) as c:
        s = c.session(name)
        with pytest.raises(OutcomeUnknown) as ei:
            s.submit([SetOp(key, "v1")], timeout=1.0)
        e = ei.value
        assert (e.name, e.incarnation, e.lease_id) == (name, s.incarnation, s.lease_id)
        assert e.batch_id and list(e.ops) == [SetOp(key, "v1")]
        drop.left = 0
        assert str(s.resolve(e)) == drop.tokens[0]
        s.close()

    name = unique("py-gone")
    key = name + "/k"
    ident: Dict[str, int] = {}

    def applied_then_revoked(tok: str) -> None:
        client.wait_applied(tok)
        revoke(cluster, name, ident["inc"], ident["lease"])

    drop = DropReplies(key, 1, before_drop=applied_then_revoked)
    with Client(cluster.addresses(), interceptors=[drop]) as c:
        s = c.session(name)
        ident.update(inc=s.incarnation, lease=s.lease_id)
        with pytest.raises(OutcomeUnknown) as ei:
            s.submit([SetOp(key, "v2")])
        e = ei.value
        assert (e.incarnation, e.lease_id) == (ident["inc"], ident["lease"]) and e.batch_id
        assert isinstance(e.cause, (Expired, Superseded)), e.cause
        with pytest.raises(OutcomeUnknown):
            s.resolve(e)
        tok = s.submit([SetOp(name + "/after", "x")])
        assert s.renewals == 1 and s.incarnation != ident["inc"]
        s.wait_applied(tok)
        check_values(cluster, {key: b"v2", name + "/after": b"x"})
        s.close()
