"""A leaf's status message is built again exactly when what it shows changed."""

from __future__ import annotations

from datetime import UTC, datetime

from taskward import convert
from taskward.api.grpc.status_messages import StatusMessages
from taskward.model import Progress, TaskRecord, TaskView, new_task_id

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def running() -> TaskRecord:
    return TaskRecord(id=new_task_id(), module="m", type="t", created_at=NOW).started(NOW)


def test_the_same_record_and_progress_answer_the_same_message() -> None:
    messages, rec = StatusMessages(), running()
    first = messages.leaf(TaskView(rec, Progress(1, 10, 900)))
    assert messages.leaf(TaskView(rec, Progress(1, 10, 900))) is first
    assert first == convert.status_to_pb(TaskView(rec, Progress(1, 10, 900)), {})


def test_a_new_record_or_a_new_eta_builds_it_again() -> None:
    messages, rec = StatusMessages(), running()
    first = messages.leaf(TaskView(rec, Progress(1, 10, 900)))
    later = messages.leaf(TaskView(rec, Progress(1, 10, 800)))
    assert later is not first and later.eta_ms == 800
    done = rec.with_progress(10, 10, "all").finished(NOW)
    final = messages.leaf(TaskView(done, Progress(10, 10, 0)))
    assert (final.stats.state, final.progress_completed, final.progress_message) == ("done", 10, "all")


def test_it_keeps_at_most_its_limit() -> None:
    messages = StatusMessages(max_kept=3)
    for _ in range(7):
        messages.leaf(TaskView(running(), Progress(0, 0)))
    assert 1 <= len(messages) <= 3
