"""Executor middleware: cross-cutting concerns of every run, one per file (see ``base``)."""

from taskward.middleware.base import (
    ErrorInput,
    FinishInput,
    ProgressInput,
    RetryDecision,
    RunInput,
    RunLimits,
    TaskMiddleware,
    task_middleware,
)
from taskward.middleware.chain import MiddlewareChain
from taskward.middleware.eta import EtaMiddleware
from taskward.middleware.metrics import TaskMetricsMiddleware
from taskward.middleware.retry import RetryMiddleware
from taskward.middleware.time_limit import TimeLimitMiddleware
from taskward.middleware.type_stats import TypeStatsMiddleware

__all__ = [
    "ErrorInput",
    "EtaMiddleware",
    "FinishInput",
    "MiddlewareChain",
    "ProgressInput",
    "RetryDecision",
    "RetryMiddleware",
    "RunInput",
    "RunLimits",
    "TaskMetricsMiddleware",
    "TaskMiddleware",
    "TimeLimitMiddleware",
    "TypeStatsMiddleware",
    "task_middleware",
]
