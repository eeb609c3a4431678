"""Range checks of replicated records: what another process wrote to the cluster store is input too.

Anyone who can write under the cluster's prefix (an operator's ``etcdctl``, a bug in another version)
can leave a key that does not parse, or a record that parses but holds a time in the year 10^292, a
NaN progress or a member address that names nothing. The replica (``cache.py``) runs every record
through these checks and skips the one that fails, with ``BadRecord``'s reason in one log line; the
rest of the replica, and the node, carry on. Every field a reader turns into a time, a number, a
JSON value or an address is checked here, so no reader has to.
"""

from __future__ import annotations

import ipaddress
import math
import re

from taskward import limits
from taskward.errors import InvalidArgument
from taskward.model import MAX_LABEL_LEN, NODE_ID_RE
from taskward.model import check_task_id as check_uuid

MAX_TIME = 253402300799.0
"""The last second of year 9999, UTC: the latest time a record may carry (every reader can show it)."""
MAX_NAME_LEN = 256
"""Longest version string or instance token of a member."""
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only (str.isdecimal takes any script's)


class BadRecord(ValueError):
    """A replicated record that must not be used; the message says which field and why."""


def check_key_text(key: str) -> None:
    """Keys that were not UTF-8 arrive with lone surrogates (``store/base.py``): no reader can use them."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRecord("the key is not UTF-8") from None


def check_task_id(name: str, value: str, *, optional: bool = False) -> None:
    if optional and not value:
        return
    try:
        check_uuid(value)
    except InvalidArgument:
        raise BadRecord(f"{name} {value[:80]!r} is not a task id") from None


def check_node_id(name: str, value: str) -> None:
    if not NODE_ID_RE.fullmatch(value):
        raise BadRecord(f"{name} {value[:80]!r} is not a node id")


def check_time(name: str, value: float) -> None:
    """Unix seconds from 0 (unset) to ``MAX_TIME``."""
    if not (math.isfinite(value) and 0 <= value <= MAX_TIME):
        raise BadRecord(f"{name} {value!r} is not a time (0 to {MAX_TIME:.0f} seconds)")


def check_progress(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0 <= value <= limits.MAX_PROGRESS):
        raise BadRecord(f"{name} {value!r} is not a progress value (0 to {limits.MAX_PROGRESS:.0f})")


def check_count(name: str, value: int, *, low: int = 0) -> None:
    if value < low:
        raise BadRecord(f"{name} {value} is below {low}")


def check_text(name: str, value: str, limit: int = MAX_LABEL_LEN, *, required: bool = False) -> None:
    if required and not value:
        raise BadRecord(f"{name} is empty")
    if len(value) > limit:
        raise BadRecord(f"{name} is longer than {limit} characters")


def check_json(name: str, value: str, max_bytes: int, *, object_only: bool = False) -> None:
    """A JSON document as the node path accepts it: its size, depth and finite numbers (``limits``)."""
    if len(value.encode()) > max_bytes:
        raise BadRecord(f"{name} is larger than {max_bytes} bytes")
    try:
        parsed = limits.loads(value, name)
    except InvalidArgument as exc:
        raise BadRecord(exc.message) from None
    if object_only and not isinstance(parsed, dict):
        raise BadRecord(f"{name} is not a JSON object")


def valid_address(address: str) -> bool:
    """``HOST:PORT`` with an IP address (IPv6 in brackets) or a DNS name, and a port from 1 to 65535:
    the only kind of address the node dials."""
    host, sep, port = address.rpartition(":")
    if not sep or not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        return False
    if host.startswith("[") and host.endswith("]"):
        try:
            return isinstance(ipaddress.ip_address(host[1:-1]), ipaddress.IPv6Address)
        except ValueError:
            return False
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host)) and not host.replace(".", "").isdecimal()


def check_address(name: str, value: str) -> None:
    if not valid_address(value):
        raise BadRecord(f"{name} {value[:80]!r} is not a HOST:PORT address")
