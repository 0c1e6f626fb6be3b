"""What the tests share: the real nodes, etcd and memcached that
integration/pyclient (Go) started for them, and interceptors that hold or
drop chosen calls so that a race happens on purpose.

The Go test passes the cluster in COORDINATOR_PYTEST_ENV (JSON): the nodes'
ids, API addresses and pids, memcached's address, and the directory the
package was installed into. Run them with `go test ./integration/pyclient`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional

import grpc
import grpc.aio
import pytest
from pymemcache.client.base import Client as Memcache

import coordinator_client
from coordinator_client import Client, Token
from coordinator_client._pb import coordinator_pb2 as pb

SUBMIT = "/coordinator.v1.Coordinator/Submit"
REGISTER = "/coordinator.v1.Coordinator/Register"
HOLD_LIMIT = 30.0  # no test waits on an event longer than this


@dataclass
class Node:
    id: str
    addr: str
    pid: int


@dataclass
class Cluster:
    nodes: List[Node]
    memcached: str

    def live(self) -> List[Node]:
        """The nodes whose process still runs."""
        out = []
        for n in self.nodes:
            try:
                os.kill(n.pid, 0)
                out.append(n)
            except ProcessLookupError:
                pass
        return out

    def addresses(self) -> List[str]:
        return [n.addr for n in self.live()]

    def memcache(self) -> Memcache:
        host, port = self.memcached.rsplit(":", 1)
        return Memcache((host, int(port)))


def _env() -> Optional[Dict[str, Any]]:
    raw = os.environ.get("COORDINATOR_PYTEST_ENV")
    return json.loads(raw) if raw else None


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "kills_node: kills a node with -9; runs after every other test")


def pytest_collection_modifyitems(items: List[Any]) -> None:
    # The tests share one cluster: the one that kills a node goes last, so
    # that the others find every node running.
    items.sort(key=lambda it: it.get_closest_marker("kills_node") is not None)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    env = _env()
    if env is None:
        pytest.skip("needs the cluster of integration/pyclient: go test ./integration/pyclient")
    site = env.get("site")
    if site:
        # The package under test is the one pip installed, not the source tree.
        assert os.path.realpath(coordinator_client.__file__).startswith(os.path.realpath(site)), \
            coordinator_client.__file__
    c = Cluster([Node(**n) for n in env["nodes"]], env["memcached"])
    with Client(c.addresses()) as probe:
        wait_until(lambda: probe.status().leader != "", 60, "a leader")
    return c


@pytest.fixture
def client(cluster: Cluster) -> Iterable[Client]:
    c = Client(cluster.addresses())
    yield c
    c.close()


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    """Polls cond until it returns something true, or fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def revoke(cluster: Cluster, name: str, incarnation: int, lease_id: int) -> None:
    """Revokes an incarnation's lease with the API's Unregister, through a
    stub of its own: the registration is gone when it returns."""
    with grpc.insecure_channel(cluster.addresses()[0]) as ch:
        stub = coordinator_client._pb.coordinator_pb2_grpc.CoordinatorStub(ch)
        stub.Unregister(pb.UnregisterRequest(name=name, incarnation=incarnation, lease_id=lease_id), timeout=10)


def active(client: Client, name: str) -> List[int]:
    """The active incarnations of name in the registrations view."""
    return [r.incarnation for r in client.registrations() if r.name == name and r.status == "active"]


def quiet(client: Client) -> None:
    """Waits until nothing is pending, so that memcached's counters move
    only with what the test does next."""
    wait_until(lambda: client.status().pending_batches == 0, 30, "no pending batches")


def cmd_set(cluster: Cluster) -> int:
    return int(cluster.memcache().stats()[b"cmd_set"])


class SetCount:
    """Counts memcached's sets from now on, and whether leadership stayed:
    a new leader rewrites its predecessor's last rounds (idempotently), so
    the count is exact only under one leader."""

    def __init__(self, cluster: Cluster, client: Client) -> None:
        self.cluster, self.client = cluster, client
        quiet(client)
        self.term = client.status().term
        self.before = cmd_set(cluster)

    def check(self, want: int) -> None:
        """Fails unless exactly want sets were made (at least want when the
        leadership moved)."""
        quiet(self.client)
        sets = cmd_set(self.cluster) - self.before
        if self.client.status().term == self.term:
            assert sets == want, "memcached counted %d sets, want %d" % (sets, want)
        else:
            print("leadership moved during the test; memcached's set count includes a replay")
            assert sets >= want, "memcached counted %d sets, want at least %d" % (sets, want)


