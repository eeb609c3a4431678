from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import NodeProc


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    """A real node with the test API and the sample task types of ``tests.sample_tasks``."""
    n = NodeProc(tmp_path / "n1", extra=["--enable-test-api", "--tasks", "tests.sample_tasks"])
    n.start()
    try:
        yield n
    finally:
        code = n.stop()
        assert code == 0, f"node did not stop cleanly ({code}):\n{n.log()}"
