"""RESP3 admin against the REAL redis-cli (Debian ``redis-tools``): one-shot, interactive, auth."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.procs import TIMEOUT_MULT
from tests.support.resp_client import AdminNode, RespError, admin_node, needs_redis_cli

pytestmark = needs_redis_cli

TOKEN = "s3cret-admin-token"


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminNode]:
    with admin_node(tmp_path_factory.mktemp("resp") / "n1") as a:
        yield a


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminNode]:
    with admin_node(tmp_path_factory.mktemp("resp-auth") / "n1", token=TOKEN) as a:
        yield a


def redis_cli(port: int, *args: str, resp3: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["redis-cli", *(["-3"] if resp3 else []), "-h", "127.0.0.1", "-p", str(port), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20 * TIMEOUT_MULT, check=False)


def type_entry(screen: str, name: str) -> dict[str, str]:
    """The four fields of ``name`` in redis-cli's ``--no-raw`` RESP3 map rendering."""
    m = re.search(rf"\d+# {re.escape(name)} => \n((?:   \d# \w+ => .*\n){{4}})", screen)
    assert m, f"{name} not found in:\n{screen}"
    return dict(re.findall(r"# (\w+) => (.*)", m.group(1)))


# ---------------------------------------------------------------------------- one-shot


def test_task_admin_list_looks_like_kronotop(admin: AdminNode) -> None:
    out = redis_cli(admin.admin_port, "--no-raw", "TASK.ADMIN", "LIST")
    assert out.returncode == 0, out.stderr
    # Kronotop's documented rendering: unquoted names, booleans as (true)/(false), integers.
    assert re.search(r"^\d+# builtin:sleep => \n   1# running => \((true|false)\)\n   2# completed => "
                     r"\((true|false)\)\n   3# started_at => \(integer\) \d+\n   4# last_run => \(integer\) \d+$",
                     out.stdout, re.M), out.stdout
    assert set(type_entry(out.stdout, "builtin:fail")) == {"running", "completed", "started_at", "last_run"}


def test_task_admin_list_raw_and_resp2(admin: AdminNode) -> None:
    raw = redis_cli(admin.admin_port, "task.admin", "list")  # stdout is a pipe: redis-cli prints raw
    assert raw.returncode == 0 and "builtin:sleep" in raw.stdout and "started_at" in raw.stdout
    resp2 = redis_cli(admin.admin_port, "--no-raw", "TASK.ADMIN", "LIST", resp3=False)
    assert resp2.returncode == 0
    # RESP2 degrades the map to a flat array and booleans to integers, as Redis does.
    assert re.search(r'\d+\) builtin:sleep\n\d+\) 1\) running\n   2\) \(integer\) [01]\n', resp2.stdout), resp2.stdout


def test_ping_and_hello(admin: AdminNode) -> None:
    assert redis_cli(admin.admin_port, "PING").stdout.strip() == "PONG"
    assert redis_cli(admin.admin_port, "--no-raw", "ping", "hi there").stdout.strip() == '"hi there"'
    hello = redis_cli(admin.admin_port, "--no-raw", "HELLO", "3").stdout
    assert '"proto" => (integer) 3' in hello and '"server" => "taskward"' in hello
    assert "NOPROTO" in redis_cli(admin.admin_port, "HELLO", "4").stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["NOSUCH", "a"], "(error) ERR unknown command 'NOSUCH', with args beginning with: 'a'"),
    (["TASK.ADMIN"], "(error) ERR wrong number of arguments for 'task.admin' command"),
    (["TASK.ADMIN", "LIST", "x"], "(error) ERR wrong number of arguments for 'task.admin|list' command"),
    (["PING", "a", "b"], "(error) ERR wrong number of arguments for 'ping' command"),
    (["TASK.ADMIN", "NOPE"], "(error) ERR unknown subcommand 'NOPE'. Try TASK.ADMIN HELP."),
])
def test_errors_as_redis_words_them(admin: AdminNode, args: list[str], expected: str) -> None:
    out = redis_cli(admin.admin_port, "--no-raw", *args)
    assert out.stdout.strip() == expected


# ---------------------------------------------------------------------------- interactive


