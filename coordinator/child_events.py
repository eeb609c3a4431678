"""The leader's children, followed through the nodes' event streams instead of polled every cycle.

While this node leads, it keeps one ``WatchEvents`` stream open to every live member, asking only for
events about cluster children's subtrees (``cluster_children_only``: a node running only its own tasks
sends nothing), and records, for every such event, the latest state of that task. The leader then
drives a child from that record rather than asking its node each cycle. The streams stay open while the
cluster is idle, so a cluster start does not pay for opening N of them (and polling N children once more).

No gaps. A node announces a stream in its initial metadata only once the subscription is registered,
so every event it publishes from then on reaches us, in order. Each established stream gets a new
*generation* number; a broken one has none. The leader trusts a child's events only when it polled the
child after its node's current stream was established (``mark`` is taken before the poll is sent):
the poll covers everything before, the stream everything after. A child that this leader's own start
created after its node's stream was established needs no poll: it has nothing before the stream (see
``started``). A broken or re-established stream (node dead or restarted) means polling again, once per
generation, as the leader always did.

What events cannot say, the leader still polls for: a child whose descendants reported (its progress is
rolled up from them, which its own events do not carry) and a child that finished without progress of
its own (its final progress may be such a roll-up), and a child that is done when its node did not send
its result with the completion (an older node, or one that no longer holds the task). Aborts are not
followed at all: abort-requested tasks keep the AbortTask-then-poll path.

Nothing is consumed. A child's latest news, and the answer of its last poll, stay here until no
unfinished cluster task needs them, and ``follow`` applies them to the child *as the committed record
holds it*, on every drive: news or an answer whose write was lost (a compare that failed) is simply
applied again by the next drive, and what is already written changes nothing. ``retain`` forgets a
child's news and its trust together, so a forgotten child is polled before it is followed again.

Defence in depth: a followed child is polled anyway once its last poll is ``reconcile_s`` old (a few
seconds), so an event lost by any future bug costs seconds, never a task stuck ``running``. On an idle
cluster there is nothing to reconcile; while tasks run it is one status call per child every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import grpc

from taskward.coordinator.cache import ClusterSnapshot
from taskward.coordinator.node_client import NodeClients
from taskward.coordinator.records import ClusterChild
from taskward.events import Event, EventType
from taskward.model import TaskState

logger = logging.getLogger(__name__)

RETRY_S = 0.5
RECONCILE_S = 5.0

_STATES = {EventType.STARTED: TaskState.RUNNING, EventType.PROGRESS: TaskState.RUNNING,
           EventType.COMPLETED: TaskState.DONE, EventType.FAILED: TaskState.FAILED, EventType.ABORTED: TaskState.FAILED}


@dataclass(frozen=True, slots=True)
class News:
    """The latest event about one task; ``stamp`` orders receipt across all streams."""

    stamp: int
    state: TaskState
    progress: bool  # carries progress (a started event does not)
    progress_completed: float
    progress_total: float
    error: str
    time: float
    run_started: int = 0
    """``stamp`` of the task's latest started event: a node that restarted runs an interrupted child again
    from the beginning, so its progress after that event is a new run's, lower than the last one's."""
    result_json: str | None = None
    """A completed child's result, when its node sent it with the event (None: ask the node)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """Taken just before a child is polled: the stream generation and receipt stamp at that moment."""

    generation: int
    stamp: int


@dataclass(frozen=True, slots=True)
class _Followed:
    generation: int
    mark: int  # news received after this stamp is newer than what the poll could cover
    polled_at: float  # monotonic time of that poll: the child is polled again after ``reconcile_s``
    answer: ClusterChild  # what the poll said: kept, like news, until a write of it is known to have landed


@dataclass(slots=True)
class _Stream:
    address: str
    instance: str
    task: asyncio.Task[None] | None = None
    generation: int = 0  # 0: not established


