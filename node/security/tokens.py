"""Who may call: the bearer tokens a node or gateway accepts, each with a name and a role.

Two sources, both optional, merged into one ``TokenTable``:

- ``--tokens-file FILE`` (TOML): ``[[token]]`` entries with ``name``, ``role`` and either ``token`` (the secret
  itself) or ``sha256`` (lowercase hex of the secret's UTF-8 bytes, so the file need not hold the secret);
- ``--token-file`` / ``TASKWARD_TOKEN``: the one shared token of earlier releases, kept as an entry named
  ``shared-token`` with role ``node``.

Only SHA-256 digests are kept for checking. A presented token is hashed once and compared with every entry
by ``hmac.compare_digest`` without stopping at a match, so the time taken says nothing about which entry
(or how much of one) matched. The table also names the token this process *sends* on its own calls
(node to node, REST to its node, gateway to nodes): ``outgoing``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from taskward.errors import ConfigError
from taskward.security.roles import Role

logger = logging.getLogger(__name__)

SHARED_TOKEN_NAME = "shared-token"
"""The name ``--token-file``/``TASKWARD_TOKEN`` gets in the audit log."""
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENTRY_KEYS = frozenset({"name", "token", "sha256", "role"})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the token's name (audit log) and its role (what it may do)."""

    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    digest: bytes
    plaintext: str | None  # None for a sha256 entry: this process cannot send it


def digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


class TokenTable:
    """The accepted tokens. Empty means auth is off (every caller is let in, no one is named)."""

    def __init__(self, entries: tuple[_Entry, ...] = (), *, outgoing: str | None = None, source: str = "") -> None:
        self._entries = entries
        self._digests = tuple(e.digest for e in entries)
        self.outgoing = outgoing
        """The token this process sends on its own calls (``--token-file``, else the first ``node`` entry
        holding its token in plain text), or None."""
        self.source = source

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    @property
    def principals(self) -> list[Principal]:
        return [e.principal for e in self._entries]

    def authenticate(self, token: str | bytes) -> Principal | None:
        """The principal whose token this is, or None. Compares with every entry whatever matches."""
        given = digest(token)
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(given, entry.digest):
                found = entry.principal
        return found

    # ---------------------------------------------------------------- building

    @classmethod
    def build(cls, *, tokens_file: str = "", shared_token: str | None = None) -> TokenTable:
        """The table from ``--tokens-file`` (path or "") and the ``--token-file``/``TASKWARD_TOKEN`` token.
        Raises ``ConfigError`` with a message naming the file, the entry and what is wrong."""
        entries: list[_Entry] = []
        if tokens_file:
            entries = _load(tokens_file)
        if shared_token is not None:
            for e in entries:
                if e.principal.name == SHARED_TOKEN_NAME:
                    raise ConfigError(f"--tokens-file {tokens_file}: the name {SHARED_TOKEN_NAME!r} is taken by "
                                      "--token-file/TASKWARD_TOKEN; rename the entry")
                if hmac.compare_digest(e.digest, digest(shared_token)):
                    raise ConfigError(f"--tokens-file {tokens_file}: entry {e.principal.name!r} has the same token "
                                      "as --token-file/TASKWARD_TOKEN; give each token once")
            entries.insert(0, _Entry(Principal(SHARED_TOKEN_NAME, Role.NODE), digest(shared_token), shared_token))
        outgoing = shared_token
        if outgoing is None:
            outgoing = next((e.plaintext for e in entries if e.principal.role is Role.NODE and e.plaintext), None)
        return cls(tuple(entries), outgoing=outgoing, source=tokens_file)


def _load(path: str) -> list[_Entry]:
    where = f"--tokens-file {path}"
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"token"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (the file holds [[token]] entries only)")
    raw = data.get("token")
    if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(f"{where}: no [[token]] entries (each with name, role, and token or sha256)")
    entries = [_entry(where, i, t) for i, t in enumerate(raw, 1)]
    seen_names: dict[str, int] = {}
    seen_digests: dict[bytes, str] = {}
    for i, e in enumerate(entries, 1):
        name = e.principal.name
        if name in seen_names:
            raise ConfigError(f"{where}: duplicate name {name!r} (entries {seen_names[name]} and {i})")
        seen_names[name] = i
        if e.digest in seen_digests:
            raise ConfigError(f"{where}: entries {seen_digests[e.digest]!r} and {name!r} have the same token; "
                              "a token names one caller")
        seen_digests[e.digest] = name
    if any(e.plaintext for e in entries) and Path(path).stat().st_mode & 0o077:
        logger.warning("%s holds plain-text tokens and can be read by other users: chmod 600 it", where)
    return entries


def _entry(where: str, index: int, raw: dict[str, object]) -> _Entry:
    name = raw.get("name")
    what = f"{where}: token entry {index}" + (f" ({name!r})" if isinstance(name, str) and name else "")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{what}: unknown key {unknown[0]!r} (expected name, role, and token or sha256)")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what}: missing name")
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{what}: invalid name: expected {NAME_RE.pattern}")
    role_text = raw.get("role")
    if not isinstance(role_text, str):
        raise ConfigError(f"{what}: missing role (read, operate, admin or node)")
    try:
        role = Role.parse(role_text)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    token, sha = raw.get("token"), raw.get("sha256")
    if token is not None and sha is not None:
        raise ConfigError(f"{what}: both token and sha256 given; give one")
    if token is None and sha is None:
        raise ConfigError(f"{what}: missing token or sha256")
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise ConfigError(f"{what}: token must be a non-empty string")
        if token != token.strip():
            raise ConfigError(f"{what}: token has leading or trailing white space")
        return _Entry(Principal(name, role), digest(token), token)
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        raise ConfigError(f"{what}: sha256 must be 64 lowercase hex digits (sha256sum of the token's UTF-8 bytes)")
    return _Entry(Principal(name, role), bytes.fromhex(sha), None)
