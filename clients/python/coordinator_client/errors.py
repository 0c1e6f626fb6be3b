"""The errors of the coordinator's caller API, one class per refusal reason.

Every refusal of the API is a ``google.rpc.Status`` whose details hold a
``google.rpc.ErrorInfo`` with domain ``coordinator.v1`` (docs/api.md,
"Statuses"); its reason picks the class raised here. A failure that carries no
reason (the node went away, a deadline passed on the wire) is raised as the
class of its gRPC code, with ``reason`` empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Dict, Mapping, Optional, Sequence, Tuple, Type

import grpc

from ._pb import rpc_status_pb2

if TYPE_CHECKING:
    from .ops import Op

DOMAIN = "coordinator.v1"
"""The domain of every ErrorInfo detail the API returns."""

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_ERROR_INFO_TYPE = "google.rpc.ErrorInfo"
_RETRY_INFO_TYPE = "google.rpc.RetryInfo"

# grpc-gateway's mapping of gRPC codes to HTTP statuses, for errors whose
# reason does not pick the status itself.
_HTTP_OF_CODE: Dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


class CoordinatorError(Exception):
    """A call the coordinator refused, or that could not get an answer.

    ``reason`` is the ErrorInfo reason the API sent (``"SUPERSEDED"``, ...),
    empty when no answer carried one (the node could not be reached, or a
    deadline passed on the way); ``code`` is the gRPC status code, ``message``
    the status message and ``metadata`` the ErrorInfo metadata.
    """

    REASON: ClassVar[str] = ""
    """The API reason this class stands for."""

    def __init__(
        self,
        message: str = "",
        *,
        reason: Optional[str] = None,
        code: Optional[grpc.StatusCode] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason: str = self.REASON if reason is None else reason
        self.code = code
        self.metadata: Dict[str, str] = dict(metadata or {})

    @property
    def http_status(self) -> int:
        """The HTTP status the API's HTTP/JSON side answers this refusal with."""
        if self.reason in _HTTP_OF_REASON:
            return _HTTP_OF_REASON[self.reason]
        if self.code is not None:
            return _HTTP_OF_CODE.get(self.code, 500)
        return 500

    def __str__(self) -> str:
        what = self.reason or (self.code.name if self.code is not None else type(self).__name__)
        return "%s: %s" % (what, self.message) if self.message else what


class Invalid(CoordinatorError):
    """Bad input (key, value, expiration, name, batch id, empty batch); nothing was written."""

    REASON = "INVALID"


class Superseded(CoordinatorError):
    """A newer incarnation of the name is registered; final for this incarnation."""

    REASON = "SUPERSEDED"

    @property
    def current(self) -> Optional[int]:
        """The incarnation the refusal names as current, None when it names none."""
        try:
            return int(self.metadata["current"])
        except (KeyError, ValueError):
            return None


class Expired(CoordinatorError):
    """The incarnation's lease expired or was revoked; register again."""

    REASON = "EXPIRED"


class NameHeld(CoordinatorError):
    """``register`` with ``if_absent`` found a live incarnation of the name."""

    REASON = "NAME_HELD"


class NotAccepted(CoordinatorError):
    """The batch was not stored, and its batch id never will be: resend under a new id."""

    REASON = "NOT_ACCEPTED"


class OutcomeUnknown(CoordinatorError):
    """Whether a batch was accepted cannot be told.

    Raised by a submission only when a reply was lost and nothing could settle
    it: the incarnation ended before a resend could find the batch, or the
    call's timeout passed first. It carries what ``resolve()`` needs to ask
    again: the name, incarnation, lease, batch id and operations.
    """

    REASON = "OUTCOME_UNKNOWN"

    def __init__(
        self,
        message: str = "",
        *,
        reason: Optional[str] = None,
        code: Optional[grpc.StatusCode] = None,
        metadata: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None,
        incarnation: Optional[int] = None,
        lease_id: Optional[int] = None,
        batch_id: Optional[str] = None,
        ops: Sequence["Op"] = (),
        cause: Optional[BaseException] = None,
    ) -> None:
        super().__init__(message, reason=reason, code=code, metadata=metadata)
        self.name = name
        self.incarnation = incarnation
        self.lease_id = lease_id
        self.batch_id = batch_id
        self.ops: Tuple["Op", ...] = tuple(ops)
        self.cause = cause

    @property
    def resolvable(self) -> bool:
        """Whether the error names a submission ``resolve()`` can ask about."""
        return bool(self.name and self.incarnation and self.lease_id and self.batch_id and self.ops)


