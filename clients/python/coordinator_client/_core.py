"""What the thread and asyncio flavours of the client share: the reading of a
failed call, the cookie compare of G9, backoff, batch ids, the nodes to call
and the session's counters. Nothing here blocks or awaits."""

from __future__ import annotations

import enum
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from ._pb import coordinator_pb2 as pb
from .errors import (
    Closed,
    CoordinatorError,
    Expired,
    OutcomeUnknown,
    ResourceExhausted,
    Superseded,
    Timeout,
    Unavailable,
)
from .ops import Op

DEFAULT_TIMEOUT = 30.0
"""Seconds a call may take, by default, however many nodes and resends it needs."""

DEFAULT_RPC_TIMEOUT = 10.0
"""Seconds one attempt on one node may take before the next node is tried."""

REGISTER_TIMEOUT = 70.0
"""Seconds a registration may take: a drain wait lasts up to the node's 60 s
write timeout."""

# gRPC's reconnection backoff starts at 1 s and grows to 120 s; a node that
# comes back should be found again within a lease's TTL.
CHANNEL_OPTIONS: List[Tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class Outcome(enum.Enum):
    """What a failed attempt means for the submission that made it."""

    LOST = 1
    """No answer: the batch may have been stored. Resend the same batch id."""
    AGAIN = 2
    """Nothing was written and the node says so: try again, on another node."""
    LATER = 3
    """A limit of the node refused the call: try again after its delay."""
    FINAL = 4
    """An answer: raise it (or let the session act on it)."""


# Codes of failures without a reason that may have come after the request
# reached the node: its reply is then lost, not refused.
_LOST_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED,
})


def classify_submit(err: CoordinatorError) -> Outcome:
    """What a Submit that failed with err means."""
    if err.reason == "":
        return Outcome.LOST if err.code in _LOST_CODES else Outcome.FINAL
    if err.reason in ("OUTCOME_UNKNOWN", "TIMEOUT"):
        # The node could not settle the batch in time; a resend of the same
        # id asks again.
        return Outcome.LOST
    if err.reason == "UNAVAILABLE":
        return Outcome.AGAIN
    if err.reason == "RESOURCE_EXHAUSTED":
        return Outcome.LATER
    return Outcome.FINAL


def classify_call(err: CoordinatorError) -> Outcome:
    """What another call that failed with err means: calls other than Submit
    are safe to repeat, so no answer is as good as "try again"."""
    if err.reason == "":
        return Outcome.AGAIN if err.code in _LOST_CODES else Outcome.FINAL
    if err.reason == "UNAVAILABLE":
        return Outcome.AGAIN
    if err.reason == "RESOURCE_EXHAUSTED":
        return Outcome.LATER
    return Outcome.FINAL


def node_failed(err: CoordinatorError) -> bool:
    """Whether err is the node's own failure, so that the next call should go
    to the next node: no answer at all, or the node saying it is stopping or
    cannot reach etcd."""
    return (err.reason == "" and err.code in _LOST_CODES) or err.reason == "UNAVAILABLE"


class Action(enum.Enum):
    """What a call refused under its cookie does next (G9)."""

    RETRY = 1
    """A newer incarnation is current: resend under it at once."""
    WAIT = 2
    """A re-registration is under way: wait for it."""
    RENEW = 3
    """The cookie is the current incarnation and it is dead: re-register."""
    FAIL = 4
    """The session has ended: raise its error."""


def compare_cookie(cookie: int, current: int, renewing: bool, failed: bool) -> Action:
    """The cookie check of G9, as the Go session makes it.

    A call refused as expired under incarnation ``cookie`` asks what to do,
    given the session's current incarnation, whether a re-registration of it
    is under way and whether the session has failed. Only a cookie equal to
    the current incarnation, with no re-registration under way, may
    re-register: a call arriving with an older cookie retries under the newer
    incarnation and leaves it be.
    """
    if failed:
        return Action.FAIL
    if renewing:
        return Action.WAIT
    if cookie != current:
        return Action.RETRY
    return Action.RENEW


