"""The asyncio client, on ``grpc.aio``: ``AsyncClient``, ``AsyncCaller`` and
``AsyncSession``, with the semantics of their thread-based counterparts
(client.py, session.py). Use them from one event loop."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import grpc
import grpc.aio

from . import _core
from ._core import Action, Backoff, Deadline, Outcome, Registration, SessionStats
from ._pb import coordinator_pb2 as pb
from ._pb import coordinator_pb2_grpc as pb_grpc
from .errors import (
    Closed,
    CoordinatorError,
    Expired,
    Invalid,
    NameHeld,
    NotAccepted,
    OutcomeUnknown,
    PermissionDenied,
    ResourceExhausted,
    SessionClosed,
    SessionSuperseded,
    Superseded,
    Timeout,
    Unavailable,
    from_rpc_error,
)
from .ops import DeleteOp, Op, SetOp, to_pb
from .session import held_by, superseded_error
from .tokens import Token, TokenLike, token_text

log = logging.getLogger("coordinator_client")

_PRUNE_QUEUE = 4096
_MAX_FORGET = 1000


class AsyncClient:
    """The caller API of a set of coordinator nodes, for asyncio programs;
    see Client for the arguments. ``interceptors`` are ``grpc.aio`` client
    interceptors. Close it with ``await client.close()``."""

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
        intercepts = list(interceptors) or None

        def make(addr: str) -> grpc.aio.Channel:
            if creds is not None:
                return grpc.aio.secure_channel(addr, creds, opts, interceptors=intercepts)
            return grpc.aio.insecure_channel(addr, opts, interceptors=intercepts)

        self._nodes: _core.Nodes[grpc.aio.Channel] = _core.Nodes(addrs, make, pb_grpc.CoordinatorStub)
        self._prune_queue: "Optional[asyncio.Queue[Tuple[str, int, str]]]" = None
        self._pruner: "Optional[asyncio.Task[None]]" = None
        self._tasks: "Set[asyncio.Task[Any]]" = set()

    @property
    def addresses(self) -> List[str]:
        return list(self._nodes.addresses)

    @property
    def current_address(self) -> str:
        return self._nodes.current

    def stub(self) -> Any:
        """The generated ``grpc.aio`` stub of the current node."""
        return self._nodes.pick()[1]

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Any, name: str) -> "asyncio.Task[Any]":
        """Runs coro as a task the client holds on to until it ends."""
        t = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def close(self) -> None:
        """Stops the receipt pruner and the tasks of callers and sessions
        not closed (their leases then run out by their TTL), and closes the
        channels. Close callers and sessions first to release their leases."""
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        if self._pruner is not None:
            tasks.append(self._pruner)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in self._nodes.close():
            await ch.close()

    async def _unary(self, method: str, req: Any, deadline: Deadline) -> Any:
        backoff = Backoff()
        while True:
            i, stub = self._nodes.pick()
            try:
                return await getattr(stub, method)(req, timeout=deadline.attempt(self.rpc_timeout))
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
            await asyncio.sleep(delay)

    async def _register(
        self, name: str, ttl: Optional[float], if_absent: bool, wait_drained: bool, deadline: Deadline,
        on_end: Optional[Callable[["AsyncCaller", CoordinatorError], None]] = None,
    ) -> "AsyncCaller":
        ttl_s = None if ttl is None else int(math.ceil(ttl))
        r = await self._unary("Register", _core.register_request(name, ttl_s, if_absent, wait_drained), deadline)
        return AsyncCaller(self, Registration(name, r.incarnation, r.lease_id, r.ttl_seconds), on_end)

    async def register(
        self, name: str, ttl: Optional[float] = None, if_absent: bool = False, wait_drained: bool = False, *,
        timeout: Optional[float] = None,
    ) -> "AsyncCaller":
        """Client.register."""
        return await self._register(name, ttl, if_absent, wait_drained, Deadline(timeout or _core.REGISTER_TIMEOUT))

    async def session(self, name: str, **kwargs: Any) -> "AsyncSession":
        """Registers name and returns an AsyncSession for it."""
        return await AsyncSession.create(self, name, **kwargs)

    async def wait_applied(self, token: TokenLike, timeout: Optional[float] = _core.DEFAULT_TIMEOUT) -> None:
        """Client.wait_applied."""
        text = token_text(token)
        if timeout is not None:
            await self._wait_applied(text, Deadline(timeout))
            return
        while True:
            try:
                await self._wait_applied(text, Deadline(600.0))
                return
            except Timeout:
                continue

    async def _wait_applied(self, text: str, deadline: Deadline) -> None:
        backoff = Backoff()
        while True:
            left = deadline.left() or 0.0
            if left <= 0:
                raise Timeout("token %s not applied in time" % text)
            req = pb.WaitAppliedRequest(token=text, timeout_ms=max(1, int(left * 1000)))
            i, stub = self._nodes.pick()
            try:
                await stub.WaitApplied(req, timeout=left + self.rpc_timeout)
                return
            except grpc.RpcError as rpc:
                err = from_rpc_error(rpc)
            if _core.node_failed(err):
                self._nodes.failed(i)
            if _core.classify_call(err) is Outcome.FINAL or isinstance(err, Timeout):
                raise err
            await asyncio.sleep(deadline.pause(backoff.next()))

    async def status(self, *, timeout: Optional[float] = None) -> pb.StatusResponse:
        """Client.status."""
        return await self._unary("Status", pb.StatusRequest(), Deadline(timeout or self.timeout))

    async def registrations(self, *, timeout: Optional[float] = None) -> List[pb.Registration]:
        """Client.registrations."""
        deadline = Deadline(timeout or self.timeout)
        out: List[pb.Registration] = []
        page = ""
        while True:
            r = await self._unary("Registrations", pb.RegistrationsRequest(page_token=page), deadline)
            out.extend(r.registrations)
            page = r.next_page_token
            if not page:
                return out

    async def resolve(self, err: OutcomeUnknown, *, timeout: Optional[float] = None) -> Token:
        """Client.resolve."""
        if not err.resolvable:
            raise ValueError("the error names no submission to resolve: %s" % err)
        assert err.name and err.incarnation and err.lease_id and err.batch_id
        reg = Registration(err.name, err.incarnation, err.lease_id, 0)
        return await self._submit(reg, to_pb(err.ops), err.ops, err.batch_id, Deadline(timeout or self.timeout),
                                  lost=True)

    async def _submit(
        self, reg: Registration, ops_pb: List[pb.Op], ops: Sequence[Op], batch_id: str, deadline: Deadline,
        lost: bool = False, on_resend: Optional[Callable[[], None]] = None,
    ) -> Token:
        """Client._submit."""
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
                resp = await stub.Submit(req, timeout=deadline.attempt(self.rpc_timeout))
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
            await asyncio.sleep(deadline.pause(delay))

    def _forget(self, name: str, incarnation: int, batch_id: str) -> None:
        """Client._forget."""
        if self._prune_queue is None:
            self._prune_queue = asyncio.Queue(_PRUNE_QUEUE)
            self._pruner = asyncio.get_running_loop().create_task(self._prune(self._prune_queue),
                                                                  name="coordinator-receipts")
        try:
            self._prune_queue.put_nowait((name, incarnation, batch_id))
        except asyncio.QueueFull:
            pass

    async def _prune(self, q: "asyncio.Queue[Tuple[str, int, str]]") -> None:
        while True:
            first = await q.get()
            by: Dict[Tuple[str, int], List[str]] = {(first[0], first[1]): [first[2]]}
            for _ in range(_MAX_FORGET - 1):
                try:
                    r = q.get_nowait()
                except asyncio.QueueEmpty:
                    break
                by.setdefault((r[0], r[1]), []).append(r[2])
            for (name, inc), ids in by.items():
                try:
                    await self._unary("ForgetReceipts",
                                      pb.ForgetReceiptsRequest(name=name, incarnation=inc, batch_ids=ids),
                                      Deadline(self.rpc_timeout))
                except (CoordinatorError, Closed):
                    pass


class AsyncCaller:
    """One incarnation of a name, for asyncio programs; see Caller. A task of
    the event loop keeps its lease alive."""

    def __init__(
        self, client: AsyncClient, reg: Registration,
        on_end: Optional[Callable[["AsyncCaller", CoordinatorError], None]] = None,
    ) -> None:
        self._client = client
        self._reg = reg
        self._on_end = on_end
        self._error: Optional[CoordinatorError] = None
        self._stopping = False
        self.done = asyncio.Event()
        """Set when the incarnation has ended, or the caller was closed."""
        self._task = client._spawn(self._keep_alive(), "coordinator-keepalive-%s" % reg.name)

    @property
    def name(self) -> str:
        return self._reg.name

    @property
    def incarnation(self) -> int:
        return self._reg.incarnation

    @property
    def lease_id(self) -> int:
        return self._reg.lease_id

    @property
    def ttl(self) -> int:
        return self._reg.ttl

    @property
    def error(self) -> Optional[CoordinatorError]:
        return self._error

    def _end(self, err: CoordinatorError) -> None:
        if self._error is not None:
            return
        self._error = err
        self.done.set()
        if self._on_end is not None and not isinstance(err, Closed):
            self._on_end(self, err)

    async def _keep_alive(self) -> None:
        """Caller._keep_alive, with the silence watchdog as a read timeout."""
        req = pb.KeepAliveRequest(name=self._reg.name, incarnation=self._reg.incarnation, lease_id=self._reg.lease_id)
        silent_after = max(self._reg.ttl, 1) * 2.0 / 3.0
        backoff = Backoff(0.05, 1.0)
        nodes = self._client._nodes
        while not self._stopping:
            try:
                i, stub = nodes.pick()
            except Closed:
                return
            call = stub.KeepAlive(req)
            err: CoordinatorError
            try:
                while True:
                    resp = await asyncio.wait_for(call.read(), silent_after)
                    if resp is grpc.aio.EOF:
                        err = Unavailable("keep-alive stream ended without a status", reason="")
                        break
                    backoff.reset()
            except asyncio.TimeoutError:
                err = Unavailable("keep-alive stream silent for %.1fs" % silent_after, reason="")
            except grpc.RpcError as rpc:
                err = from_rpc_error(rpc)
            finally:
                call.cancel()
            if self._stopping:
                return
            if _core.classify_call(err) is Outcome.FINAL:
                log.info("%s incarnation %d ended: %s", self._reg.name, self._reg.incarnation, err)
                self._end(err)
                return
            nodes.failed(i)
            await asyncio.sleep(backoff.next())

    async def _halt(self) -> None:
        self._stopping = True
        if self._task is not asyncio.current_task():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, ops: Sequence[Op], batch_id: Optional[str] = None, *,
                     timeout: Optional[float] = None) -> Token:
        """Caller.submit."""
        if isinstance(self._error, Closed):
            raise self._error
        ops_pb = to_pb(ops)
        bid = batch_id or _core.new_batch_id()
        tok = await self._client._submit(self._reg, ops_pb, ops, bid, Deadline(timeout or self._client.timeout))
        if batch_id is None:
            self._client._forget(self._reg.name, self._reg.incarnation, bid)
        return tok

    async def set(self, key: str, value: Union[bytes, str], expiration: int = 0, *,
                  timeout: Optional[float] = None) -> Token:
        return await self.submit([SetOp(key, value, expiration)], timeout=timeout)

    async def delete(self, key: str, *, timeout: Optional[float] = None) -> Token:
        return await self.submit([DeleteOp(key)], timeout=timeout)

    async def wait_applied(self, token: TokenLike, timeout: Optional[float] = _core.DEFAULT_TIMEOUT) -> None:
        await self._client.wait_applied(token, timeout)

    async def close(self, *, timeout: Optional[float] = None) -> None:
        """Caller.close."""
        self._end(Closed("caller of %r closed" % self._reg.name))
        await self._halt()
        await self._unregister(Deadline(timeout or self._client.timeout))

    async def _unregister(self, deadline: Deadline) -> None:
        req = pb.UnregisterRequest(name=self._reg.name, incarnation=self._reg.incarnation, lease_id=self._reg.lease_id)
        try:
            await self._client._unary("Unregister", req, deadline)
        except (Superseded, Expired):
            pass

    async def __aenter__(self) -> "AsyncCaller":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _AsyncRenewal:
    def __init__(self, old: AsyncCaller) -> None:
        self.old = old
        self.done = asyncio.Event()


class AsyncSession:
    """Session for asyncio programs, shared by all of a loop's tasks, with the
    same G9 semantics; make one with ``await client.session(name)``."""

    def __init__(self, client: AsyncClient, name: str, *, ttl: Optional[float] = None,
                 wait_drained: bool = True, timeout: Optional[float] = None) -> None:
        self._client = client
        self._name = name
        self._ttl = ttl
        self._wait_drained = wait_drained
        self._timeout = timeout or client.timeout
        self._stats = SessionStats()
        self._final: Optional[CoordinatorError] = None
        self._renewing: Optional[_AsyncRenewal] = None
        self._cur: Optional[AsyncCaller] = None
        self.done = asyncio.Event()

    @classmethod
    async def create(cls, client: AsyncClient, name: str, *, ttl: Optional[float] = None, if_absent: bool = False,
                     wait_drained: bool = True, timeout: Optional[float] = None) -> "AsyncSession":
        """Registers name and returns its session; see Session for the arguments."""
        s = cls(client, name, ttl=ttl, wait_drained=wait_drained, timeout=timeout)
        s._cur = await client._register(name, ttl, if_absent, wait_drained, Deadline(_core.REGISTER_TIMEOUT),
                                        on_end=s._ended)
        s._stats.registrations = 1
        log.info("session %r registered: incarnation %d", name, s._cur.incarnation)
        return s

    @property
    def name(self) -> str:
        return self._name

    def _current(self) -> AsyncCaller:
        assert self._cur is not None, "use AsyncSession.create"
        return self._cur

    @property
    def incarnation(self) -> int:
        return self._current().incarnation

    @property
    def lease_id(self) -> int:
        return self._current().lease_id

    @property
    def renewals(self) -> int:
        return self._stats.renewals

    def stats(self) -> SessionStats:
        return dataclasses.replace(self._stats)

    @property
    def error(self) -> Optional[CoordinatorError]:
        return self._final

    def _raise_final(self) -> None:
        assert self._final is not None
        raise copy.copy(self._final)

    def _fail(self, err: CoordinatorError) -> None:
        if self._final is not None:
            return
        self._final = err
        if self._renewing is not None:
            self._renewing.done.set()
        self.done.set()
        if not isinstance(err, SessionClosed):
            log.warning("session %r failed: %s", self._name, err)

    async def _acquire(self, deadline: Deadline) -> AsyncCaller:
        waited = False
        while True:
            if self._final is not None:
                self._raise_final()
            r, cur = self._renewing, self._current()
            if r is None:
                return cur
            if not waited:
                waited = True
                self._stats.waits += 1
            try:
                await asyncio.wait_for(r.done.wait(), deadline.left())
            except asyncio.TimeoutError:
                raise Timeout("%r: the re-registration did not end in time" % self._name) from None

    def _start_renew(self, cause: CoordinatorError) -> None:
        old = self._current()
        r = _AsyncRenewal(old)
        self._renewing = r
        log.warning("session %r lost incarnation %d: %s", self._name, old.incarnation, cause)
        self._client._spawn(self._renew(r), "coordinator-renew-%s" % self._name)

    def _ended(self, caller: AsyncCaller, err: CoordinatorError) -> None:
        if self._final is not None or self._renewing is not None or self._cur is not caller:
            return
        if isinstance(err, Expired):
            self._start_renew(err)
        elif isinstance(err, Superseded):
            self._fail(superseded_error(self._name, caller.incarnation, err.current))
        else:
            self._fail(err)

    def _compare(self, cookie: AsyncCaller) -> Action:
        return _core.compare_cookie(cookie.incarnation, self._current().incarnation, self._renewing is not None,
                                    self._final is not None)

    def _refused_expired(self, cookie: AsyncCaller, err: Expired) -> None:
        self._stats.expired += 1
        a = self._compare(cookie)
        if a is Action.FAIL:
            self._raise_final()
        elif a is Action.RETRY:
            self._stats.retried += 1
        elif a is Action.RENEW:
            self._start_renew(err)

    def _refused_superseded(self, cookie: AsyncCaller, err: Superseded) -> None:
        a = self._compare(cookie)
        if a is Action.FAIL:
            self._raise_final()
        if a is Action.RENEW:
            self._fail(superseded_error(self._name, cookie.incarnation, err.current))
            self._raise_final()
        self._stats.expired += 1
        if a is Action.RETRY:
            self._stats.retried += 1

    async def _renew(self, r: _AsyncRenewal) -> None:
        """Session._renew."""
        old = r.old
        await old._halt()
        backoff = Backoff(0.02, 2.0)
        if_absent = True
        while True:
            if self._final is not None:
                r.done.set()
                return
            try:
                await old._unregister(Deadline(self._client.rpc_timeout))
            except CoordinatorError:
                pass
            try:
                new = await self._client._register(self._name, self._ttl, if_absent, self._wait_drained,
                                                   Deadline(_core.REGISTER_TIMEOUT), on_end=self._ended)
            except NameHeld:
                try:
                    who, by = held_by(await self._client.registrations(), self._name, old.incarnation)
                except CoordinatorError:
                    who, by = "unknown", None
                if who == "other":
                    self._fail(superseded_error(self._name, old.incarnation, by))
                    return
                if_absent = who != "self"
            except (PermissionDenied, Invalid) as e:
                self._fail(e)
                return
            except CoordinatorError as e:
                log.info("session %r: re-registration failed, trying again: %s", self._name, e)
            else:
                if self._final is not None:
                    r.done.set()
                    await new.close()
                    return
                self._cur = new
                self._renewing = None
                self._stats.renewals += 1
                self._stats.registrations += 1
                r.done.set()
                log.warning("session %r re-registered: incarnation %d after %d", self._name, new.incarnation,
                            old.incarnation)
                return
            await asyncio.sleep(backoff.next())

    def _count_resend(self) -> None:
        self._stats.resends += 1

    async def submit(self, ops: Sequence[Op], batch_id: Optional[str] = None, *,
                     timeout: Optional[float] = None) -> Token:
        """Session.submit."""
        deadline = Deadline(timeout or self._timeout)
        ops_pb = to_pb(ops)
        own_id = batch_id is not None
        bid = batch_id or _core.new_batch_id()
        backoff = Backoff()
        while True:
            caller = await self._acquire(deadline)
            try:
                tok = await self._client._submit(caller._reg, ops_pb, ops, bid, deadline,
                                                 on_resend=self._count_resend)
            except Expired as e:
                self._refused_expired(caller, e)
                continue
            except SessionSuperseded:
                raise
            except Superseded as e:
                self._refused_superseded(caller, e)
                continue
            except NotAccepted:
                if own_id or deadline.passed():
                    raise
                self._stats.not_accepted += 1
                bid = _core.new_batch_id()
                await asyncio.sleep(deadline.pause(backoff.next()))
                continue
            self._stats.accepted += 1
            if not own_id:
                self._client._forget(self._name, caller.incarnation, bid)
            return tok

    async def set(self, key: str, value: Union[bytes, str], expiration: int = 0, *,
                  timeout: Optional[float] = None) -> Token:
        return await self.submit([SetOp(key, value, expiration)], timeout=timeout)

    async def delete(self, key: str, *, timeout: Optional[float] = None) -> Token:
        return await self.submit([DeleteOp(key)], timeout=timeout)

    async def wait_applied(self, token: TokenLike, timeout: Optional[float] = _core.DEFAULT_TIMEOUT) -> None:
        await self._client.wait_applied(token, timeout)

    async def resolve(self, err: OutcomeUnknown, *, timeout: Optional[float] = None) -> Token:
        return await self._client.resolve(err, timeout=timeout)

    async def close(self, *, timeout: Optional[float] = None) -> None:
        """Session.close."""
        self._fail(SessionClosed("session of %r closed" % self._name))
        await self._current().close(timeout=timeout)

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["AsyncCaller", "AsyncClient", "AsyncSession"]
