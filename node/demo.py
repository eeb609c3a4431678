"""``taskward demo``: a local 3-node cluster on etcd, a sample cluster operation with live progress,
and what to try next.

Everything runs as real child processes on loopback ports (one etcd member, three nodes, the REST
gateway), exactly as an operator would start them, so what the demo shows works the same against a
deployed cluster. Ctrl-C stops them all, newest first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from taskward.channels import sync_channel
from taskward.logs import LEVELS
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from taskward.processes import ChildExited, ChildProcess, EtcdProcess, GatewayProcess, NodeProcess, port_free

READY_TIMEOUT_S = 30.0
REFRESH_S = 0.1
NODE_PORTS = (7100, 7101, 7102)
GATEWAY = "127.0.0.1:10000"
ADMIN = "127.0.0.1:3320"
C = TypeVar("C", bound=ChildProcess)
INSTALL_ETCD = "etcd was not found on PATH; install it first, e.g. `sudo apt-get install etcd-server` (Debian/Ubuntu)"


class Supervisor:
    """The demo's child processes, stopped newest first."""

    def __init__(self) -> None:
        self.children: list[ChildProcess] = []

    def add(self, child: C) -> C:
        self.children.append(child)
        return child

    def check_alive(self) -> None:
        for child in self.children:
            child.check_alive()

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop(grace_s=15)