class Backoff:
    """Exponential backoff with jitter, from ``low`` to ``high`` seconds."""

    def __init__(self, low: float = 0.02, high: float = 1.0) -> None:
        self.low, self.high, self._n = low, high, 0

    def next(self) -> float:
        """The next delay: doubled each time up to high, each drawn from
        between half and one and a half of it, so that many callers that
        failed together do not come back together."""
        d = min(self.high, self.low * (2 ** min(self._n, 30)))
        self._n += 1
        return d * random.uniform(0.5, 1.5)

    def reset(self) -> None:
        self._n = 0


_batch_lock = threading.Lock()
_batch_last = 0


def new_batch_id() -> str:
    """A new batch id, as the Go clients make them: 16 bytes in hex, a
    nanosecond timestamp that strictly increases within the process followed
    by 8 random bytes. Ids made here sort in the order they were made, which
    keeps a name's new batch keys together in etcd's key index; the random
    part keeps processes apart."""
    global _batch_last
    with _batch_lock:
        now = max(time.time_ns(), _batch_last + 1)
        _batch_last = now
    return now.to_bytes(8, "big").hex() + os.urandom(8).hex()


class Deadline:
    """A point in time a call must end by."""

    def __init__(self, timeout: Optional[float]) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    def left(self) -> Optional[float]:
        """Seconds left (never negative), None for no deadline."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def attempt(self, cap: float) -> float:
        """The timeout of one attempt: cap, or less when the deadline is nearer."""
        left = self.left()
        return cap if left is None else min(cap, left)

    def pause(self, delay: float) -> float:
        """delay, or what is left when the deadline is nearer."""
        left = self.left()
        return delay if left is None else min(delay, left)


@dataclass(frozen=True)
class TLS:
    """TLS for the API's connections.

    ``ca`` is the PEM bundle of the CA that signed the nodes' certificates
    (bytes, or a file name; None uses the system's roots); ``cert`` and
    ``key`` are a client certificate and its key for mTLS (both or neither);
    ``server_name`` overrides the name the nodes' certificates are checked
    against.
    """

    ca: Union[bytes, str, None] = None
    cert: Union[bytes, str, None] = None
    key: Union[bytes, str, None] = None
    server_name: Optional[str] = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS: cert and key go together")
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.ca), private_key=_pem(self.key), certificate_chain=_pem(self.cert),
        )

    def options(self) -> List[Tuple[str, Any]]:
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


def _pem(v: Union[bytes, str, None]) -> Optional[bytes]:
    if v is None or isinstance(v, bytes):
        return v
    with open(v, "rb") as f:
        return f.read()


def tls_of(tls: Union[TLS, bool, None]) -> Optional[TLS]:
    if tls is True:
        return TLS()
    if tls is False or tls is None:
        return None
    if not isinstance(tls, TLS):
        raise TypeError("tls is a TLS, True or None, not %s" % type(tls).__name__)
    return tls


def addresses_of(addresses: Union[str, Sequence[str]]) -> List[str]:
    """The nodes' addresses, host:port each, in the order they are tried."""
    addrs = [addresses] if isinstance(addresses, str) else list(addresses)
    if not addrs:
        raise ValueError("no API address given")
    for a in addrs:
        host, sep, port = a.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("API address %r is not host:port" % (a,))
    return addrs


C = TypeVar("C")


class Nodes(Generic[C]):
    """The nodes a client calls: one channel each, made when first used, and
    the one calls go to now. When a call finds its node gone, the client moves
    on to the next node (after the last, the first again), once however many
    calls saw the same node fail: each reports the node it used, and only a
    report about the current node moves."""

    def __init__(self, addresses: List[str], make: Callable[[str], C], stub: Callable[[C], Any]) -> None:
        self.addresses = addresses
        self._make, self._stub = make, stub
        self._lock = threading.Lock()
        self._channels: List[Optional[C]] = [None] * len(addresses)
        self._stubs: List[Any] = [None] * len(addresses)
        self._cur = 0
        self._closed = False

    def pick(self) -> Tuple[int, Any]:
        """The current node's index and stub."""
        with self._lock:
            if self._closed:
                raise Closed("client closed")
            i = self._cur
            if self._stubs[i] is None:
                ch = self._make(self.addresses[i])
                self._channels[i], self._stubs[i] = ch, self._stub(ch)
            return i, self._stubs[i]

    def failed(self, i: int) -> None:
        """Reports that node i failed a call: move on, unless already moved."""
        with self._lock:
            if self._cur == i:
                self._cur = (i + 1) % len(self.addresses)

    @property
    def current(self) -> str:
        """The address calls go to now."""
        with self._lock:
            return self.addresses[self._cur]

    def close(self) -> List[C]:
        """Marks the nodes closed and returns the channels made, to close."""
        with self._lock:
            self._closed = True
            chans = [c for c in self._channels if c is not None]
            self._channels = [None] * len(self.addresses)
            self._stubs = [None] * len(self.addresses)
            return chans


@dataclass
class SessionStats:
    """A session's counters."""

    registrations: int = 0
    """Registrations made: the first and each re-registration."""
    renewals: int = 0
    """Re-registrations after a lost lease (G9: one per lost lease)."""
    accepted: int = 0
    """Submissions accepted."""
    expired: int = 0
    """Refusals as expired (or as superseded by the session's own newer incarnation)."""
    retried: int = 0
    """Calls refused under an older incarnation and resent at once under the current one."""
    waits: int = 0
    """Calls that waited for a re-registration under way."""
    resends: int = 0
    """Submissions sent again with the same batch id after a lost reply."""
    not_accepted: int = 0
    """Submissions settled as not accepted and sent again under a new batch id."""


@dataclass
class Registration:
    """One incarnation as Register returned it."""

    name: str
    incarnation: int
    lease_id: int
    ttl: int


def holder() -> Tuple[str, int]:
    """What registrations say of their holder: this host's name and process."""
    host = socket.gethostname().encode("utf-8")[:255].decode("utf-8", "ignore")
    return host, os.getpid()


def register_request(name: str, ttl: Optional[int], if_absent: bool, wait_drained: bool) -> pb.RegisterRequest:
    host, pid = holder()
    return pb.RegisterRequest(
        name=name, ttl_seconds=int(ttl or 0), if_absent=if_absent, wait_drained=wait_drained,
        holder_host=host, holder_pid=pid,
    )


def submit_request(reg: Registration, batch_id: str, ops: List[pb.Op]) -> pb.SubmitRequest:
    return pb.SubmitRequest(
        name=reg.name, incarnation=reg.incarnation, batch_id=batch_id, ops=ops, lease_id=reg.lease_id,
    )


def outcome_unknown(reg: Registration, batch_id: str, ops: Sequence[Op], cause: CoordinatorError,
                    why: str) -> OutcomeUnknown:
    """The error of a submission whose lost reply nothing settled."""
    return OutcomeUnknown(
        "batch %s of %r incarnation %d: %s (%s)" % (batch_id, reg.name, reg.incarnation, why, cause),
        reason=cause.reason if cause.reason == "OUTCOME_UNKNOWN" else "", code=cause.code,
        name=reg.name, incarnation=reg.incarnation, lease_id=reg.lease_id, batch_id=batch_id, ops=ops,
        cause=cause,
    )


def after_lost(reg: Registration, batch_id: str, ops: Sequence[Op], err: CoordinatorError) -> CoordinatorError:
    """The error of a resend, made after a lost reply, that err answered.

    A refusal of the incarnation (expired, superseded) means the node found
    neither the batch nor its receipt: the first send was not stored, or it
    was and has been applied while the incarnation's receipts went with its
    lease. Nothing can tell which. Any other answer stands.
    """
    if isinstance(err, (Expired, Superseded)):
        return outcome_unknown(reg, batch_id, ops, err, "reply lost, then the incarnation ended")
    return err


def gave_up(reg: Registration, batch_id: str, ops: Sequence[Op], last: CoordinatorError,
            lost: bool) -> CoordinatorError:
    """The error of a submission whose timeout passed: unknown when a reply
    was lost on the way, else the last failure (nothing was written)."""
    if lost:
        return outcome_unknown(reg, batch_id, ops, last, "reply lost and the timeout passed")
    if isinstance(last, (Unavailable, Timeout, ResourceExhausted)):
        return last
    return Unavailable("no node answered in time: %s" % last, reason="", code=last.code)

