"""Each task type's run history on this node, for Kronotop's ``TASK.ADMIN LIST``: when it last
started, whether and when it last finished successfully. Persisted in the transitions themselves, so
the history survives a crash exactly as far as the transitions do."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import orjson

from taskward.middleware.base import FinishInput, RunInput, TaskMiddleware
from taskward.model import TypeStats
from taskward.store import Tx

SETTING_PREFIX = "type:"


class TypeStatsMiddleware(TaskMiddleware):
    def __init__(self) -> None:
        self._stats: dict[str, TypeStats] = {}
        self.version = 0
        """Bumped whenever a listing may change (a run starts or ends): the RESP reply cache keys on it."""

    def load(self, settings: Mapping[str, str]) -> None:
        """Take the persisted history from the node's settings at start-up."""
        for key, value in settings.items():
            if key.startswith(SETTING_PREFIX):
                name = key[len(SETTING_PREFIX):]
                self._stats[name] = TypeStats(name, **json.loads(value))

    def get(self, name: str) -> TypeStats:
        return self._stats.get(name, TypeStats(name))

    def before_run(self, run: RunInput) -> None:
        old = self.get(run.spec.qualified_name)
        self._save(run.tx, TypeStats(old.name, completed=old.completed, started_at=int(time.time()),
                                     last_run=old.last_run))

    def on_completion(self, finish: FinishInput) -> None:
        if finish.spec is not None:
            old = self.get(finish.spec.qualified_name)
            self._save(finish.tx, TypeStats(old.name, completed=True, started_at=old.started_at,
                                            last_run=int(time.time())))

    def after_run(self, finish: FinishInput) -> None:
        self.version += 1  # no longer running

    def on_failure(self, finish: FinishInput) -> None:
        if not finish.ran:
            self.version += 1

    def _save(self, tx: Tx, st: TypeStats) -> None:
        self._stats[st.name] = st
        self.version += 1
        tx.setting(SETTING_PREFIX + st.name, orjson.dumps({"completed": st.completed, "started_at": st.started_at,
                                                           "last_run": st.last_run}).decode())
