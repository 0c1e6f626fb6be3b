"""Tokens: where an accepted batch sits in the order the leader applies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True, order=True)
class Token:
    """The token of an accepted batch: the etcd revision of the transaction
    that accepted it and its index among the batches of that transaction.

    Tokens compare in the order the leader applies them. ``str(token)`` is the
    API's form, ``"REV"`` or ``"REV.IDX"``.
    """

    revision: int
    index: int = 0

    @classmethod
    def parse(cls, text: str) -> "Token":
        """Parses ``"REV"`` or ``"REV.IDX"``; raises ValueError for anything else."""
        rev, dot, idx = text.partition(".")
        if not rev.isdigit() or (dot and not idx.isdigit()):
            raise ValueError("not a token: %r" % (text,))
        return cls(int(rev), int(idx) if dot else 0)

    def __str__(self) -> str:
        return "%d.%d" % (self.revision, self.index) if self.index else str(self.revision)


TokenLike = Union[Token, str]
"""A token, or its text."""


def token_text(tok: TokenLike) -> str:
    """The API's text of tok."""
    return str(tok) if isinstance(tok, Token) else tok
