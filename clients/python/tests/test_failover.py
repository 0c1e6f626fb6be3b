"""A node killed with -9 under a session: the session moves to the next
node with the same incarnation, and every accepted operation is in
memcached exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import List, Tuple

import pytest

from coordinator_client import Client, SetOp, Token
from conftest import Cluster, SetCount, active, check_values, unique, wait_until


@pytest.mark.kills_node
def test_node_killed_keeps_incarnation_and_applies_each_op_once(cluster: Cluster) -> None:
    nodes = cluster.live()
    assert len(nodes) == 3, nodes
    probe = Client([n.addr for n in nodes])
    count = SetCount(cluster, probe)
    # Kill a node that does not lead: a new leader would replay its
    # predecessor's last rounds, and memcached's set count would show those
    # writes twice (harmlessly: they are idempotent).
    leader = probe.status().leader
    victim = next(n for n in nodes if n.id != leader)
    order = [victim] + [n for n in nodes if n is not victim]
    name = unique("py-kill")
    ttl = 3
    with Client([n.addr for n in order]) as c:
        s = c.session(name, ttl=ttl)
        inc = s.incarnation
        assert c.current_address == victim.addr
        stop = threading.Event()
        lock = threading.Lock()
        accepted: List[Tuple[Token, str, bytes]] = []
        errors: List[BaseException] = []

        def work(tid: int) -> None:
            i = 0
            while not stop.is_set():
                key, value = "%s/%d/%d" % (name, tid, i), b"%d.%d" % (tid, i)
                try:
                    tok = s.submit([SetOp(key, value)])
                except BaseException as e:
                    with lock:
                        errors.append(e)
                    return
                with lock:
                    accepted.append((tok, key, value))
                i += 1

        threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(accepted) >= 300, 60, "300 submissions before the kill")
            os.kill(victim.pid, signal.SIGKILL)
            killed_at, at_kill = time.monotonic(), len(accepted)
            wait_until(lambda: c.current_address != victim.addr, 30, "the move to the next node")
            # Past one and a half TTLs, the lease lives only if the keep-alive
            # stream found the next node.
            wait_until(lambda: len(accepted) >= at_kill + 300 and time.monotonic() - killed_at > 1.5 * ttl,
                       60, "300 submissions and 1.5 TTLs after the kill")
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors[:3]
        st = s.stats()
        assert s.incarnation == inc and st.renewals == 0, st
        assert active(c, name) == [inc]
        toks = [a[0] for a in accepted]
        assert len(set(toks)) == len(toks)
        s.wait_applied(max(toks))
        check_values(cluster, {k: v for _, k, v in accepted})
        print("node killed: %d accepted, %d resent after a lost reply" % (len(accepted), st.resends))
        # Each op writes its own key once: one memcached set per accepted op.
        count.check(len(accepted))
        s.close()
    probe.close()