class PermissionDenied(CoordinatorError):
    """The client certificate does not allow the name, or etcd refused the node."""

    REASON = "PERMISSION_DENIED"


class Unavailable(CoordinatorError):
    """No node could be reached, or etcd could not; nothing was written."""

    REASON = "UNAVAILABLE"


class Timeout(CoordinatorError):
    """A wait's timeout passed first (``wait_applied``, or a call's own timeout)."""

    REASON = "TIMEOUT"


class TooLarge(CoordinatorError):
    """A request over the node's size limit."""

    REASON = "TOO_LARGE"


class ResourceExhausted(CoordinatorError):
    """A limit of the node refused the call; nothing was written. Retry after ``retry_delay``."""

    REASON = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str = "",
        *,
        reason: Optional[str] = None,
        code: Optional[grpc.StatusCode] = None,
        metadata: Optional[Mapping[str, str]] = None,
        retry_delay: Optional[float] = None,
    ) -> None:
        super().__init__(message, reason=reason, code=code, metadata=metadata)
        self.retry_delay = retry_delay
        """Seconds to wait before trying again (the RetryInfo detail), None when not given."""

    @property
    def limit(self) -> str:
        """The limit that refused the call (metadata ``limit``)."""
        return self.metadata.get("limit", "")


class NoSpace(CoordinatorError):
    """etcd raised its NOSPACE alarm and refuses every write until an operator frees space."""

    REASON = "NO_SPACE"


class Closed(CoordinatorError):
    """The client, caller or session was closed."""


class SessionClosed(Closed):
    """The session was closed: its calls fail with this from then on."""


class SessionSuperseded(Superseded):
    """The session's name was registered by another live process: final for the session.

    Every call waiting in the session and every later call raises it. A
    session never registers over another live holder of its name.
    """


_REASON_CLASSES: Tuple[Type[CoordinatorError], ...] = (
    Invalid, Superseded, Expired, NameHeld, NotAccepted, OutcomeUnknown, PermissionDenied,
    Unavailable, Timeout, TooLarge, ResourceExhausted, NoSpace,
)
_BY_REASON: Dict[str, Type[CoordinatorError]] = {cls.REASON: cls for cls in _REASON_CLASSES}

_HTTP_OF_REASON: Dict[str, int] = {
    "INVALID": 400, "SUPERSEDED": 409, "EXPIRED": 404, "NAME_HELD": 409, "NOT_ACCEPTED": 503,
    "OUTCOME_UNKNOWN": 500, "PERMISSION_DENIED": 403, "UNAVAILABLE": 503, "TIMEOUT": 504,
    "TOO_LARGE": 413, "RESOURCE_EXHAUSTED": 429, "NO_SPACE": 429,
}

# The class of a failure without a reason, by its gRPC code.
_BY_CODE: Dict[grpc.StatusCode, Type[CoordinatorError]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
    grpc.StatusCode.INVALID_ARGUMENT: Invalid,
}


def _type_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def from_rpc_error(err: grpc.RpcError) -> CoordinatorError:
    """Turns a failed gRPC call (sync or ``grpc.aio``) into the error of its reason."""
    # A failed call's RpcError is also its grpc.Call, whose methods say
    # what failed; grpc.RpcError itself declares none of them.
    call: Any = err
    code: Optional[grpc.StatusCode] = call.code() if hasattr(call, "code") else None
    message: str = (call.details() if hasattr(call, "details") else "") or ""
    trailers = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
    info: Optional[rpc_status_pb2.ErrorInfo] = None
    retry_delay: Optional[float] = None
    for key, value in trailers or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            st = rpc_status_pb2.Status.FromString(value)
        except Exception:  # a malformed trailer is no reason
            continue
        for detail in st.details:
            name = _type_name(detail.type_url)
            try:
                if name == _ERROR_INFO_TYPE:
                    ei = rpc_status_pb2.ErrorInfo.FromString(detail.value)
                    if ei.domain == DOMAIN:
                        info = ei
                elif name == _RETRY_INFO_TYPE:
                    ri = rpc_status_pb2.RetryInfo.FromString(detail.value)
                    retry_delay = ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9
            except Exception:
                continue
    if info is None:
        cls = _BY_CODE.get(code, CoordinatorError) if code is not None else CoordinatorError
        return cls(message, reason="", code=code)
    cls = _BY_REASON.get(info.reason, CoordinatorError)
    meta = dict(info.metadata)
    if cls is ResourceExhausted:
        return ResourceExhausted(message, reason=info.reason, code=code, metadata=meta, retry_delay=retry_delay)
    return cls(message, reason=info.reason, code=code, metadata=meta)
