"""The operations of a batch: sets and deletes of memcached keys.

The node checks every operation against its limits (key, value size,
expiration); a bad one refuses the whole batch with ``Invalid`` and nothing is
written. The checks here are of Python types only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Union

from ._pb import coordinator_pb2 as pb
from .errors import Invalid


@dataclass(frozen=True)
class SetOp:
    """Stores ``value`` under ``key``. A str value is sent as text (UTF-8),
    bytes as they are. ``expiration`` is the item's time to live in seconds;
    0 means none."""

    key: str
    value: Union[bytes, str]
    expiration: int = 0


@dataclass(frozen=True)
class DeleteOp:
    """Removes ``key``."""

    key: str


Op = Union[SetOp, DeleteOp]
"""One operation of a batch."""


def to_pb(batch: Sequence[Op]) -> List[pb.Op]:
    """The request's form of batch; a value of the wrong type raises Invalid
    before anything is sent."""
    if isinstance(batch, (SetOp, DeleteOp)):
        batch = [batch]
    out: List[pb.Op] = []
    for i, op in enumerate(batch):
        try:
            if isinstance(op, SetOp):
                if isinstance(op.value, str):
                    s = pb.SetOp(key=op.key, text=op.value, expiration_seconds=op.expiration)
                elif isinstance(op.value, (bytes, bytearray, memoryview)):
                    s = pb.SetOp(key=op.key, value=bytes(op.value), expiration_seconds=op.expiration)
                else:
                    raise TypeError("value is %s, not bytes or str" % type(op.value).__name__)
                out.append(pb.Op(set=s))
            elif isinstance(op, DeleteOp):
                out.append(pb.Op(delete=pb.DeleteOp(key=op.key)))
            else:
                raise TypeError("%s is not a SetOp or a DeleteOp" % type(op).__name__)
        except (TypeError, ValueError) as e:
            # A non-str key, or an expiration that is not an int32: the
            # node would refuse it as INVALID, so it is refused the same way.
            raise Invalid("ops[%d]: %s" % (i, e)) from None
    return out
