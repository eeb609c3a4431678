"""Cluster-state backends behind one interface."""

from taskward.coordinator.store.base import (
    ClusterStore,
    Compare,
    Delete,
    KeyValue,
    Put,
    WatchEvent,
    WatchEventType,
    WatchGap,
)

__all__ = ["ClusterStore", "Compare", "Delete", "KeyValue", "Put", "WatchEvent", "WatchEventType", "WatchGap"]
