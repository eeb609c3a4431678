"""Access control of one process (a node or a gateway): authenticate, authorize, audit — the one flow every
surface follows, so gRPC, REST and RESP refuse, count and log alike.

1. ``authenticate``: a blocked address is refused before its token is looked at (``AuthRateLimited``); an
   unknown token is ``Unauthenticated``, counted against the address and audited; no token at all is
   ``Unauthenticated`` too, audited (bounded) but not counted (``failed_auth``).
2. ``authorize``: the principal's role against the operation's; a refusal is ``PermissionDenied`` and audited.
3. ``audit``: a mutating call's line, written before the call is answered.

With auth off (no tokens) nobody is named, everything is allowed, and mutations are still audited (with
``token_name`` null) when the process has an audit log.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from taskward.errors import AuthRateLimited, ConfigError, PermissionDenied, Unauthenticated
from taskward.security.audit import AuditLog, Surface
from taskward.security.failed_auth import FailedAuthLimiter
from taskward.security.roles import AUTHENTICATE, Operation, allows, denial
from taskward.security.tokens import Principal, TokenTable

if TYPE_CHECKING:
    from taskward.config import AuthConfig

logger = logging.getLogger(__name__)

MAX_TARGET = 256
AUDITED_KEY = "taskward-audited"
"""gRPC metadata of a call that a node's own REST surface forwards after auditing it (value: ``hop_secret``)."""
DEFAULT_USER = "default"
"""The username that names no entry: ``AUTH default TOKEN`` is any entry's token (Redis's default user)."""


class AccessControl:
    """The tokens, the failed-auth limiter and the audit log (None: no audit) of one process."""

    def __init__(self, tokens: TokenTable, *, audit: AuditLog | None = None,
                 limiter: FailedAuthLimiter | None = None) -> None:
        self.tokens = tokens
        self.audit_log = audit
        self.limiter = limiter or FailedAuthLimiter()
        self.hop_secret = secrets.token_hex(16)
        """Sent by this node's own REST surface on the calls it forwards to this node's gRPC (over loopback;
        it never leaves the host). Such a call was authenticated, counted and audited by REST already: gRPC
        checks its token but neither counts it against the address (the REST clients' failures must not
        block REST's own hop) nor writes a second audit line."""

    @property
    def enabled(self) -> bool:
        return self.tokens.enabled

    def authenticate(self, token: str | bytes | None, *, peer: str, host: str, surface: Surface, attempted: str,
                     name: str | None = None, own_hop: bool = False) -> Principal | None:
        """The caller's principal (None with auth off). ``name`` (RESP's ``AUTH name token``) must then be
        the entry's name, or ``default``. Raises ``AuthRateLimited`` or ``Unauthenticated``."""
        if not self.tokens.enabled:
            return None
        wait = 0 if own_hop else self.limiter.blocked(host)
        if wait:
            raise AuthRateLimited(host, wait)
        if not token:  # no token at all: not a guess (see failed_auth), refused and audited within bounds
            if self.limiter.missing(host):
                self._note_failure(peer, surface, attempted, "unauthenticated")
            raise Unauthenticated()
        principal = self.tokens.authenticate(token)
        if principal is not None and name is not None and name != DEFAULT_USER \
                and not hmac.compare_digest(name.encode(), principal.name.encode()):
            principal = None
        if principal is None:
            now_blocked = self.limiter.failed(host)
            self._note_failure(peer, surface, attempted, "unauthenticated")
            if now_blocked:
                self._note_failure(peer, surface, attempted, "blocked")
            raise Unauthenticated()
        return principal

    def _note_failure(self, peer: str, surface: Surface, attempted: str, outcome: str) -> None:
        if self.audit_log is not None:
            self.audit_log.note(token_name=None, peer=peer, surface=surface, operation=AUTHENTICATE.name,
                                target=clip(attempted), outcome=outcome)

    def authorize(self, principal: Principal | None, op: Operation, *, peer: str, surface: Surface,
                  target: str | Callable[[], str]) -> None:
        """Raises ``PermissionDenied`` (audited) unless the principal's role allows ``op``; None (auth off)
        is allowed everything. ``target`` may be a function: it is worked out only for a refusal's line."""
        if principal is None or allows(principal.role, op):
            return
        if self.audit_log is not None:
            self.audit_log.note(token_name=principal.name, peer=peer, surface=surface, operation=op.name,
                                target=clip(target if isinstance(target, str) else target()), outcome="denied")
        raise PermissionDenied(denial(principal.role, op))

    async def audit(self, principal: Principal | None, op: Operation, *, peer: str, surface: Surface, target: str,
                    outcome: str, **extra: str) -> None:
        """The line of a mutating call, written before the call is answered."""
        if self.audit_log is not None:
            await self.audit_log.record(token_name=principal.name if principal else None, peer=peer,
                                        surface=surface, operation=op.name, target=clip(target), outcome=outcome,
                                        **extra)

    def is_own_hop(self, value: str | bytes) -> bool:
        """Whether a forwarded call carries this process's own ``hop_secret`` (constant time)."""
        given = value.encode() if isinstance(value, str) else value
        return hmac.compare_digest(given, self.hop_secret.encode())


def build_access(auth: AuthConfig) -> AccessControl:
    """A process's access control from its settings: one for all of its surfaces, so a guesser cannot
    switch surface to start counting again. The audit log is opened by ``start_audit_log``."""
    return AccessControl(auth.tokens, audit=AuditLog(auth.audit_log) if auth.audit_log else None,
                         limiter=FailedAuthLimiter(auth.failure_limit, auth.failure_window_s))


def start_audit_log(access: AccessControl) -> None:
    """Open the audit log before any surface serves; a file that cannot be opened stops the start (exit 2)."""
    if access.audit_log is None:
        return
    try:
        access.audit_log.start()
    except OSError as exc:
        raise ConfigError(f"cannot open --audit-log {access.audit_log.path}: {exc.strerror or exc}") from None
    logger.info("audit log: %s", access.audit_log.path)


def clip(text: str) -> str:
    """Targets come from callers: bounded, so a huge id cannot make a huge audit line."""
    return text if len(text) <= MAX_TARGET else text[:MAX_TARGET] + "…"


def peer_text(host: str, port: int | str) -> str:
    """``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
