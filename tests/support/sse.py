"""A client of an SSE ``/events`` that follows it in a thread, resuming with ``Last-Event-ID`` as a
browser's ``EventSource`` does: after the connection breaks, after a read times out, and on purpose
every ``drop_every`` events (to exercise resumes while the servers do whatever the test makes them do)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.procs import TIMEOUT_MULT


@dataclass(frozen=True, slots=True)
class Frame:
    id: str
    event: str
    data: dict[str, Any]


class SseFollower:
    """Follows ``url`` until ``stop()``; ``frames`` holds every event frame received, in order."""

    def __init__(self, url: str, *, drop_every: int = 0, read_timeout_s: float = 1.0,
                 headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.drop_every = drop_every
        self.read_timeout_s = read_timeout_s
        self.headers = dict(headers or {})
        self.frames: list[Frame] = []
        self.connects = 0
        self.resumes = 0
        self.last_id = ""
        self.errors: list[str] = []
        self.subscribed = threading.Event()
        """Set at the first ``: subscribed`` comment: everything the servers publish later reaches us."""
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="sse-follower", daemon=True)

    def start(self) -> SseFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10 * TIMEOUT_MULT)
        assert not self._thread.is_alive(), "the SSE follower did not stop"

    def wait_for(self, done: Callable[[list[Frame]], bool], timeout: float, what: str) -> None:
        """Until ``done(frames)``; AssertionError naming ``what`` after ``timeout`` (scaled) seconds."""
        deadline = time.monotonic() + timeout * TIMEOUT_MULT
        with self._changed:
            while not done(self.frames):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}: {len(self.frames)} frames, "
                                         f"{self.connects} connects, errors {self.errors[-3:]}")
                self._changed.wait(min(left, 0.5))

    def _run(self) -> None:
        timeout = httpx.Timeout(10.0 * TIMEOUT_MULT, read=self.read_timeout_s)
        with httpx.Client(timeout=timeout) as client:
            while not self._stop.is_set():
                headers = dict(self.headers)
                if self.last_id:
                    headers["last-event-id"] = self.last_id
                    self.resumes += 1
                self.connects += 1
                try:
                    self._read(client, headers)
                except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    self._stop.wait(0.05)  # the gateway restarting, say: a browser waits a little too

    def _read(self, client: httpx.Client, headers: dict[str, str]) -> None:
        received = 0
        with client.stream("GET", self.url, headers=headers) as resp:
            resp.raise_for_status()
            fields: dict[str, str] = {}
            for line in resp.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith(":"):
                    if line == ": subscribed":
                        self.subscribed.set()
                    continue
                if line:
                    key, _, value = line.partition(": ")
                    fields[key] = value
                    continue
                if "data" not in fields:  # EventSource: an id without data moves the last id, dispatches nothing
                    self.last_id = fields.get("id", self.last_id)
                    fields = {}
                    continue
                frame = Frame(fields["id"], fields["event"], json.loads(fields["data"]))
                fields = {}
                with self._changed:
                    self.frames.append(frame)
                    self.last_id = frame.id
                    self._changed.notify_all()
                received += 1
                if self.drop_every and received >= self.drop_every:
                    return  # hang up on purpose: the next connect resumes