class ChildEvents:
    def __init__(self, clients: NodeClients, on_change: Callable[[], None], *, reconcile_s: float = RECONCILE_S
                 ) -> None:
        self._clients = clients
        self._on_change = on_change
        self._reconcile_s = reconcile_s
        self._streams: dict[str, _Stream] = {}
        # (node, cluster task) -> task id -> latest news: one child's own and its descendants'
        self._groups: dict[tuple[str, str], dict[str, News]] = {}
        self._followed: dict[str, _Followed] = {}
        self._generations = 0
        self._stamp = 0

    # ------------------------------------------------------------------ streams

    def sync(self, snap: ClusterSnapshot) -> None:
        """One stream per live member (called each cycle while leading). A member that restarted (new
        instance) or moved gets a new stream at once rather than after the old one notices; a member that
        left loses its stream."""
        members = snap.members
        for node in [n for n, s in self._streams.items()
                     if n not in members or (s.address, s.instance) != (members[n].address, members[n].instance)]:
            self._drop(node)
        for node, m in members.items():
            if node not in self._streams:
                s = _Stream(m.address, m.instance)
                s.task = asyncio.get_running_loop().create_task(self._follow(node, s), name=f"child-events[{node}]")
                self._streams[node] = s

    def _drop(self, node: str) -> None:
        s = self._streams.pop(node)
        s.generation = 0
        if s.task is not None:
            s.task.cancel()

    async def close(self) -> None:
        """Stop every stream and forget everything: on leadership loss and on shutdown."""
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        for node in list(self._streams):
            self._drop(node)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._groups.clear()
        self._followed.clear()

    @property
    def active(self) -> bool:
        return bool(self._streams)

    async def _follow(self, node: str, s: _Stream) -> None:
        while True:
            stream = self._clients.live_events(s.address)
            try:
                if await stream.subscribed():  # an older node never says so (nor fills cluster_parent_id)
                    self._generations += 1
                    s.generation = self._generations
                    logger.debug("following events of %s (generation %d)", node, s.generation)
                async for ev, result_json in stream:
                    self._record(node, ev, result_json)
            except grpc.aio.AioRpcError as exc:
                logger.debug("event stream of %s ended: %s", node, exc.code().name)
            finally:
                s.generation = 0
                stream.cancel()
            await asyncio.sleep(RETRY_S)

    def _record(self, node: str, ev: Event, result_json: str | None = None) -> None:
        state = _STATES.get(ev.type)
        if not ev.cluster_parent or state is None:
            return
        self._stamp += 1
        group = self._groups.setdefault((node, ev.cluster_parent), {})
        started = ev.type is EventType.STARTED
        before = group.get(ev.task_id)
        group[ev.task_id] = News(
            stamp=self._stamp, state=state, progress=not started, progress_completed=ev.progress_completed,
            progress_total=ev.progress_total, error=ev.error, time=float(int(ev.time)),
            run_started=self._stamp if started else before.run_started if before is not None else 0,
            result_json=result_json,
        )
        if state.finished:
            self._on_change()  # a child (or a descendant) finished: worth a cycle now, not at the next tick

    # ------------------------------------------------------------------ the leader's questions

    def trusted(self, c: ClusterChild) -> bool:
        """Whether ``c`` is followed from its node's stream now (polled since the stream was established)."""
        f = self._followed.get(c.task_id)
        s = self._streams.get(c.node)
        return f is not None and s is not None and s.generation == f.generation != 0

    def mark(self, node: str) -> Mark:
        return Mark(self._streams[node].generation if node in self._streams else 0, self._stamp)

    def polled(self, c: ClusterChild, mark: Mark) -> None:
        """The child was just polled successfully, after ``mark``: its events can be trusted from there."""
        if mark.generation and c.task_id:
            self._followed[c.task_id] = _Followed(mark.generation, mark.stamp, time.monotonic(), c)

    def started(self, c: ClusterChild, mark: Mark) -> None:
        """The child was just created by a start sent after ``mark``: everything it will ever publish comes
        after its node's stream was established (when ``mark`` has a generation), so it is trusted as if
        polled at ``mark``. Only for a child the start created: the caller knows by the id it drew itself
        coming back; a start answered with an older task's id (same idempotency key) must be polled."""
        self.polled(c, mark)

    def follow(self, cluster_id: str, c: ClusterChild) -> ClusterChild | None:
        """The child (as the committed record holds it) moved on by its news, or None when it must be polled.

        Pure in its news: asking twice gives the same answer, so a drive whose write is lost and the
        drive that repeats it both carry the news."""
        if not self.trusted(c):
            return None  # never polled since this stream was established: there may be a gap
        f = self._followed[c.task_id]
        if time.monotonic() - f.polled_at >= self._reconcile_s:
            return None  # reconcile: trust the stream, but check the node now and then
        c = behind(c, f.answer)
        group = self._groups.get((c.node, cluster_id))
        if group is None:
            return c
        if any(n.stamp > f.mark for tid, n in group.items() if tid != c.task_id):
            return None  # a descendant changed: the child's rolled-up progress is only known by polling
        own = group.get(c.task_id)
        if own is None or own.stamp <= f.mark:
            return c
        if own.state.finished and own.progress_total == 0:
            return None  # no progress of its own: its final progress may be rolled up from descendants
        if own.state is TaskState.DONE and own.result_json is None:
            return None  # done, and its node did not send what it returned: read it from its status, once
        return apply(c, own, new_run=own.run_started > f.mark)

    def retain(self, live: set[tuple[str, str, str]]) -> None:
        """Forget what no unfinished cluster task needs: ``live`` holds (cluster task, node, child id).

        ``live`` comes from the snapshot a cycle started with, which may lag the records: a child it
        lacks loses its news *and* its trust together (both are keyed by what ``live`` holds), so it is
        polled before it is followed again, and nothing it did in between is missed."""
        groups = {(node, cid) for cid, node, _ in live}
        children = {tid for _, _, tid in live}
        for key in [k for k in self._groups if k not in groups]:
            del self._groups[key]
        for tid in [t for t in self._followed if t not in children]:
            del self._followed[tid]


