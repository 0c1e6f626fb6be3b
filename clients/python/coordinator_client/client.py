"""The thread-based client: ``Client`` and ``Caller``.

A ``Client`` calls the API of one of several nodes; a ``Caller`` is one
incarnation of a name, whose lease a background thread keeps alive on a
``KeepAlive`` stream, opened again on the next node when the one it used goes
away (same incarnation, same lease). Use a ``Session`` (session.py) for a
registration that outlives lost leases.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import grpc

from . import _core
from ._core import Backoff, Deadline, Outcome, Registration
from ._pb import coordinator_pb2 as pb
from ._pb import coordinator_pb2_grpc as pb_grpc
from .errors import (
    Closed,
    CoordinatorError,
    Expired,
    OutcomeUnknown,
    ResourceExhausted,
    Superseded,
    Timeout,
    Unavailable,
    from_rpc_error,
)
from .ops import DeleteOp, Op, SetOp, to_pb
from .tokens import Token, TokenLike, token_text

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("coordinator_client")

# Receipts waiting for ForgetReceipts beyond this many are left to go with
# their lease, as the Go session's pruner does.
_PRUNE_QUEUE = 4096
_MAX_FORGET = 1000


class Client:
    """The caller API of a set of coordinator nodes, over gRPC.

    ``addresses`` are the nodes' API addresses (``host:port``, one or a list);
    calls go to the first until it fails, then to the next. ``tls`` is a
    ``TLS`` (True: TLS with the system's roots; None: plain TCP). ``timeout``
    bounds each call however many nodes it tries; ``rpc_timeout`` bounds one
    attempt on one node. ``interceptors`` are gRPC client interceptors put on
    every channel. A Client is safe to share between threads; close it when
    done.
    """

    def __init__(
        self,
        addresses: Union[str, Sequence[str]],
        *,
        tls: Union[_core.TLS, bool, None] = None,
        timeout: float = _core.DEFAULT_TIMEOUT,
        rpc_timeout: float = _core.DEFAULT_RPC_TIMEOUT,
        interceptors: Sequence[Any] = (),
        options: Sequence[Tuple[str, Any]] = (),
    ) -> None:
        addrs = _core.addresses_of(addresses)
        self._tls = _core.tls_of(tls)
        self.timeout = timeout
        self.rpc_timeout = rpc_timeout
        opts = list(_core.CHANNEL_OPTIONS) + list(options)
        if self._tls is not None:
            opts += self._tls.options()
        creds = self._tls.credentials() if self._tls is not None else None
        intercepts = list(interceptors)

        def make(addr: str) -> grpc.Channel:
            ch = grpc.secure_channel(addr, creds, opts) if creds is not None else grpc.insecure_channel(addr, opts)
            return grpc.intercept_channel(ch, *intercepts) if intercepts else ch

        self._nodes: _core.Nodes[grpc.Channel] = _core.Nodes(addrs, make, pb_grpc.CoordinatorStub)
        self._prune_lock = threading.Lock()
        self._prune_queue: "Optional[queue.Queue[Optional[Tuple[str, int, str]]]]" = None
        self._pruner: Optional[threading.Thread] = None

    @property
    def addresses(self) -> List[str]:
        """The nodes' addresses, in the order they are tried."""
        return list(self._nodes.addresses)

    @property
    def current_address(self) -> str:
        """The address calls go to now."""
        return self._nodes.current

    def stub(self) -> Any:
        """The generated gRPC stub of the current node, for calls this package
        does not wrap."""
        return self._nodes.pick()[1]

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops the receipt pruner and closes the channels. Close callers and
        sessions first: their leases are released by their own close."""
        with self._prune_lock:
            q, t = self._prune_queue, self._pruner
        if q is not None:
            q.put(None)
        if t is not None:
            t.join(timeout=self.rpc_timeout)
        for ch in self._nodes.close():
            ch.close()

    # -- calls ------------------------------------------------------------

    def _unary(self, method: str, req: Any, deadline: Deadline) -> Any:
        """Calls method, on the next node when one fails, until an answer
        comes or the deadline passes. For calls that are safe to repeat."""
        backoff = Backoff()
        while True:
            i, stub = self._nodes.pick()
            try:
                return getattr(stub, method)(req, timeout=deadline.attempt(self.rpc_timeout))
            except grpc.RpcError as rpc:
                err = from_rpc_error(rpc)
            if _core.node_failed(err):
                self._nodes.failed(i)
            outcome = _core.classify_call(err)
            if outcome is Outcome.FINAL:
                raise err
            delay = backoff.next()
            if outcome is Outcome.LATER and isinstance(err, ResourceExhausted) and err.retry_delay:
                delay = err.retry_delay
            left = deadline.left()
            if left is not None and left <= delay:
                raise err
            time.sleep(delay)

    def _register(
        self, name: str, ttl: Optional[float], if_absent: bool, wait_drained: bool, deadline: Deadline,
        on_end: Optional[Callable[["Caller", CoordinatorError], None]] = None,
    ) -> "Caller":
        ttl_s = None if ttl is None else int(math.ceil(ttl))
        r = self._unary("Register", _core.register_request(name, ttl_s, if_absent, wait_drained), deadline)
        reg = Registration(name, r.incarnation, r.lease_id, r.ttl_seconds)
        return Caller(self, reg, on_end)

    def register(
        self,
        name: str,
        ttl: Optional[float] = None,
        if_absent: bool = False,
        wait_drained: bool = False,
        *,
        timeout: Optional[float] = None,
    ) -> "Caller":
        """Registers name as a new incarnation and returns its Caller, whose
        lease is kept alive until ``close()`` or until the incarnation ends.

        ``ttl`` is the lease TTL in seconds (rounded up; None: the node's
        default, 10 s). A live incarnation of the name is superseded, unless
        ``if_absent`` (then ``NameHeld``). ``wait_drained`` returns only once
        every operation of the name's earlier incarnations is applied (G7).
        """
        return self._register(name, ttl, if_absent, wait_drained, Deadline(timeout or _core.REGISTER_TIMEOUT))

    def session(self, name: str, **kwargs: Any) -> "Session":
        """Registers name and returns a Session for it; see Session."""
        from .session import Session

        return Session(self, name, **kwargs)

    def wait_applied(self, token: TokenLike, timeout: Optional[float] = _core.DEFAULT_TIMEOUT) -> None:
        """Returns once token is applied to memcached (G8): a read of memcached
        then sees the batch's writes or newer ones. Raises ``Timeout`` when
        timeout seconds pass first (None: wait for as long as it takes)."""
        text = token_text(token)
        if timeout is not None:
            self._wait_applied(text, Deadline(timeout))
            return
        while True:
            try:
                self._wait_applied(text, Deadline(600.0))
                return
            except Timeout:
                continue

    def _wait_applied(self, text: str, deadline: Deadline) -> None:
        backoff = Backoff()
        while True:
            left = deadline.left() or 0.0
            if left <= 0:
                raise Timeout("token %s not applied in time" % text)
            # The node's own timeout answers first; the call's deadline is
            # for a node that does not answer at all.
            req = pb.WaitAppliedRequest(token=text, timeout_ms=max(1, int(left * 1000)))
            i, stub = self._nodes.pick()
            try:
                stub.WaitApplied(req, timeout=left + self.rpc_timeout)
                return
            except grpc.RpcError as rpc:
                err = from_rpc_error(rpc)
            if _core.node_failed(err):
                self._nodes.failed(i)
            if _core.classify_call(err) is Outcome.FINAL or isinstance(err, Timeout):
                raise err
            time.sleep(deadline.pause(backoff.next()))

    def status(self, *, timeout: Optional[float] = None) -> pb.StatusResponse:
        """The namespace's summary: leader, term, applied watermark, pending counts."""
        return self._unary("Status", pb.StatusRequest(), Deadline(timeout or self.timeout))

    def registrations(self, *, timeout: Optional[float] = None) -> List[pb.Registration]:
        """Every registration and draining incarnation, read page by page."""
        deadline = Deadline(timeout or self.timeout)
        out: List[pb.Registration] = []
        page = ""
        while True:
            r = self._unary("Registrations", pb.RegistrationsRequest(page_token=page), deadline)
            out.extend(r.registrations)
            page = r.next_page_token
            if not page:
                return out

    def resolve(self, err: OutcomeUnknown, *, timeout: Optional[float] = None) -> Token:
        """Settles a submission that raised OutcomeUnknown by sending its batch
        again under the same batch id and lease: the answer is the batch's
        token, whether the first send stored it or this one did (a batch id is
        stored at most once). Raises ``NotAccepted`` when the node voided the
        id, and ``OutcomeUnknown`` again when the incarnation has ended and
        nothing can tell."""
        if not err.resolvable:
            raise ValueError("the error names no submission to resolve: %s" % err)
        assert err.name and err.incarnation and err.lease_id and err.batch_id
        reg = Registration(err.name, err.incarnation, err.lease_id, 0)
        return self._submit(reg, to_pb(err.ops), err.ops, err.batch_id, Deadline(timeout or self.timeout), lost=True)

    def _submit(
        self, reg: Registration, ops_pb: List[pb.Op], ops: Sequence[Op], batch_id: str, deadline: Deadline,
        lost: bool = False, on_resend: Optional[Callable[[], None]] = None,
    ) -> Token:
        """Submits one batch under reg with batch_id and reg's lease, settling
        lost replies by resending the same batch id (on the next node when
        the one used went away) until an answer comes or the deadline passes.
        ``lost`` says a reply was lost before this call."""
        req = _core.submit_request(reg, batch_id, ops_pb)
        backoff = Backoff()
        last: Optional[CoordinatorError] = None
        while True:
            if deadline.passed():
                if last is None:
                    raise Timeout("batch %s of %r: no time left to send it" % (batch_id, reg.name))
                raise _core.gave_up(reg, batch_id, ops, last, lost)
            i, stub = self._nodes.pick()
            try:
                resp = stub.Submit(req, timeout=deadline.attempt(self.rpc_timeout))
                return Token.parse(resp.token)
            except grpc.RpcError as rpc:
                err = from_rpc_error(rpc)
            if _core.node_failed(err):
                self._nodes.failed(i)
            outcome = _core.classify_submit(err)
            if outcome is Outcome.FINAL:
                raise _core.after_lost(reg, batch_id, ops, err) if lost else err
            delay = backoff.next()
            if outcome is Outcome.LOST:
                lost = True
                if on_resend is not None:
                    on_resend()
            elif outcome is Outcome.LATER and isinstance(err, ResourceExhausted) and err.retry_delay:
                delay = err.retry_delay
            last = err
            time.sleep(deadline.pause(delay))

    # -- receipts -----------------------------------------------------------

    def _forget(self, name: str, incarnation: int, batch_id: str) -> None:
        """Queues the receipt of an answered submission for deletion: a receipt
        is needed only while its reply is outstanding. A receipt that finds no
        room is left to go with its lease."""
        with self._prune_lock:
            if self._prune_queue is None:
                self._prune_queue = queue.Queue(_PRUNE_QUEUE)
                self._pruner = threading.Thread(
                    target=self._prune, args=(self._prune_queue,), name="coordinator-receipts", daemon=True,
                )
                self._pruner.start()
            q = self._prune_queue
        try:
            q.put_nowait((name, incarnation, batch_id))
        except queue.Full:
            pass

    def _prune(self, q: "queue.Queue[Optional[Tuple[str, int, str]]]") -> None:
        """Deletes queued receipts, many per ForgetReceipts call, until close."""
        while True:
            first = q.get()
            if first is None:
                return
            by: Dict[Tuple[str, int], List[str]] = {(first[0], first[1]): [first[2]]}
            stop = False
            for _ in range(_MAX_FORGET - 1):
                try:
                    r = q.get_nowait()
                except queue.Empty:
                    break
                if r is None:
                    stop = True
                    break
                by.setdefault((r[0], r[1]), []).append(r[2])
            for (name, inc), ids in by.items():
                try:
                    self._unary("ForgetReceipts", pb.ForgetReceiptsRequest(name=name, incarnation=inc, batch_ids=ids),
                                Deadline(self.rpc_timeout))
                except (CoordinatorError, Closed):
                    pass  # the receipts go with the lease
            if stop:
                return


class Caller:
    """One incarnation of a name, registered through a node's API.

    A background thread keeps its lease alive with a KeepAlive stream, opened
    again on the next node when the one it used fails, with the same
    incarnation and lease; the incarnation ends when the lease is lost
    (``Expired``), another registration of the name supersedes it
    (``Superseded``) or ``close()`` unregisters it. Safe to share between
    threads.
    """

    def __init__(
        self, client: Client, reg: Registration,
        on_end: Optional[Callable[["Caller", CoordinatorError], None]] = None,
    ) -> None:
        self._client = client
        self._reg = reg
        self._on_end = on_end
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stream: Any = None
        self._error: Optional[CoordinatorError] = None
        self.done = threading.Event()
        """Set when the incarnation has ended, or the caller was closed; ``error`` says why."""
        self._thread = threading.Thread(target=self._keep_alive, name="coordinator-keepalive-%s" % reg.name,
                                        daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self._reg.name

    @property
    def incarnation(self) -> int:
        """The incarnation token."""
        return self._reg.incarnation

    @property
    def lease_id(self) -> int:
        """The etcd lease the registration lives under."""
        return self._reg.lease_id

    @property
    def ttl(self) -> int:
        """The lease's TTL in seconds."""
        return self._reg.ttl

    @property
    def error(self) -> Optional[CoordinatorError]:
        """None while the incarnation lives, then why it ended."""
        with self._lock:
            return self._error

    def _end(self, err: CoordinatorError) -> None:
        with self._lock:
            if self._error is not None:
                return
            self._error = err
        self.done.set()
        if self._on_end is not None and not isinstance(err, Closed):
            self._on_end(self, err)

    def _keep_alive(self) -> None:
        """Holds a KeepAlive stream open until close or the end of the
        incarnation. A stream that breaks, or goes silent for two thirds of
        the TTL, is opened again on the next node: a stream's end leaves the
        lease to run out by its TTL, which leaves the time to."""
        req = pb.KeepAliveRequest(name=self._reg.name, incarnation=self._reg.incarnation, lease_id=self._reg.lease_id)
        silent_after = max(self._reg.ttl, 1) * 2.0 / 3.0
        backoff = Backoff(0.05, 1.0)
        nodes = self._client._nodes
        while not self._stop.is_set():
            try:
                i, stub = nodes.pick()
            except Closed:
                return
            stream = stub.KeepAlive(req)
            with self._lock:
                self._stream = stream
            if self._stop.is_set():
                stream.cancel()
            watchdog: List[Optional[threading.Timer]] = [None]

            def arm() -> None:
                if watchdog[0] is not None:
                    watchdog[0].cancel()
                t = threading.Timer(silent_after, stream.cancel)
                t.daemon = True
                t.start()
                watchdog[0] = t

            arm()
            err: CoordinatorError
            try:
                for _ in stream:
                    backoff.reset()
                    arm()
                err = Unavailable("keep-alive stream ended without a status", reason="")
            except grpc.RpcError as rpc:
                err = from_rpc_error(rpc)
            finally:
                if watchdog[0] is not None:
                    watchdog[0].cancel()
            if self._stop.is_set():
                return
            if _core.classify_call(err) is Outcome.FINAL:
                log.info("%s incarnation %d ended: %s", self._reg.name, self._reg.incarnation, err)
                self._end(err)
                return
            # A broken stream, a silent one (cancelled above) or a stopping
            # node: the next node, after a pause.
            nodes.failed(i)
            self._stop.wait(backoff.next())

    def _halt(self) -> None:
        """Stops the keep-alive thread."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def submit(self, ops: Sequence[Op], batch_id: Optional[str] = None, *,
               timeout: Optional[float] = None) -> Token:
        """Submits ops as one batch, accepted or refused as a whole, and
        returns its token.

        The batch goes with a batch id (``batch_id``, or a new one) and the
        incarnation's lease, so that a lost reply is settled by sending the
        same batch id again, on the next node when one went away: the answer
        is the first acceptance's token, and the batch is stored at most once.
        ``OutcomeUnknown`` is raised only when nothing could settle it (see
        ``Client.resolve``). Refusals raise their reason's error: ``Superseded``
        and ``Expired`` end this incarnation, ``Invalid`` wrote nothing.

        The receipt of a batch id made here is deleted once the answer is in
        (ForgetReceipts, in the background); that of a ``batch_id`` of your
        own is kept as long as the lease lives, so that sending it again
        returns the same token even after the batch was applied.
        """
        with self._lock:
            if self._error is not None and isinstance(self._error, Closed):
                raise self._error
        ops_pb = to_pb(ops)
        bid = batch_id or _core.new_batch_id()
        tok = self._client._submit(self._reg, ops_pb, ops, bid, Deadline(timeout or self._client.timeout))
        if batch_id is None:
            self._client._forget(self._reg.name, self._reg.incarnation, bid)
        return tok

    def set(self, key: str, value: Union[bytes, str], expiration: int = 0, *,
            timeout: Optional[float] = None) -> Token:
        """Submits a set of key to value."""
        return self.submit([SetOp(key, value, expiration)], timeout=timeout)

    def delete(self, key: str, *, timeout: Optional[float] = None) -> Token:
        """Submits a delete of key."""
        return self.submit([DeleteOp(key)], timeout=timeout)

    def wait_applied(self, token: TokenLike, timeout: Optional[float] = _core.DEFAULT_TIMEOUT) -> None:
        """Client.wait_applied."""
        self._client.wait_applied(token, timeout)

    def close(self, *, timeout: Optional[float] = None) -> None:
        """Stops keeping the lease alive and unregisters, which revokes it: the
        name is free at once. Accepted operations are still applied (G4)."""
        self._end(Closed("caller of %r closed" % self._reg.name))
        self._halt()
        self._unregister(Deadline(timeout or self._client.timeout))

    def _unregister(self, deadline: Deadline) -> None:
        req = pb.UnregisterRequest(name=self._reg.name, incarnation=self._reg.incarnation, lease_id=self._reg.lease_id)
        try:
            self._client._unary("Unregister", req, deadline)
        except (Superseded, Expired):
            pass  # the incarnation had ended already

    def __enter__(self) -> "Caller":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Client", "Caller"]
