"""Worker processes for task types declared with ``executor="process"`` (``pool``: the node's side,
``worker``: the process's side, ``protocol``: what they say to each other)."""

from taskward.procpool.pool import BodyRaised, ProcessPool, Slot, WorkerBroken, WorkerDied, default_size

__all__ = ["BodyRaised", "ProcessPool", "Slot", "WorkerBroken", "WorkerDied", "default_size"]
