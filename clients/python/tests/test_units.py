"""The pure pieces, without a cluster: the cookie compare, tokens, batch
ids, how a failure is read and classified."""

from __future__ import annotations

import grpc
import pytest

from coordinator_client import (
    CoordinatorError,
    Expired,
    Invalid,
    ResourceExhausted,
    SessionSuperseded,
    SetOp,
    Superseded,
    Token,
    Unavailable,
)
from coordinator_client._core import Action, Backoff, Outcome, classify_submit, compare_cookie, new_batch_id
from coordinator_client._pb import rpc_status_pb2
from coordinator_client.errors import DOMAIN, from_rpc_error
from coordinator_client.ops import to_pb


@pytest.mark.parametrize("cookie,current,renewing,failed,want", [
    (5, 5, False, False, Action.RENEW),  # the current incarnation died: re-register
    (4, 5, False, False, Action.RETRY),  # an older cookie: resend under 5 at once
    (5, 5, True, False, Action.WAIT),    # a re-registration is under way
    (4, 5, True, False, Action.WAIT),
    (5, 5, False, True, Action.FAIL),    # the session has ended
    (4, 5, True, True, Action.FAIL),
])
def test_compare_cookie(cookie: int, current: int, renewing: bool, failed: bool, want: Action) -> None:
    assert compare_cookie(cookie, current, renewing, failed) is want


def test_tokens() -> None:
    assert Token.parse("7") == Token(7) and str(Token(7)) == "7"
    assert Token.parse("7.3") == Token(7, 3) and str(Token(7, 3)) == "7.3"
    assert Token(7) < Token(7, 1) < Token(8)
    for bad in ("", "x", "7.", ".3", "7.3.1", "-1"):
        with pytest.raises(ValueError):
            Token.parse(bad)


def test_batch_ids_increase_and_are_names() -> None:
    ids = [new_batch_id() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 32 and all(c in "0123456789abcdef" for c in i) for i in ids)


def test_backoff_stays_within_bounds() -> None:
    b = Backoff(0.02, 1.0)
    delays = [b.next() for _ in range(40)]
    assert all(0.01 <= d <= 1.5 for d in delays)
    assert max(delays[-5:]) > 0.4


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailers


def _status(reason: str, meta: dict, retry: float = 0) -> tuple:
    st = rpc_status_pb2.Status(code=0, message="m")
    info = rpc_status_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=meta)
    st.details.add(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=info.SerializeToString())
    if retry:
        ri = rpc_status_pb2.RetryInfo()
        ri.retry_delay.seconds, ri.retry_delay.nanos = int(retry), int((retry % 1) * 1e9)
        st.details.add(type_url="type.googleapis.com/google.rpc.RetryInfo", value=ri.SerializeToString())
    return (("grpc-status-details-bin", st.SerializeToString()),)


def test_refusals_are_read_by_reason() -> None:
    e = from_rpc_error(_Failed(grpc.StatusCode.ABORTED, "superseded", _status("SUPERSEDED", {"current": "9"})))
    assert type(e) is Superseded and e.current == 9 and e.http_status == 409 and e.reason == "SUPERSEDED"
    e = from_rpc_error(_Failed(grpc.StatusCode.NOT_FOUND, "gone", _status("EXPIRED", {})))
    assert type(e) is Expired and classify_submit(e) is Outcome.FINAL
    e = from_rpc_error(_Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down",
                               _status("RESOURCE_EXHAUSTED", {"limit": "calls"}, retry=0.25)))
    assert isinstance(e, ResourceExhausted) and e.retry_delay == 0.25 and e.limit == "calls"
    assert classify_submit(e) is Outcome.LATER
    # No reason: the node went away, and a Submit's reply may be lost.
    e = from_rpc_error(_Failed(grpc.StatusCode.UNAVAILABLE, "socket closed", ()))
    assert type(e) is Unavailable and e.reason == "" and classify_submit(e) is Outcome.LOST
    # The node's own UNAVAILABLE says nothing was written.
    e = from_rpc_error(_Failed(grpc.StatusCode.UNAVAILABLE, "stopping", _status("UNAVAILABLE", {})))
    assert classify_submit(e) is Outcome.AGAIN
    # An unknown reason is a CoordinatorError that keeps it.
    e = from_rpc_error(_Failed(grpc.StatusCode.INTERNAL, "new", _status("SOMETHING_NEW", {})))
    assert type(e) is CoordinatorError and e.reason == "SOMETHING_NEW"
    assert issubclass(SessionSuperseded, Superseded)


def test_ops_of_wrong_types_are_invalid() -> None:
    assert len(to_pb([SetOp("k", "text"), SetOp("k", b"\x00")])) == 2
    with pytest.raises(Invalid):
        to_pb([SetOp(1, "v")])  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        to_pb([SetOp("k", 1.5)])  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        to_pb(["set k v"])  # type: ignore[list-item]