def check_values(cluster: Cluster, want: Dict[str, bytes]) -> None:
    """Every key holds its value in memcached."""
    mc = cluster.memcache()
    keys = list(want)
    got: Dict[str, bytes] = {}
    for i in range(0, len(keys), 100):
        got.update(mc.get_many(keys[i:i + 100]))
    missing = [k for k in keys if got.get(k) != want[k]]
    assert not missing, "%d keys without their value, e.g. %s: %r" % (len(missing), missing[0], got.get(missing[0]))


def max_token(toks: Iterable[Token]) -> Token:
    return max(toks)


class Hold(grpc.UnaryUnaryClientInterceptor):
    """Holds the next call of a method whose request matches, once armed:
    before it goes out until ``send`` is set, and after its answer came in
    until ``release`` is set. ``reached`` and ``answered`` tell the test where
    the call is."""

    def __init__(self, method: str, match: Callable[[Any], bool] = lambda r: True, hold_send: bool = False) -> None:
        self.method, self.match = method, match
        self.armed = threading.Event()
        self.reached = threading.Event()
        self.send = threading.Event()
        self.answered = threading.Event()
        self.release = threading.Event()
        if not hold_send:
            self.send.set()

    def _take(self, method: str, request: Any) -> bool:
        if method != self.method or not self.armed.is_set() or not self.match(request):
            return False
        self.armed.clear()
        return True

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if not self._take(details.method, request):
            return continuation(details, request)
        self.reached.set()
        assert self.send.wait(HOLD_LIMIT), "held call never sent"
        outcome = continuation(details, request)
        self.answered.set()
        assert self.release.wait(HOLD_LIMIT), "held call never released"
        return outcome


class AioHold(grpc.aio.UnaryUnaryClientInterceptor):
    """Hold for grpc.aio: the same events, as asyncio events of the test's loop."""

    def __init__(self, method: str, match: Callable[[Any], bool] = lambda r: True) -> None:
        import asyncio

        self.method, self.match = method, match
        self.armed = False
        self.reached = asyncio.Event()
        self.send = asyncio.Event()
        self.answered = asyncio.Event()
        self.release = asyncio.Event()

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        import asyncio

        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method != self.method or not self.armed or not self.match(request):
            return await continuation(details, request)
        self.armed = False
        self.reached.set()
        await asyncio.wait_for(self.send.wait(), HOLD_LIMIT)
        call = await continuation(details, request)
        try:
            await call
        except grpc.RpcError:
            pass  # the answer is the refusal: handed on as it is
        self.answered.set()
        await asyncio.wait_for(self.release.wait(), HOLD_LIMIT)
        return call


class LostReply(grpc.RpcError):
    """A reply lost on the way back: what a caller sees when the connection
    breaks after the node answered."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "reply dropped by the test"

    def trailing_metadata(self) -> tuple:
        return ()


class DropReplies(grpc.UnaryUnaryClientInterceptor):
    """Drops the replies of Submits of a key, up to ``times`` of them, after
    the node answered (so the batch was stored). ``tokens`` are the dropped
    answers; ``before_drop`` runs with each before it is dropped."""

    def __init__(self, key: str, times: int, before_drop: Optional[Callable[[str], None]] = None) -> None:
        self.key, self.left, self.before_drop = key, times, before_drop
        self.tokens: List[str] = []
        self.lock = threading.Lock()

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if details.method != SUBMIT or not request.ops or request.ops[0].set.key != self.key:
            return continuation(details, request)
        with self.lock:
            if self.left <= 0:
                return continuation(details, request)
            self.left -= 1
        outcome = continuation(details, request)
        if outcome.exception() is not None:
            return outcome
        tok = outcome.result().token
        self.tokens.append(tok)
        if self.before_drop is not None:
            self.before_drop(tok)
        raise LostReply()
