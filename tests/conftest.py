from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import NodeProc

NODE_ARGS = ["--enable-test-api", "--tasks", "tests.sample_tasks"]


def _serve(n: NodeProc) -> Iterator[NodeProc]:
    n.start()
    try:
        yield n
    finally:
        code = n.stop()
        assert code == 0, f"node did not stop cleanly ({code}):\n{n.log()}"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    """A real node with the test API and the sample task types of ``tests.sample_tasks``."""
    yield from _serve(NodeProc(tmp_path / "n1", extra=NODE_ARGS))


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    """Like ``node`` but shared by a module's tests, for checks that only compare before/after."""
    yield from _serve(NodeProc(tmp_path_factory.mktemp("shared") / "n1", extra=NODE_ARGS))
