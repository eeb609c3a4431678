"""Built ``TaskStatus`` messages of this node's leaf tasks, answered again while nothing they show changed.

Reading a status is the call clients make most (a poll loop, the dashboard, the CLI's ``status``), and
building its message (two dozen fields, a timestamp, the stats sub-message) is most of the node's own
work for it. In a server busy with gRPC's own work that building runs on cold caches and costs several
times what it costs in a tight loop. A record never changes in place (a task that changed has a new
record object), so a message built from the same record with the same progress is the same message.

Only leaves are kept: a parent's status lists its children (with their nodes' addresses) and rolls up
their progress, so it is built anew each time. The messages handed out are shared: a caller may
serialize or copy one (as a repeated field does), never change it.
"""

from __future__ import annotations

from taskward import convert
from taskward.model import Progress, TaskRecord, TaskView
from taskward.pb.taskward.v1 import tasks_pb2 as pb

MAX_KEPT = 4096
"""Messages kept at most; beyond it all are dropped at once (rebuilding one costs one call's work)."""

_NO_ADDRESSES: dict[str, str] = {}


class StatusMessages:
    def __init__(self, max_kept: int = MAX_KEPT) -> None:
        self._max_kept = max_kept
        self._kept: dict[str, tuple[TaskRecord, Progress, pb.TaskStatus]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def leaf(self, view: TaskView) -> pb.TaskStatus:
        """The status message of ``view``, a task without children (the caller checks)."""
        rec, progress = view.record, view.progress
        kept = self._kept.get(rec.id)
        if kept is not None and kept[0] is rec and kept[1] == progress:
            return kept[2]
        msg = convert.status_to_pb(view, _NO_ADDRESSES)
        if len(self._kept) >= self._max_kept:
            self._kept.clear()
        self._kept[rec.id] = (rec, progress, msg)
        return msg
