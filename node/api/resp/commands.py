"""The RESP3 admin commands (Kronotop's ``TASK.ADMIN LIST`` plus the handshake redis-cli needs).

Error texts, the order of checks (unknown command, then arity, then authentication) and the
``HELLO``/``AUTH`` rules copy Redis 7, because redis-cli and operators' scripts key off them. The
surface is a thin adapter: task state comes from the TaskManager, never from a second copy here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from taskward.api.resp.protocol import OK, PONG, Command, Reply, Simple, encode, error, simple
from taskward.errors import AuthRateLimited, PermissionDenied, Unauthenticated
from taskward.model import TypeStats
from taskward.security.access import DEFAULT_USER, AccessControl
from taskward.security.failed_auth import FailedAuthLimiter
from taskward.security.roles import RESP_COMMANDS, Operation
from taskward.security.tokens import Principal, TokenTable

NOAUTH = error("NOAUTH Authentication required.")
WRONGPASS = error("WRONGPASS invalid username-password pair or user is disabled.")
HELLO_NOAUTH = error(
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH "
    "<user> <pass> option can be used to authenticate the client and select the RESP protocol version at "
    "the same time"
)
# A rebuild is normally triggered by the manager's version counter; the age bound is a safety net so
# that a state change made without bumping the counter is still visible within a second.
TYPE_LIST_MAX_AGE_S = 1.0
_PROTOVER_RE = re.compile(rb"-?[0-9]{1,18}")


class TypeStatsSource(Protocol):
    """What the admin surface needs from the TaskManager (a fake implements it in unit tests)."""

    @property
    def type_stats_version(self) -> int: ...

    def list_task_types(self) -> list[TypeStats]: ...


@dataclass(slots=True)
class Session:
    """Per-connection state that commands read and change."""

    id: int
    authenticated: bool
    resp: int = 2
    name: str = ""
    close_after_reply: bool = False
    peer: str = ""
    """``host:port`` of the client (audit log) and its host (the failed-auth limit counts per address)."""
    host: str = ""
    principal: Principal | None = None
    """Whose token authenticated the connection (None with auth off)."""


Handler = Callable[[Session, Command], bytes]


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str  # Redis "full name" used in arity errors, e.g. "task.admin|list"
    arity: int  # as in Redis: n > 0 exactly n words, n < 0 at least -n words (the name included)
    handler: Handler | None = None
    no_auth: bool = False
    subcommands: Mapping[bytes, _Spec] | None = None
    depth: int = 1  # words that name the command (2 for a subcommand)
    op: Operation | None = None  # what it does, for roles (taskward.security.roles.RESP_COMMANDS)


def type_stats_reply(stats: list[TypeStats]) -> Reply:
    """The ``TASK.ADMIN LIST`` reply as a value: the reference shape that ``TypeListCache`` encodes by hand.

    Kronotop answers with simple strings, so redis-cli prints ``1# journal:cleanup-task =>`` unquoted.
    """
    return {Simple(st.name): {Simple("running"): st.running, Simple("completed"): st.completed,
                              Simple("started_at"): st.started_at, Simple("last_run"): st.last_run}
            for st in stats}


def _encode_entry(st: TypeStats, resp: int) -> bytes:
    """One type's key and value, as ``encode(type_stats_reply([st]), resp)`` would write them."""
    if resp >= 3:
        return b"%s%%4\r\n+running\r\n%s+completed\r\n%s+started_at\r\n:%d\r\n+last_run\r\n:%d\r\n" % (
            simple(st.name), b"#t\r\n" if st.running else b"#f\r\n", b"#t\r\n" if st.completed else b"#f\r\n",
            st.started_at, st.last_run)
    return b"%s*8\r\n+running\r\n:%d\r\n+completed\r\n:%d\r\n+started_at\r\n:%d\r\n+last_run\r\n:%d\r\n" % (
        simple(st.name), st.running, st.completed, st.started_at, st.last_run)


