"""The merged event stream's resume token: what it encodes, and every way a token from outside can be
wrong, each refused with ``InvalidArgument`` saying what (never read as "start from scratch")."""

from __future__ import annotations

import base64

import pytest

from taskward.api.rest.merged_events import merged_start
from taskward.client.event_token import MAX_SEQUENCE, NodePosition, decode_token, encode_token
from taskward.errors import InvalidArgument


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def test_a_token_round_trips_and_is_url_and_header_safe() -> None:
    positions = {"n1": NodePosition("0123456789abcdef", 42), "node-2.b_c": NodePosition("", 0),
                 "n3": NodePosition("ff", MAX_SEQUENCE)}
    token = encode_token(positions)
    assert token.replace("-", "").replace("_", "").isalnum() and "=" not in token
    assert decode_token(token) == positions
    assert decode_token(encode_token({})) == {} and encode_token({}) == ""
    assert not token[0].isdigit()  # a plain sequence number is never a token


@pytest.mark.parametrize(("token", "why"), [
    ("abc$", "not base64url"),
    ("a", "not base64url"),
    (b64("n1:ab"), "an entry is not node:epoch:sequence"),
    (b64("n1:ab:1:2"), "an entry is not node:epoch:sequence"),
    (b64("-bad:ab:1"), "'-bad' is not a node id"),
    (b64("n1:XYZ:1"), "bad epoch for node n1"),
    (b64("n1:ab:-1"), "bad sequence for node n1"),
    (b64("n1:ab:1e3"), "bad sequence for node n1"),
    (b64(f"n1:ab:{MAX_SEQUENCE + 1}"), "bad sequence for node n1"),
    (b64("n1:ab:1,n1:ab:2"), "node n1 twice"),
    (b64("n1:ab:1,"), "an entry is not node:epoch:sequence"),
    (base64.urlsafe_b64encode(b"\xff\xfe:1:2").decode().rstrip("="), "not base64url text"),
])
def test_a_malformed_token_says_what_is_wrong(token: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        decode_token(token)
    assert err.value.message.startswith("malformed resume token") and why in err.value.message
    assert err.value.message.endswith("send back an id of this stream unchanged")


def test_a_huge_token_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(InvalidArgument, match="longer than 65536 characters"):
        decode_token("A" * 70_000)
    many = ",".join(f"n{i}::1" for i in range(1100))
    with pytest.raises(InvalidArgument, match="more than 1024 nodes"):
        decode_token(b64(many))


def test_where_the_gateway_stream_starts() -> None:
    token = encode_token({"n1": NodePosition("ab", 7)})
    assert merged_start(token, "3", live=True) == token  # Last-Event-ID wins over ?after= and live
    assert merged_start(None, token, live=False) == token
    assert merged_start(" 12 ", None, live=False) == 12  # a plain sequence: after it on every node
    assert merged_start("", None, live=True) is None  # an empty header is no position: live
    assert merged_start(None, None, live=False) == 0  # the oldest retained event of every node
    with pytest.raises(InvalidArgument, match="malformed resume token 'x!'"):
        merged_start("x!", None, live=False)
    with pytest.raises(InvalidArgument, match="bad parameter after: 99999999999999999999 is too large"):
        merged_start(None, "99999999999999999999", live=False)
