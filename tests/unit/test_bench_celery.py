"""``bench/celery_compare.py`` without its optional parts: it names what is missing and how to install
it, exits with code 2 and leaves nothing behind (Celery and redis-server are a bench extra, not test
tools)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = ("Install them with:\n"
           "  .venv/bin/pip install 'celery[redis]'\n"
           "  apt-get install -y redis-server\n")
# Runs the bench as `python -m bench.celery_compare` would, with `import celery` made to fail first.
WITHOUT_CELERY = ("import runpy, sys; sys.modules['celery'] = None; sys.argv = ['celery_compare']; "
                  "runpy.run_module('bench.celery_compare', run_name='__main__')")


def celery_importable() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("celery", "redis"))


@pytest.mark.parametrize("celery_blocked", [True, False], ids=["no-celery-no-redis-server", "no-redis-server"])
def test_missing_dependencies_are_named_with_install_commands(tmp_path: Path, celery_blocked: bool) -> None:
    cmd = [sys.executable, "-c", WITHOUT_CELERY] if celery_blocked else [sys.executable, "-m", "bench.celery_compare"]
    # A PATH with nothing on it: no redis-server (the bench finds its interpreter by absolute path).
    empty_bin, scratch = tmp_path / "bin", tmp_path / "tmp"
    empty_bin.mkdir()
    scratch.mkdir()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
                         env={"PATH": str(empty_bin), "TMPDIR": str(scratch)})
    missing = [] if celery_importable() and not celery_blocked else \
        ["the Python package celery[redis] (celery cannot be imported)"]
    missing.append("redis-server (not on PATH)")
    assert out.returncode == 2, out.stderr
    assert out.stderr == (f"celery_compare needs Celery 5 with its Redis client and a redis-server binary; "
                          f"missing: {'; '.join(missing)}.\n{INSTALL}")
    assert out.stdout == ""
    assert list(scratch.iterdir()) == []  # no scratch dir: the check comes before anything is started