def behind(c: ClusterChild, answer: ClusterChild) -> ClusterChild:
    """``c`` as the last poll found it, when the record (whose write of that answer may have lost its
    compare) has not caught up: a poll's answer, like news, is carried by every drive that repeats it."""
    if c.state.finished or answer.task_id != c.task_id:
        return c
    if answer.state.finished:
        return replace(c, state=answer.state, error=answer.error, progress_completed=answer.progress_completed,
                       progress_total=answer.progress_total, end_time=answer.end_time, result_json=answer.result_json)
    if answer.progress_completed > c.progress_completed:  # progress never goes back within a run
        return replace(c, state=answer.state, progress_completed=answer.progress_completed,
                       progress_total=answer.progress_total)
    return c


def apply(c: ClusterChild, news: News, *, new_run: bool = False) -> ClusterChild:
    """``c`` moved on by ``news``. A finished child never changes again (the leader does not follow it);
    progress that would go back within a run is taken for an event older than the poll it followed.
    ``new_run``: the child started again after that poll (its node restarted and re-queued it), so its
    progress starts over and is taken as it is."""
    if c.state.finished:
        return c
    if news.state.finished:
        return replace(c, state=news.state, error=news.error, progress_completed=news.progress_completed,
                       progress_total=news.progress_total, end_time=news.time,
                       result_json=news.result_json if news.result_json is not None else c.result_json)
    c = replace(c, state=news.state)
    stale = not new_run and news.progress_total == c.progress_total and news.progress_completed < c.progress_completed
    if news.progress and not stale:
        c = replace(c, progress_completed=news.progress_completed, progress_total=news.progress_total)
    return c
