"""Sessions: a name's registration for a whole process, kept through lost
leases with one re-registration each (G9), shared by all of its threads."""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

from . import _core
from ._core import Action, Backoff, Deadline, SessionStats
from .errors import (
    CoordinatorError,
    Expired,
    Invalid,
    NameHeld,
    NotAccepted,
    OutcomeUnknown,
    PermissionDenied,
    SessionClosed,
    SessionSuperseded,
    Superseded,
    Timeout,
)
from .ops import DeleteOp, Op, SetOp, to_pb
from .tokens import Token, TokenLike

if TYPE_CHECKING:
    from .client import Caller, Client

log = logging.getLogger("coordinator_client")


class _Renewal:
    """The one re-registration of a name whose incarnation ``old`` is dead."""

    def __init__(self, old: "Caller") -> None:
        self.old = old
        self.done = threading.Event()
        """Set once the new incarnation is current, or the session has failed."""


def superseded_error(name: str, inc: int, by: Optional[int]) -> SessionSuperseded:
    """The final error of a session whose incarnation inc was replaced by
    incarnation by (None: unknown) of another process."""
    if by:
        msg = "%r incarnation %d replaced by incarnation %d of another process" % (name, inc, by)
        return SessionSuperseded(msg, metadata={"current": str(by), "incarnation": str(inc), "name": name})
    return SessionSuperseded("%r incarnation %d: the name is held by another process" % (name, inc),
                             metadata={"incarnation": str(inc), "name": name})


def held_by(regs: Sequence[Any], name: str, old: int) -> Tuple[str, Optional[int]]:
    """Who holds name, from the registrations view, after a re-registration
    found it held: ``("free", None)`` when nobody does (it was released
    meanwhile), ``("old", inc)`` when it is the dead incarnation itself (its
    lease outlived it briefly), ``("self", inc)`` when this very process does
    (a registration whose reply was lost), else ``("other", inc)``."""
    host, pid = _core.holder()
    for r in regs:
        if r.name != name or r.status != "active":
            continue
        if r.incarnation == old:
            return "old", r.incarnation
        if r.holder_pid == pid and r.holder_host == host:
            return "self", r.incarnation
        return "other", r.incarnation
    return "free", None


