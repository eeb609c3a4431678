"""The resume token of a merged event stream: where the reader stands in every node's stream.

A token maps node id → (epoch, sequence): the last event taken from that node, and the epoch of the
node's numbering (``taskward.events.EPOCH_KEY``). It travels as the SSE ``id`` of the gateway's
``GET /events`` (and back as ``Last-Event-ID`` or ``?after=``), and as ``ClusterEventStream.position``
in the client library. Clients treat it as opaque; its form is ``base64url`` (no padding) of
``id:epoch:seq`` entries joined by ``,`` — compact, and safe in an HTTP header and a query string.
Node ids cannot contain ``:`` or ``,``, so the form needs no escaping.

Tokens come from outside, so ``decode_token`` checks everything and answers ``InvalidArgument`` with
what is wrong; a bad token never turns into a silent "start from scratch".
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from taskward.errors import InvalidArgument
from taskward.model import NODE_ID_RE

MAX_TOKEN_CHARS = 64 * 1024
MAX_NODES = 1024
MAX_SEQUENCE = 2**64 - 1  # WatchEventsRequest.after_sequence is a uint64
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]*")
_EPOCH_RE = re.compile(r"[0-9a-f]{0,32}")
_HINT = "send back an id of this stream unchanged"


@dataclass(frozen=True, slots=True)
class NodePosition:
    """The last event taken from one node: its ``sequence`` in the numbering called ``epoch`` ("" when
    not known: a start from a plain sequence number, or a node that does not say)."""

    epoch: str
    sequence: int


def entry(node_id: str, position: NodePosition) -> str:
    """One node's part of a token (callers that re-encode often keep these and ``join`` them)."""
    return f"{node_id}:{position.epoch}:{position.sequence}"


def join(entries: Iterable[str]) -> str:
    return base64.urlsafe_b64encode(",".join(entries).encode()).rstrip(b"=").decode()


def encode_token(positions: Mapping[str, NodePosition]) -> str:
    return join(entry(node_id, p) for node_id, p in positions.items())


def decode_token(token: str) -> dict[str, NodePosition]:
    """The positions a token names; ``InvalidArgument`` saying what is wrong when it is not a token."""
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(f"malformed resume token: longer than {MAX_TOKEN_CHARS} characters; {_HINT}")
    if not _TOKEN_RE.fullmatch(token) or len(token) % 4 == 1:
        raise InvalidArgument(f"malformed resume token {_shown(token)}: not base64url; {_HINT}")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(f"malformed resume token {_shown(token)}: not base64url text; {_HINT}") from None
    positions: dict[str, NodePosition] = {}
    for part in text.split(",") if text else ():
        node_id, epoch, seq = _fields(token, part)
        if node_id in positions:
            raise InvalidArgument(f"malformed resume token {_shown(token)}: node {node_id} twice; {_HINT}")
        positions[node_id] = NodePosition(epoch, seq)
        if len(positions) > MAX_NODES:
            raise InvalidArgument(f"malformed resume token: more than {MAX_NODES} nodes; {_HINT}")
    return positions


def _fields(token: str, part: str) -> tuple[str, str, int]:
    fields = part.split(":")
    if len(fields) != 3:
        raise InvalidArgument(f"malformed resume token {_shown(token)}: an entry is not node:epoch:sequence; {_HINT}")
    node_id, epoch, seq = fields
    if not NODE_ID_RE.fullmatch(node_id):
        raise InvalidArgument(f"malformed resume token {_shown(token)}: {node_id[:70]!r} is not a node id; {_HINT}")
    if not _EPOCH_RE.fullmatch(epoch):
        raise InvalidArgument(f"malformed resume token {_shown(token)}: bad epoch for node {node_id}; {_HINT}")
    if not (seq.isascii() and seq.isdigit() and len(seq) <= 20 and int(seq) <= MAX_SEQUENCE):
        raise InvalidArgument(f"malformed resume token {_shown(token)}: bad sequence for node {node_id}; {_HINT}")
    return node_id, epoch, int(seq)


def _shown(token: str) -> str:
    """The token as an error quotes it: its start only (it may be long, and it is the caller's own)."""
    return repr(token if len(token) <= 40 else token[:40] + "...")
