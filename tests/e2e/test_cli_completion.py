"""Shell completion as README says to set it up: bash, through argcomplete's own hook, in a real bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import REPO

BIN = Path(sys.executable).parent


def bash_complete(line: str) -> list[str]:
    """What pressing Tab after ``line`` offers in a bash that ran README's ``eval`` line."""
    words = line.split() + ([""] if line.endswith(" ") else [])
    script = (
        'eval "$(register-python-argcomplete taskward)"\n'
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9\n"
        f"_python_argcomplete taskward {words[-1]!r} {words[-2]!r}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
                         env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    return sorted(w.strip() for w in out.stdout.splitlines() if w.strip())


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize(("line", "offered"), [
    ("taskward ", ["--help", "--version", "-h", "cron", "demo", "gateway", "node", "tasks"]),
    ("taskward tasks st", ["start", "status"]),
    ("taskward node --log-f", ["--log-format"]),
    ("taskward cron run", ["run-now"]),
    ("taskward demo --on", ["--once"]),
])
def test_bash_completes_commands_subcommands_and_flags(line: str, offered: list[str]) -> None:
    assert bash_complete(line) == offered
