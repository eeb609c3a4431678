"""How the long-running commands (``node``, ``gateway``, ``demo``) log: text for people, JSON lines for
log pipelines, and a task's id on every line that is about a task.

A line is about a task when it was logged with ``extra=task_extra(...)`` (the task's id, module and
type; the module travels as ``task_module``, since a LogRecord's ``module`` is the Python module that
logged): the logger a task body gets (``ctx.log``) adds them to everything it logs, and the node adds
them to what it logs about a task. Records go through a queue drained by a thread, so log
I/O never blocks the event loop. Hand-written rather than a JSON-logging dependency: the format is
six fixed fields and ``json.dumps``, and DESIGN fixes its names.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import time
from typing import Literal

LogFormat = Literal["text", "json"]
LEVELS = ("debug", "info", "warning", "error")


def task_extra(task_id: str, module: str, type_name: str) -> dict[str, str]:
    """``extra`` for a log call about a task: its id, module and type land in the line (both formats)."""
    return {"task_id": task_id, "task_module": module, "type": type_name}


class TextFormatter(logging.Formatter):
    """``2026-12-02 07:45:34,123 INFO taskward.task [task 3f2c… demo:reindex]: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(task)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        task_id = getattr(record, "task_id", "")
        module, type_name = getattr(record, "task_module", ""), getattr(record, "type", "")
        record.task = f" [task {task_id}{f' {module}:{type_name}' if module else ''}]" if task_id else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time, level, logger, message, node`` and, about a task, ``task_id,
    module, type``; an exception's traceback goes into ``exc_info`` (a string), never across lines."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self._node = node

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "node": getattr(record, "node_id", "") or self._node,
        }
        if task_id := getattr(record, "task_id", ""):
            out |= {"task_id": task_id, "module": getattr(record, "task_module", ""),
                    "type": getattr(record, "type", "")}
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: LogFormat = "text", *, node: str = "") -> logging.handlers.QueueListener:
    """Log through a queue drained by a thread; the listener must be stopped at exit (it flushes)."""
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = logging.StreamHandler()
    stream.setFormatter(JsonFormatter(node) if fmt == "json" else TextFormatter())
    listener = logging.handlers.QueueListener(q, stream, respect_handler_level=True)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(level.upper())
    listener.start()
    return listener


def task_logger(task_id: str, module: str, type_name: str, node_id: str) -> logging.LoggerAdapter[logging.Logger]:
    """The logger a task body gets: every line it logs names the task."""
    return logging.LoggerAdapter(logging.getLogger("taskward.task"),
                                 task_extra(task_id, module, type_name) | {"node_id": node_id})
