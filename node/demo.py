"""``taskward demo``: a local node, a sample operation with live progress, and what to try next.

The node runs as a real child process (exactly as ``taskward node`` would), so everything shown
here works the same against a deployed node.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.pb.taskward.v1 import tasks_pb2 as pb
from node.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc

READY_TIMEOUT_S = 20.0
REFRESH_S = 0.1


def _wait_ready(channel: grpc.Channel, proc: subprocess.Popen[bytes]) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the node exited with code {proc.returncode}")
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            time.sleep(0.1)
    raise SystemExit("error: the node did not become ready")


def _follow(stub: pb_grpc.TaskManagerStub, root: str) -> str:
    """Redraw the operation's rolled-up progress until it finishes; returns its final state.

    Reading the status of a finished root unregisters it (ScyllaDB semantics), so the last poll
    is also the one that clears the finished operation away.
    """
    while True:
        st = stub.GetTaskStatus(pb.TaskIdRequest(task_id=root))
        filled = int(st.progress_fraction * 40)
        eta = f"eta {st.eta_ms / 1000:.1f}s" if st.HasField("eta_ms") and st.stats.state == "running" else ""
        sys.stdout.write(f"\r  [{'#' * filled}{'.' * (40 - filled)}] {st.progress_fraction:6.1%} {eta:12}")
        sys.stdout.flush()
        if st.stats.state in ("done", "failed"):
            sys.stdout.write("\n")
            return st.stats.state
        time.sleep(REFRESH_S)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="taskward demo", description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:7100", help="node gRPC address (default 127.0.0.1:7100)")
    p.add_argument("--once", action="store_true", help="exit after the sample operation instead of waiting")
    a = p.parse_args(argv)
    port = a.listen.rpartition(":")[2]
    with tempfile.TemporaryDirectory(prefix="taskward-demo-") as tmp:
        log_path = Path(tmp) / "node.log"
        cmd = [sys.executable, "-m", "node.cli", "node", "--id", "demo-1", "--listen", a.listen,
               "--data-dir", str(Path(tmp) / "demo-1"), "--tasks", "node.demo_tasks", "--shutdown-grace", "1"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        channel = grpc.insecure_channel(a.listen)
        try:
            _wait_ready(channel, proc)
            stub = pb_grpc.TaskManagerStub(channel)
            print(f"taskward node demo-1 is serving gRPC on {a.listen} (data in {tmp})")
            args = json.dumps({"tables": 3, "batches": 20, "batch_s": 0.1})
            root = stub.StartTask(pb.StartTaskRequest(module="demo", type="reindex", args_json=args,
                                                      keyspace="shop")).task_id
            print(f"started demo:reindex {root} (one child task per table)")
            state = _follow(stub, root)
            print(f"operation {root} finished: {state}\n")
            print("Try, in another terminal:")
            for line in (
                "taskward tasks modules",
                "taskward tasks list demo",
                "taskward tasks start demo reindex --arg tables=5 --keyspace shop",
                "taskward tasks tree          # every root with its children, BFS",
                "taskward tasks start builtin sleep --arg duration=30 --arg steps=30",
                "taskward tasks list builtin --internal",
                "taskward tasks wait ID        # progress bar; exit 0 done / 123 failed / 124 timeout",
                "taskward tasks abort ID",
                "grpcurl -plaintext " + a.listen + " list      # reflection is on",
            ):
                print(f"  {line.replace('taskward tasks', f'taskward tasks -p {port}') if port != '7100' else line}")
            if a.once:
                return 0 if state == "done" else 1
            print(f"\nnode log: {log_path}\nPress Ctrl-C to stop.", flush=True)
            stop_signals = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
            with contextlib.suppress(KeyboardInterrupt):
                signal.sigwait(stop_signals)
            return 0
        finally:
            channel.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            print("demo stopped")