class Session:
    """A name's registration for the whole process, shared by all of its
    threads, with G9 exactly as the Go session:

    - when the lease is lost, the name is registered again once, however many
      calls fail at that moment: each failed call compares the incarnation it
      was sent under (its cookie) with the current one, under the session's
      lock; if they differ the call is resent at once under the current one,
      and only a call whose cookie is current starts the re-registration;
    - calls made while a re-registration is under way wait for it rather than
      go out under the dead incarnation (the keep-alive stream tells the
      session of a lost lease as soon as the node sees it);
    - a session superseded by another live process does not register over it:
      every waiting and later call raises ``SessionSuperseded``;
    - a lost reply is settled by resending the same batch id with the lease,
      and ``OutcomeUnknown`` is raised only when nothing can tell (it carries
      what ``resolve()`` needs).

    ``ttl`` is each incarnation's lease TTL in seconds (None: the node's
    default). ``if_absent`` makes the first registration fail with
    ``NameHeld`` rather than supersede a live holder; re-registrations never
    supersede. ``wait_drained`` (the default) makes every registration wait
    until the name's earlier incarnations' operations are applied (G7), so
    that nothing is sent under a new incarnation before them. ``timeout``
    bounds each call, waits for a re-registration included.

    Use one session per name per process. Close it to release the lease.
    """

    def __init__(
        self,
        client: "Client",
        name: str,
        *,
        ttl: Optional[float] = None,
        if_absent: bool = False,
        wait_drained: bool = True,
        timeout: Optional[float] = None,
    ) -> None:
        self._client = client
        self._name = name
        self._ttl = ttl
        self._wait_drained = wait_drained
        self._timeout = timeout or client.timeout
        self._lock = threading.Lock()
        self._stats = SessionStats()
        self._final: Optional[CoordinatorError] = None
        self._renewing: Optional[_Renewal] = None
        self._threads: List[threading.Thread] = []
        self.done = threading.Event()
        """Set when the session has ended for good (superseded, or closed); ``error`` says why."""
        self._cur: "Caller" = client._register(
            name, ttl, if_absent, wait_drained, Deadline(_core.REGISTER_TIMEOUT), on_end=self._ended,
        )
        self._stats.registrations = 1
        log.info("session %r registered: incarnation %d", name, self._cur.incarnation)

    # -- state ------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def incarnation(self) -> int:
        """The current incarnation: the cookie a call starts with. While a
        re-registration is under way it is the dead one."""
        with self._lock:
            return self._cur.incarnation

    @property
    def lease_id(self) -> int:
        """The current incarnation's lease."""
        with self._lock:
            return self._cur.lease_id

    @property
    def renewals(self) -> int:
        """Re-registrations made after a lost lease."""
        with self._lock:
            return self._stats.renewals

    def stats(self) -> SessionStats:
        """A snapshot of the session's counters."""
        with self._lock:
            return dataclasses.replace(self._stats)

    @property
    def error(self) -> Optional[CoordinatorError]:
        """None while the session works, then its final error
        (``SessionSuperseded`` or ``SessionClosed``)."""
        with self._lock:
            return self._final

    def _raise_final(self) -> None:
        """Raises the final error: a copy each time, since many threads may
        raise it at once and each sets its own traceback."""
        assert self._final is not None
        raise copy.copy(self._final)

    def _fail_locked(self, err: CoordinatorError) -> None:
        """Ends the session with err. self._lock is held."""
        if self._final is not None:
            return
        self._final = err
        if self._renewing is not None:
            self._renewing.done.set()
        self.done.set()
        if not isinstance(err, SessionClosed):
            log.warning("session %r failed: %s", self._name, err)

    # -- G9 -----------------------------------------------------------------

    def _acquire(self, deadline: Deadline) -> "Caller":
        """The caller to send under, after waiting for a re-registration under way."""
        waited = False
        while True:
            with self._lock:
                if self._final is not None:
                    self._raise_final()
                r, cur = self._renewing, self._cur
                if r is None:
                    return cur
                if not waited:
                    waited = True
                    self._stats.waits += 1
            if not r.done.wait(deadline.left()):
                raise Timeout("%r: the re-registration did not end in time" % self._name)

    def _start_renew_locked(self, cause: CoordinatorError) -> None:
        """Marks the current incarnation dead and starts the one
        re-registration. self._lock is held."""
        r = _Renewal(self._cur)
        self._renewing = r
        log.warning("session %r lost incarnation %d: %s", self._name, self._cur.incarnation, cause)
        t = threading.Thread(target=self._renew, args=(r,), name="coordinator-renew-%s" % self._name, daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _ended(self, caller: "Caller", err: CoordinatorError) -> None:
        """What the keep-alive stream of caller learnt: its incarnation ended.
        It counts only while caller is the live current incarnation."""
        with self._lock:
            # getattr: the first incarnation's stream may end before
            # __init__ has stored it; a call's refusal then tells the same.
            cur = getattr(self, "_cur", None)
            if self._final is not None or self._renewing is not None or cur is not caller:
                return
            if isinstance(err, Expired):
                self._start_renew_locked(err)
            elif isinstance(err, Superseded):
                self._fail_locked(superseded_error(self._name, caller.incarnation, err.current))
            else:
                self._fail_locked(err)

    def _refused_expired(self, cookie: "Caller", err: Expired) -> None:
        """A call sent under cookie was refused as expired: the compare."""
        with self._lock:
            self._stats.expired += 1
            a = _core.compare_cookie(cookie.incarnation, self._cur.incarnation, self._renewing is not None,
                                     self._final is not None)
            if a is Action.FAIL:
                self._raise_final()
            elif a is Action.RETRY:
                self._stats.retried += 1
            elif a is Action.RENEW:
                self._start_renew_locked(err)

    def _refused_superseded(self, cookie: "Caller", err: Superseded) -> None:
        """A call sent under cookie was refused as superseded. A newer
        incarnation of this session (a stale cookie, or a re-registration
        under way) means resend; otherwise another process holds the name
        and the session fails."""
        with self._lock:
            a = _core.compare_cookie(cookie.incarnation, self._cur.incarnation, self._renewing is not None,
                                     self._final is not None)
            if a is Action.FAIL:
                self._raise_final()
            if a is Action.RENEW:
                self._fail_locked(superseded_error(self._name, cookie.incarnation, err.current))
                self._raise_final()
            self._stats.expired += 1
            if a is Action.RETRY:
                self._stats.retried += 1

    def _renew(self, r: _Renewal) -> None:
        """Registers the name again until it works, another process turns out
        to hold it, or the session is closed. It never supersedes anyone but
        a registration of its own whose reply was lost."""
        old = r.old
        old._halt()
        backoff = Backoff(0.02, 2.0)
        if_absent = True
        while True:
            with self._lock:
                if self._final is not None:
                    r.done.set()
                    return
            # The dead incarnation's registration, if it is still there,
            # would make the name look held.
            try:
                old._unregister(Deadline(self._client.rpc_timeout))
            except CoordinatorError:
                pass
            try:
                new = self._client._register(self._name, self._ttl, if_absent, self._wait_drained,
                                             Deadline(_core.REGISTER_TIMEOUT), on_end=self._ended)
            except NameHeld:
                try:
                    who, by = held_by(self._client.registrations(), self._name, old.incarnation)
                except CoordinatorError:
                    who, by = "unknown", None
                if who == "other":
                    with self._lock:
                        self._fail_locked(superseded_error(self._name, old.incarnation, by))
                    return
                if_absent = who != "self"
            except (PermissionDenied, Invalid) as e:
                with self._lock:
                    self._fail_locked(e)
                return
            except CoordinatorError as e:
                log.info("session %r: re-registration failed, trying again: %s", self._name, e)
            else:
                with self._lock:
                    closed = self._final is not None
                    if not closed:
                        self._cur = new
                        self._renewing = None
                        self._stats.renewals += 1
                        self._stats.registrations += 1
                r.done.set()
                if closed:
                    new.close()
                else:
                    log.warning("session %r re-registered: incarnation %d after %d", self._name,
                                new.incarnation, old.incarnation)
                return
            time.sleep(backoff.next())

    # -- calls ----------------------------------------------------------------

    def _count_resend(self) -> None:
        with self._lock:
            self._stats.resends += 1

    def submit(self, ops: Sequence[Op], batch_id: Optional[str] = None, *,
               timeout: Optional[float] = None) -> Token:
        """Submits ops as one batch under the current incarnation and returns
        its token.

        While a re-registration is under way it first waits for it. A batch
        refused because its incarnation ended is sent again under the next
        one. A lost reply is settled by sending the same batch id again with
        the lease (on the next node when one went away). Raises
        ``SessionSuperseded`` once the name belongs to another process,
        ``Invalid`` for bad input (nothing written), ``OutcomeUnknown`` when
        nothing could settle a lost reply, ``Timeout`` or ``Unavailable`` when
        the timeout passed with nothing written.

        ``batch_id`` names the batch (1-128 name characters); by default a new
        one is made. With a batch id of its own, a batch the node settled as
        not accepted raises ``NotAccepted`` rather than being resent under a
        new id, and its receipt is kept as long as the lease lives (see
        Caller.submit).
        """
        deadline = Deadline(timeout or self._timeout)
        ops_pb = to_pb(ops)
        own_id = batch_id is not None
        bid = batch_id or _core.new_batch_id()
        backoff = Backoff()
        while True:
            caller = self._acquire(deadline)
            try:
                tok = self._client._submit(caller._reg, ops_pb, ops, bid, deadline, on_resend=self._count_resend)
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
                with self._lock:
                    self._stats.not_accepted += 1
                bid = _core.new_batch_id()
                time.sleep(deadline.pause(backoff.next()))
                continue
            with self._lock:
                self._stats.accepted += 1
            if not own_id:
                self._client._forget(self._name, caller.incarnation, bid)
            return tok

    def set(self, key: str, value: Union[bytes, str], expiration: int = 0, *,
            timeout: Optional[float] = None) -> Token:
        """Submits a set of key to value."""
        return self.submit([SetOp(key, value, expiration)], timeout=timeout)

    def delete(self, key: str, *, timeout: Optional[float] = None) -> Token:
        """Submits a delete of key."""
        return self.submit([DeleteOp(key)], timeout=timeout)

    def wait_applied(self, token: TokenLike, timeout: Optional[float] = _core.DEFAULT_TIMEOUT) -> None:
        """Returns once token is applied (G8); see Client.wait_applied."""
        self._client.wait_applied(token, timeout)

    def resolve(self, err: OutcomeUnknown, *, timeout: Optional[float] = None) -> Token:
        """Settles a submission that raised OutcomeUnknown; see Client.resolve."""
        return self._client.resolve(err, timeout=timeout)

    def close(self, *, timeout: Optional[float] = None) -> None:
        """Ends the session: later calls raise ``SessionClosed``, waiting
        calls too, and the current incarnation is unregistered (its lease
        revoked; its accepted operations are still applied, G4). Call it also
        after the session failed, to release the lease."""
        with self._lock:
            self._fail_locked(SessionClosed("session of %r closed" % self._name))
            cur = self._cur
        cur.close(timeout=timeout)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Session", "SessionStats"]
