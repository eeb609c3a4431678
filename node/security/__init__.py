"""Security of a node and a gateway: TLS (``taskward.security.tls``) and who may call what.

Each concern is a module of its own, imported by name (``from taskward.security import tls``)."""

from __future__ import annotations

__all__: list[str] = []