class TypeListCache:
    """The encoded ``TASK.ADMIN LIST`` reply, rebuilt only when the task-type stats change.

    Serving the cached bytes costs a dict lookup, which is what lets pipelined clients get thousands of
    listings per second without loading the node. A rebuild re-encodes only the types whose stats
    changed (entries are memoised by their frozen ``TypeStats``), so a node whose tasks start and finish
    all the time still answers quickly.
    """

    def __init__(self, source: TypeStatsSource, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._clock = clock
        self._version = -1
        self._built_at = 0.0
        self._stats: list[TypeStats] = []
        self._encoded: dict[int, bytes] = {}
        self._entries: dict[int, dict[TypeStats, bytes]] = {}  # per RESP version, current types only

    def reply(self, resp: int) -> bytes:
        version, now = self._source.type_stats_version, self._clock()
        if version != self._version or now - self._built_at > TYPE_LIST_MAX_AGE_S:
            self._stats = self._source.list_task_types()
            self._version, self._built_at = version, now
            self._encoded = {}
        data = self._encoded.get(resp)
        if data is None:
            data = self._encoded[resp] = self._encode(resp)
        return data

    def _encode(self, resp: int) -> bytes:
        old = self._entries.get(resp, {})
        new: dict[TypeStats, bytes] = {}
        n = len(self._stats)
        parts = [b"%%%d\r\n" % n if resp >= 3 else b"*%d\r\n" % (2 * n)]
        for st in self._stats:
            entry = old.get(st)
            if entry is None:
                entry = _encode_entry(st, resp)
            new[st] = entry
            parts.append(entry)
        self._entries[resp] = new
        return b"".join(parts)


class AdminCommands:
    """Dispatches one parsed command for one session and returns the encoded reply."""

    def __init__(self, source: TypeStatsSource, *, server_version: str, access: AccessControl | None = None,
                 token: str | None = None) -> None:
        """``access`` is the node's; ``token`` alone (in-process tests) stands for one shared token, with no
        audit log and no failed-auth limit."""
        self._access = access or AccessControl(TokenTable.build(shared_token=token), limiter=FailedAuthLimiter(0))
        self._server_version = server_version
        self.types = TypeListCache(source)
        task_admin = {
            b"list": _Spec("task.admin|list", 2, self._task_admin_list, depth=2, op=RESP_COMMANDS["task.admin|list"]),
            b"help": _Spec("task.admin|help", 2, self._task_admin_help, depth=2, op=RESP_COMMANDS["task.admin|help"]),
        }
        self._table: dict[bytes, _Spec] = {
            b"hello": _Spec("hello", -1, self._hello, no_auth=True),
            b"auth": _Spec("auth", -2, self._auth, no_auth=True),
            b"ping": _Spec("ping", -1, self._ping),
            b"command": _Spec("command", -1, self._command),
            b"task.admin": _Spec("task.admin", -2, subcommands=task_admin),
        }

    @property
    def auth_required(self) -> bool:
        return self._access.enabled

    def execute(self, session: Session, args: Command) -> bytes:
        name = args[0].lower()
        if name == b"quit":  # Redis answers QUIT before any other check, whatever its arguments
            session.close_after_reply = True
            return OK
        spec = self._table.get(name)
        if spec is None:
            return _unknown_command(args)
        if spec.subcommands is not None and len(args) >= 2:
            sub = spec.subcommands.get(args[1].lower())
            if sub is None:
                return error(f"ERR unknown subcommand '{_text(args[1], 128)}'. Try {spec.name.upper()} HELP.")
            spec = sub
        n = len(args)
        if (spec.arity > 0 and n != spec.arity) or n < -spec.arity:
            return error(f"ERR wrong number of arguments for '{spec.name}' command")
        if not session.authenticated and not spec.no_auth:
            return NOAUTH
        if spec.op is not None and session.principal is not None:
            try:
                self._access.authorize(session.principal, spec.op, peer=session.peer, surface="resp",
                                       target=spec.name)
            except PermissionDenied as exc:
                return error(f"NOPERM {exc.message}")
        assert spec.handler is not None
        return spec.handler(session, args)

    # ------------------------------------------------------------------ connection commands

    def _hello(self, session: Session, args: Command) -> bytes:
        """``HELLO [protover [AUTH username password] [SETNAME name]]``, checked in Redis's order."""
        version = session.resp
        if len(args) >= 2:
            raw = args[1]
            if not _PROTOVER_RE.fullmatch(raw):
                return error("ERR Protocol version is not an integer or out of range")
            if int(raw) not in (2, 3):
                return error("NOPROTO unsupported protocol version")
            version = int(raw)
        user: bytes | None = None
        password = b""
        name: str | None = None
        i = 2
        while i < len(args):
            opt, more = args[i].lower(), len(args) - 1 - i
            if opt == b"auth" and more >= 2:
                user, password = args[i + 1], args[i + 2]
                i += 3
            elif opt == b"setname" and more >= 1:
                name = _text(args[i + 1], 256)
                if not name or any(c <= " " or c > "~" for c in name):
                    return error("ERR Client names cannot contain spaces, newlines or special characters.")
                i += 2
            else:
                return error(f"ERR Syntax error in HELLO option '{_text(args[i], 128)}'")
        if user is not None and (refused := self._login(session, user, password, "HELLO")) is not None:
            return refused
        if not session.authenticated:
            return HELLO_NOAUTH
        if name is not None:
            session.name = name
        session.resp = version
        return encode({"server": "taskward", "version": self._server_version, "proto": version,
                       "id": session.id, "mode": "standalone", "role": "master", "modules": []}, version)

    def _auth(self, session: Session, args: Command) -> bytes:
        """``AUTH token`` or ``AUTH name token`` (Redis 7's ``AUTH username password``): the name is a tokens
        file entry's, or ``default`` for any entry."""
        if len(args) > 3:
            return error("ERR syntax error")
        if not self._access.enabled and len(args) == 2:
            return error("ERR AUTH <password> called without any password configured for the default user. "
                         "Are you sure your configuration is correct?")
        return self._login(session, args[1] if len(args) == 3 else None, args[-1], "AUTH") or OK

    def _login(self, session: Session, user: bytes | None, password: bytes, attempted: str) -> bytes | None:
        """Authenticate the connection; the error reply, or None when it succeeded. Without tokens
        ``default`` is a no-password user, as in Redis; a blocked address is refused unchecked."""
        name = None if user is None else user.decode("utf-8", "replace")
        if not self._access.enabled:
            if name not in (None, DEFAULT_USER):
                return WRONGPASS
            session.authenticated = True
            return None
        try:
            principal = self._access.authenticate(password, peer=session.peer, host=session.host, surface="resp",
                                                  attempted=attempted, name=name)
        except AuthRateLimited as exc:
            return error(f"ERR {exc.message}")
        except Unauthenticated:
            return WRONGPASS
        session.authenticated = True
        session.principal = principal
        return None

    def _ping(self, session: Session, args: Command) -> bytes:
        if len(args) > 2:
            return error("ERR wrong number of arguments for 'ping' command")
        return PONG if len(args) == 1 else encode(args[1], session.resp)

    def _command(self, session: Session, args: Command) -> bytes:
        """Just enough of ``COMMAND`` for redis-cli: its interactive mode asks ``COMMAND DOCS`` at start
        to build its help, and falls back to its built-in help when the answer is empty."""
        sub = args[1].lower() if len(args) > 1 else b""
        if sub == b"docs":
            return encode({}, session.resp)
        if sub == b"count":
            return encode(0, session.resp)
        if sub in (b"", b"info", b"list", b"getkeys", b"getkeysandflags"):
            return encode([], session.resp)
        return error(f"ERR unknown subcommand '{_text(args[1], 128)}'. Try COMMAND HELP.")

    # ------------------------------------------------------------------ TASK.ADMIN

    def _task_admin_list(self, session: Session, args: Command) -> bytes:
        return self.types.reply(session.resp)

    def _task_admin_help(self, session: Session, args: Command) -> bytes:
        return encode([
            "TASK.ADMIN <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "LIST",
            "    Return this node's registered task types (module:type) with running, completed,",
            "    started_at and last_run.",
            "HELP",
            "    Print this help.",
        ], session.resp)


def _text(raw: bytes, limit: int) -> str:
    return raw[:limit].decode("utf-8", "replace")


def _unknown_command(args: Command) -> bytes:
    """Redis 7's wording: the name as sent, then up to ~128 bytes of quoted arguments."""
    tail = ""
    for arg in args[1:]:
        if len(tail) >= 128:
            break
        tail += f"'{_text(arg, 128 - len(tail))}' "
    return error(f"ERR unknown command '{_text(args[0], 128)}', with args beginning with: {tail}")
