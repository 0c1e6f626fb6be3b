"""A Python client of the coordinator's caller API (gRPC).

    from coordinator_client import Client, SetOp, SessionSuperseded, Invalid

    with Client(["10.0.0.1:8080", "10.0.0.2:8080"]) as c:
        s = c.session("agent-7")                  # one per name and process
        tok = s.submit([SetOp("config/eu", "v2")])  # from any thread
        s.wait_applied(tok)                       # read your write
        s.close()

``Client`` calls the API of one of several nodes, moving to the next when
one goes away. ``Client.register`` returns a ``Caller``: one incarnation whose
lease a background thread keeps alive. ``Client.session`` returns a
``Session``: a name's registration for the whole process, re-registered once
per lost lease however many threads fail at that moment (G9), final when
another process takes the name over. ``AsyncClient`` and ``AsyncSession`` do the
same on ``grpc.aio`` for asyncio programs. Every refusal raises one class per
API reason, all under ``CoordinatorError``.
"""

from ._core import TLS, SessionStats
from .aio import AsyncCaller, AsyncClient, AsyncSession
from .client import Caller, Client
from .errors import (
    DOMAIN,
    Closed,
    CoordinatorError,
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
    Superseded,
    Timeout,
    TooLarge,
    Unavailable,
)
from .ops import DeleteOp, Op, SetOp
from .session import Session
from .tokens import Token

__version__ = "0.1.0"

__all__ = [
    "AsyncCaller", "AsyncClient", "AsyncSession", "Caller", "Client", "Closed", "CoordinatorError",
    "DOMAIN", "DeleteOp", "Expired", "Invalid", "NameHeld", "NoSpace", "NotAccepted", "Op",
    "OutcomeUnknown", "PermissionDenied", "ResourceExhausted", "Session", "SessionClosed",
    "SessionStats", "SessionSuperseded", "SetOp", "Superseded", "TLS", "Timeout", "Token", "TooLarge",
    "Unavailable",
]
