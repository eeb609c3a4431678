"""The Celery app of ``bench/celery_compare.py``: one no-op task, Celery's production-like settings.

The bench builds its client with ``make_app(url)`` and the worker finds ``app`` here
(``celery -A bench._celery_app worker``), so both sides share one configuration. The worker's Redis URL
comes from ``TASKWARD_BENCH_CELERY_REDIS`` (the bench starts its own redis-server on a free loopback port),
and ``app`` is built on first access (PEP 562), so the bench can import this module without a URL and
check for Celery before it imports Celery.

Settings (the rest are Celery's defaults): ``task_acks_late`` (a message is acknowledged only after the
task ran, so a crashed worker does not lose it: the closest Celery comes to taskward's "nothing
acknowledged is lost"), ``worker_prefetch_multiplier=1`` (a worker process reserves one message at a
time), a Redis result backend (so completion is observable), JSON serialization.
"""

from __future__ import annotations

import functools
import os
from typing import Any

REDIS_URL_ENV = "TASKWARD_BENCH_CELERY_REDIS"
NOOP_TASK = "bench.noop"


def noop() -> None:
    """The task body: nothing, as the bench's taskward side runs ``bench:noop`` (``bench/_noop_tasks.py``)."""
    return None


def make_app(redis_url: str) -> Any:
    """A Celery app on ``redis_url`` (``redis://127.0.0.1:PORT``; broker on db 0, results on db 1) with the
    bench's no-op task registered."""
    # Celery ships no type information: its app is used through Any here and in the bench.
    from celery import Celery  # type: ignore[import-untyped]

    celery_app = Celery("taskward_bench", broker=f"{redis_url}/0", backend=f"{redis_url}/1")
    celery_app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,  # silences Celery 5's deprecation warning; the default
    )
    celery_app.task(name=NOOP_TASK)(noop)
    return celery_app


@functools.cache
def _worker_app() -> Any:
    url = os.environ.get(REDIS_URL_ENV, "")
    if not url.startswith("redis://127.0.0.1:"):
        raise RuntimeError(f"{REDIS_URL_ENV} must name the bench's loopback redis-server (got {url!r})")
    return make_app(url)


def __getattr__(name: str) -> Any:
    """``app``, the worker's Celery app (what ``celery -A bench._celery_app`` looks up)."""
    if name == "app":
        return _worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
