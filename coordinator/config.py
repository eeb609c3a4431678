"""Coordinator configuration, validated once (Patroni's timing rule)."""

from __future__ import annotations

from dataclasses import dataclass

from taskward.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinatorConfig:
    etcd_endpoints: tuple[str, ...] = ()
    cluster: str = "default"
    lease_ttl_s: int = 6
    loop_interval_s: float = 0.5
    etcd_timeout_s: float = 2.0
    dead_node_grace_s: float = 60.0
    child_rpc_timeout_s: float = 2.0
    reconcile_interval_s: float = 5.0
    """A child followed through its node's events is still polled this often (defence in depth)."""
    etcd_cacert: str = ""
    etcd_cert: str = ""
    etcd_key: str = ""
    etcd_user: str = ""
    etcd_password: str = ""

    def __post_init__(self) -> None:
        if self.loop_interval_s + 2 * self.etcd_timeout_s > self.lease_ttl_s:
            raise ConfigError("need loop_interval_s + 2*etcd_timeout_s <= lease_ttl_s")
        if self.reconcile_interval_s <= 0:
            raise ConfigError("reconcile interval must be > 0")
        if self.dead_node_grace_s < 0:
            raise ConfigError("dead node grace must be >= 0")
        if not self.cluster or "/" in self.cluster:
            raise ConfigError("cluster name must be non-empty and contain no '/'")

    @property
    def prefix(self) -> str:
        return f"/taskward/{self.cluster}/"