def interactive(port: int, lines: list[str], *extra: str) -> str:
    """Drive ``redis-cli -3 -p PORT`` on a pseudo-terminal and return everything it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(["redis-cli", "-3", "-p", str(port), *extra], stdin=slave, stdout=slave,
                            stderr=slave, env={**os.environ, "TERM": "dumb"})
    os.close(slave)
    screen = b""
    prompt = f"127.0.0.1:{port}> ".encode()

    def read_until_prompt(count: int) -> None:
        nonlocal screen
        deadline = time.monotonic() + 15 * TIMEOUT_MULT
        while screen.count(prompt) < count and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    screen += os.read(master, 65536)
                except OSError:
                    return

    try:
        read_until_prompt(1)
        for i, line in enumerate(lines, start=2):
            os.write(master, line.encode() + b"\n")
            read_until_prompt(i)
        os.write(master, b"quit\n")
        assert proc.wait(10 * TIMEOUT_MULT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return screen.decode(errors="replace").replace("\r\n", "\n")


def test_interactive_redis_cli(admin: AdminNode) -> None:
    screen = interactive(admin.admin_port, ["TASK.ADMIN LIST", "ping", "bogus"])
    assert type_entry(screen, "builtin:sleep")["running"] in ("(true)", "(false)")
    assert "PONG" in screen
    assert "(error) ERR unknown command 'bogus'" in screen


# ---------------------------------------------------------------------------- values


def test_values_follow_a_builtin_sleep_run(admin: AdminNode) -> None:
    def sleep_entry() -> dict[str, str]:
        return type_entry(redis_cli(admin.admin_port, "--no-raw", "TASK.ADMIN", "LIST").stdout, "builtin:sleep")

    before = int(time.time())
    tid = admin.node.stub().StartTask(pb.StartTaskRequest(module="builtin", type="sleep",
                                                          args_json='{"duration": 1.0, "steps": 10}')).task_id
    deadline = time.monotonic() + 10 * TIMEOUT_MULT
    while (entry := sleep_entry())["running"] != "(true)":
        assert time.monotonic() < deadline, entry
        time.sleep(0.05)
    assert int(entry["started_at"].removeprefix("(integer) ")) >= before
    admin.node.stub().WaitTask(pb.WaitTaskRequest(task_id=tid, timeout=20 * TIMEOUT_MULT))
    entry = sleep_entry()
    assert entry["running"] == "(false)" and entry["completed"] == "(true)"
    last_run = int(entry["last_run"].removeprefix("(integer) "))
    started_at = int(entry["started_at"].removeprefix("(integer) "))
    assert before <= started_at <= last_run <= int(time.time())


# ---------------------------------------------------------------------------- auth


def test_noauth_before_auth(secured: AdminNode) -> None:
    out = redis_cli(secured.admin_port, "TASK.ADMIN", "LIST")
    assert "NOAUTH Authentication required." in out.stdout
    assert "HELLO 3 failed: NOAUTH" in out.stderr  # redis-cli's own handshake is refused, as by Redis
    with secured.conn() as c:
        assert c.call("PING") == RespError("NOAUTH Authentication required.")
        assert c.call("TASK.ADMIN", "LIST") == RespError("NOAUTH Authentication required.")
        assert c.call("NOSUCH") == RespError("ERR unknown command 'NOSUCH', with args beginning with: ")


def test_wrong_token_is_wrongpass(secured: AdminNode) -> None:
    out = redis_cli(secured.admin_port, "--pass", "nope", "PING")
    assert "WRONGPASS invalid username-password pair or user is disabled." in out.stderr
    with secured.conn() as c:
        wrongpass = RespError("WRONGPASS invalid username-password pair or user is disabled.")
        assert c.call("AUTH", "nope") == wrongpass
        assert c.call("AUTH", "someone", TOKEN) == wrongpass
        assert c.call("HELLO", "3", "AUTH", "default", "nope") == wrongpass
        assert c.call("PING") == RespError("NOAUTH Authentication required.")


@pytest.mark.parametrize("login", [["--pass", TOKEN], ["--user", "default", "--pass", TOKEN]])
def test_redis_cli_with_token(secured: AdminNode, login: list[str]) -> None:
    out = redis_cli(secured.admin_port, "--no-raw", *login, "TASK.ADMIN", "LIST")
    assert out.returncode == 0
    assert type_entry(out.stdout, "builtin:sleep")["completed"] in ("(true)", "(false)")
    screen = interactive(secured.admin_port, ["TASK.ADMIN LIST"], *login)
    assert "builtin:sleep =>" in screen and "NOAUTH" not in screen


def test_auth_commands(secured: AdminNode) -> None:
    with secured.conn() as c:
        hello = c.call("HELLO", "3", "AUTH", "default", TOKEN)
        assert hello["proto"] == 3 and hello["server"] == b"taskward"
        assert isinstance(c.call("TASK.ADMIN", "LIST"), dict)
    with secured.conn() as c:
        assert c.call("AUTH", TOKEN) == "OK"
        assert c.call("PING") == "PONG"
    with secured.conn() as c:
        assert c.call("AUTH", "default", TOKEN) == "OK"
        assert isinstance(c.call("TASK.ADMIN", "LIST"), list)  # still RESP2: flat array


def test_auth_without_token_configured(admin: AdminNode, tmp_path: Path) -> None:
    with admin.conn() as c:
        reply = c.call("AUTH", "x")
        assert isinstance(reply, RespError) and reply.text.startswith("ERR AUTH <password> called without")
        assert c.call("AUTH", "default", "anything") == "OK"  # Redis's nopass default user