def _wait_members(sup: Supervisor, stub: pb_grpc.TaskManagerStub, n: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        sup.check_alive()
        nodes = stub.ListNodes(pb.ListNodesRequest(), timeout=2).nodes
        if len(nodes) == n and any(x.leader for x in nodes):
            return
        time.sleep(0.1)
    raise TimeoutError("the cluster did not form")


def _follow(stub: pb_grpc.TaskManagerStub, root: str, nodes: int) -> pb.TaskStatus:
    """Redraw the cluster operation's rolled-up progress until it finishes; its final status."""
    while True:
        st: pb.TaskStatus = stub.GetTaskStatus(pb.TaskIdRequest(task_id=root, keep=True))
        filled = int(st.progress_fraction * 40)
        done = f"{st.progress_completed:g}/{st.progress_total:g} {st.progress_units}" if st.progress_total else ""
        sys.stdout.write(f"\r  [{'#' * filled}{'.' * (40 - filled)}] {st.progress_fraction:6.1%}  {done}  "
                         f"{len(st.children_ids)}/{nodes} nodes  {st.stats.state:8}")
        sys.stdout.flush()
        if st.stats.state in ("done", "failed"):
            sys.stdout.write("\n")
            return st
        time.sleep(REFRESH_S)


def _start_cluster(sup: Supervisor, data: Path, log_flags: list[str]) -> list[str]:
    """etcd, three nodes and the gateway, each in its own session: Ctrl-C reaches only the demo, which
    then stops them in order."""
    etcd = sup.add(EtcdProcess("etcd", data / "etcd", fast=False)).start(own_session=True).wait_ready(READY_TIMEOUT_S)
    nodes = []
    for i, port in enumerate(NODE_PORTS, start=1):
        extra = ["--etcd", etcd.url, "--tasks", "taskward.demo_tasks", "--shutdown-grace", "1", *log_flags,
                 *(["--admin", ADMIN] if i == 1 else [])]
        nodes.append(sup.add(NodeProcess(data / f"n{i}", node_id=f"n{i}", port=port, extra=extra))
                     .launch(own_session=True))
    gateway = sup.add(GatewayProcess(data, [n.address for n in nodes], port=int(GATEWAY.rpartition(":")[2]),
                                     extra=log_flags))
    gateway.launch(own_session=True)
    for n in nodes:
        n.wait_ready(READY_TIMEOUT_S)
    gateway.wait_ready(READY_TIMEOUT_S)
    return [n.address for n in nodes]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskward demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--once", action="store_true", help="exit after the sample operation instead of waiting")
    p.add_argument("--log-level", default="info", choices=LEVELS, help="log level of the nodes and the gateway")
    p.add_argument("--log-format", default="text", choices=("text", "json"),
                   help="log format of the nodes and the gateway (their logs are files in the demo's folder)")
    return p


def main(argv: Sequence[str]) -> int:
    a = build_parser().parse_args(argv)
    log_flags = ["--log-level", a.log_level, "--log-format", a.log_format]
    # Ctrl-C and SIGTERM stop the demo cleanly at any point. Both explicitly: a process started in the
    # background by a shell without job control inherits SIGINT ignored, and Python keeps it so.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if shutil.which("etcd") is None:
        print(f"error: {INSTALL_ETCD}", file=sys.stderr)
        return 1
    busy = [x for x in (*(f"127.0.0.1:{p}" for p in NODE_PORTS), GATEWAY, ADMIN) if not port_free(x)]
    if busy:
        print(f"error: address(es) already in use: {', '.join(busy)} (is another demo running?)", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="taskward-demo-")  # kept after the demo: its logs say what happened
    sup = Supervisor()
    try:
        nodes = _start_cluster(sup, Path(tmp), log_flags)
        with sync_channel(nodes[1]) as ch:
            stub = pb_grpc.TaskManagerStub(ch)
            _wait_members(sup, stub, len(nodes))
            print(f"taskward demo: 3 nodes on {', '.join(nodes)} (logs and data in {tmp})")
            args = json.dumps({"tables": 3, "batches": 20, "batch_s": 0.1})
            root = stub.StartTask(pb.StartTaskRequest(module="demo", type="reindex", args_json=args, cluster=True,
                                                      keyspace="shop")).task_id
            print(f"started cluster operation demo:reindex {root} on every node (through n2)")
            final = _follow(stub, root, len(nodes))
        done = sum(1 for c in json.loads(final.result_json or "{}").values() if c)
        print(f"operation {root} finished: {final.stats.state} ({done} of {len(nodes)} nodes re-indexed "
              f"{final.progress_total:g} {final.progress_units}){': ' + final.error if final.error else ''}\n")
        _print_tips(root)
        if a.once:
            return 0 if final.stats.state == "done" else 1
        _wait_for_stop_signal("\nPress Ctrl-C to stop the demo.")
        return 0
    except KeyboardInterrupt:  # Ctrl-C before the operation finished
        return 130
    except (ChildExited, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        sup.stop_all()
        print(f"demo stopped; its logs and data are kept in {tmp}")


def _wait_for_stop_signal(prompt: str) -> None:
    """Print ``prompt``, then sleep until SIGINT or SIGTERM. The prompt is printed inside the block that
    takes the signal, so a Ctrl-C that follows it at once is a clean stop too. Python runs signal
    handlers on the main thread whichever thread the kernel picked, and a short sleep returns to the
    interpreter to run them."""
    with contextlib.suppress(KeyboardInterrupt):
        print(prompt, flush=True)
        while True:
            time.sleep(0.2)


def taskward_executable() -> str:
    """How to run ``taskward`` from here, as a person would paste it: ``taskward`` when the one on PATH is
    this installation's, else this installation's script (``.venv/bin/taskward``, relative when below
    the current folder)."""
    script = Path(sys.executable).parent / "taskward"
    on_path = shutil.which("taskward")
    if not script.exists() or (on_path is not None and Path(on_path).resolve() == script.resolve()):
        return "taskward"
    try:
        return os.path.join(".", script.relative_to(Path.cwd()))
    except ValueError:  # not below the current folder
        return str(script)


def tips(root: str, *, taskward: str, have: set[str]) -> list[str]:
    """What to try next: only commands whose tools are installed (``have``), each runnable as pasted."""
    t = taskward
    lines = [
        f"{t} tasks nodes                       # members, leader",
        f"{t} tasks tree {root}   # same answer from any node: -p 7101, -p 7102",
        f"{t} tasks start builtin sleep --cluster --arg duration=30 --arg steps=30 --wait   # progress bar",
        f"{t} tasks list builtin --internal",
        f"{t} tasks wait ID                     # exit 0 done / 123 failed / 124 timed out",
        f"{t} tasks abort ID",
        f"{t} tasks status {root}   # result: what each node's child returned",
    ]
    if "curl" in have:
        lines += [f"curl http://{GATEWAY}/task_manager/list_modules        # OpenAPI: http://{GATEWAY}/docs",
                  f"curl http://{GATEWAY}/task_manager/task_status/{root}"]
    else:
        lines.append(f"open http://{GATEWAY}/docs in a browser           # the REST API, OpenAPI")
    if "redis-cli" in have:
        lines.append(f"redis-cli -3 -p {ADMIN.rpartition(':')[2]} TASK.ADMIN LIST")
    if "grpcurl" in have:
        lines.append("grpcurl -plaintext 127.0.0.1:7100 list      # reflection is on")
    return lines


def _print_tips(root: str) -> None:
    print("Try, in another terminal:")
    have = {tool for tool in ("curl", "redis-cli", "grpcurl") if shutil.which(tool)}
    for line in tips(root, taskward=taskward_executable(), have=have):
        print(f"  {line}")
