"""``taskward tasks …``: the nodetool-style client, speaking gRPC to one node through the client library
(``taskward.Client``), as an application would.

Output and exit codes are fixed (README, CLI reference): errors go to stderr as ``error: …`` with exit 1;
``wait`` exits 0 done, 123 failed, 124 timed out, 125 any other error.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from taskward.client import Client, TaskHandle, TaskStatus
from taskward.convert import node_pb_to_dict
from taskward.errors import NoNodeReachable, TaskFailed, TaskwardError, Unavailable, WaitTimeout
from taskward.pb.taskward.v1 import tasks_pb2 as pb

LIST_COLUMNS = ("task_id", "type", "kind", "scope", "state", "sequence_number", "keyspace", "table",
                "entity", "shard", "start_time", "end_time")
TREE_COLUMNS = (*LIST_COLUMNS, "parent_id", "error", "progress_completed", "progress_total")
NODE_COLUMNS = ("id", "address", "alive", "leader", "version", "started_at")
EXIT_FAILED, EXIT_TIMEOUT, EXIT_OTHER = 123, 124, 125


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskward tasks", add_help=False,
                                description="Inspect and steer the tasks of a taskward node.")
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-h", "--host", default="127.0.0.1", help="node host (default 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=7100, help="node gRPC port (default 7100)")
    p.add_argument("--token-file", help="bearer token file (default: env TASKWARD_TOKEN)")
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    sub.add_parser("modules", help="list modules")
    ls = sub.add_parser("list", help="list tasks of a module")
    ls.add_argument("module")
    ls.add_argument("--internal", action="store_true", help="include internal tasks")
    ls.add_argument("--keyspace", "-ks", default="")
    ls.add_argument("--table", "-t", default="")
    ls.add_argument("--interval", type=float, help="seconds between listings")
    ls.add_argument("--iterations", type=int, help="number of listings (with --interval)")
    ls.add_argument("--json", action="store_true")
    st = sub.add_parser("status", help="status of a task (unregisters a finished root)")
    st.add_argument("id")
    st.add_argument("--json", action="store_true")
    tr = sub.add_parser("tree", help="statuses of a task tree in BFS order (no ID: every root)")
    tr.add_argument("id", nargs="?")
    tr.add_argument("--json", action="store_true")
    ab = sub.add_parser("abort", help="abort a task and its descendants")
    ab.add_argument("id")
    wt = sub.add_parser("wait", help="wait for a task to finish")
    wt.add_argument("id")
    wt.add_argument("--quiet", "-q", action="store_true")
    wt.add_argument("--timeout", type=float)
    for name, label in (("ttl", "task_ttl"), ("user-ttl", "user_task_ttl")):
        t = sub.add_parser(name, help=f"get or set {label}")
        t.add_argument("--set", type=int, dest="set_value", metavar="N")
    dr = sub.add_parser("drain", help="unregister finished tasks")
    dr.add_argument("--module")
    sa = sub.add_parser("start", help="start a task; prints its id")
    sa.add_argument("module")
    sa.add_argument("type")
    sa.add_argument("--arg", action="append", default=[], metavar="K=V", help="V parsed as JSON when it parses")
    sa.add_argument("--cluster", action="store_true")
    sa.add_argument("--nodes", default="")
    sa.add_argument("--idempotency-key", default="")
    sa.add_argument("--keyspace", "-ks", default="")
    sa.add_argument("--table", "-t", default="")
    sa.add_argument("--entity", default="")
    sa.add_argument("--wait", action="store_true")
    sub.add_parser("nodes", help="list the cluster's members")
    return p


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [list(columns)] + [[render_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def render_cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _print_status(d: dict[str, Any]) -> None:
    for key, value in d.items():
        if key == "task_id":
            continue
        if key == "children_ids":
            value = json.dumps(value)
        elif key == "result":  # compact JSON, ``null`` when none
            value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        print(f"{key}: {render_cell(value)}")


def parse_arg(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise CliError(f"--arg expects K=V, got {item!r}")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def unreachable(exc: Unavailable, address: str) -> CliError:
    """``cannot reach node at ADDRESS: why`` (the node's own words when it answered UNAVAILABLE itself)."""
    cause = exc.__cause__ if isinstance(exc, NoNodeReachable) and isinstance(exc.__cause__, TaskwardError) else exc
    return CliError(f"cannot reach node at {address}: {cause.message}")


def cmd_list(c: Client, a: argparse.Namespace) -> int:
    iterations = a.iterations if a.interval else 1
    for i in range(iterations or 1):
        rows = [t.stats_dict() for t in c.tasks(a.module, a.internal, a.keyspace, a.table)]
        print(json.dumps(rows) if a.json else render_table(rows, LIST_COLUMNS), flush=True)
        if i + 1 < (iterations or 1):
            time.sleep(a.interval)
    return 0


def cmd_status(c: Client, a: argparse.Namespace) -> int:
    d = c.task(a.id).status(unregister=True).to_dict()  # ScyllaDB's read: a finished root leaves
    print(json.dumps(d)) if a.json else _print_status(d)
    return 0


def cmd_tree(c: Client, a: argparse.Namespace) -> int:
    roots = [a.id] if a.id else [t.id for m in c.modules() for t in c.tasks(m)]
    rows = [s.to_dict() for rid in roots for s in c.task(rid).tree(unregister=True)]
    print(json.dumps(rows) if a.json else render_table(rows, TREE_COLUMNS))
    return 0


def cmd_wait(c: Client, a: argparse.Namespace) -> int:
    try:
        handle = c.task(a.id)
        bar = ProgressBar(handle) if sys.stderr.isatty() and not a.quiet else None
        try:
            status = handle.wait(a.timeout)
        except TaskFailed as exc:
            assert isinstance(exc.status, TaskStatus)
            status = exc.status
        finally:
            if bar is not None:
                bar.stop()
    except WaitTimeout:
        raise CliError("Operation timed out", EXIT_TIMEOUT) from None
    except Unavailable as exc:
        raise CliError(unreachable(exc, c.addresses[0]).args[0], EXIT_OTHER) from None
    except TaskwardError as exc:
        raise CliError(exc.message, EXIT_OTHER) from None
    if not a.quiet:
        _print_status(status.to_dict())
    return 0 if status.state == "done" else EXIT_FAILED


class ProgressBar:
    """Draws a task's progress on stderr from its events while ``wait`` blocks."""

    def __init__(self, handle: TaskHandle) -> None:
        self._events = handle.events()  # subscribed when it returns: no progress is missed
        self._thread = threading.Thread(target=self._run, name="progress-bar", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in self._events:
                if ev["progress_total"] > 0:
                    frac = min(1.0, ev["progress_completed"] / ev["progress_total"])
                    filled = int(frac * 30)
                    sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {frac:6.1%} {ev['message'][:40]:40}")
                    sys.stderr.flush()
        except TaskwardError:  # the wait itself reports what went wrong
            return

    def stop(self) -> None:
        self._events.close()
        self._thread.join(timeout=1.0)
        sys.stderr.write("\n")


def cmd_ttl(c: Client, a: argparse.Namespace) -> int:
    user = a.command == "user-ttl"
    if a.set_value is not None:
        c.set_ttl(a.set_value, user=user)
    print(f"Current {'user ' if user else ''}ttl: {c.ttl(user=user)}")
    return 0


def cmd_drain(c: Client, a: argparse.Namespace) -> int:
    modules = [a.module] if a.module else c.modules()
    total = sum(c.drain(m) for m in modules)
    print(f"unregistered {total} task(s)")
    return 0


def cmd_start(c: Client, a: argparse.Namespace) -> int:
    args = dict(parse_arg(item) for item in a.arg)
    handle = c.start_with_args(a.module, a.type, args, idempotency_key=a.idempotency_key, keyspace=a.keyspace,
                               table=a.table, entity=a.entity, cluster=a.cluster,
                               nodes=[n for n in a.nodes.split(",") if n])
    print(handle.id, flush=True)
    if a.wait:
        return cmd_wait(c, argparse.Namespace(id=handle.id, quiet=True, timeout=None))
    return 0


def cmd_nodes(c: Client, a: argparse.Namespace) -> int:
    resp = c.call("ListNodes", pb.ListNodesRequest())  # the typed list has no staleness flag
    print(render_table([node_pb_to_dict(n) for n in resp.nodes], NODE_COLUMNS))
    if resp.stale:
        print(f"warning: {c.addresses[0]} has lost the cluster store; this is its last known view", file=sys.stderr)
    return 0


def cmd_modules(c: Client, a: argparse.Namespace) -> int:
    for m in c.modules():
        print(m)
    return 0


def cmd_abort(c: Client, a: argparse.Namespace) -> int:
    c.task(a.id).abort()
    return 0


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "modules": cmd_modules, "list": cmd_list, "status": cmd_status, "tree": cmd_tree,
    "abort": cmd_abort, "wait": cmd_wait, "ttl": cmd_ttl, "user-ttl": cmd_ttl, "drain": cmd_drain,
    "start": cmd_start, "nodes": cmd_nodes,
}


def fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}" if not message.startswith(("Operation timed out", "Task with id")) else message,
          file=sys.stderr)
    sys.exit(code)


def run(a: argparse.Namespace, env: dict[str, str], commands: dict[str, Callable[[Client, argparse.Namespace], int]],
        *, error_code: int = 1) -> int:
    """Connect as ``a`` says (host, port, token) and run ``a.command``; every failure is one ``error:`` line
    with ``error_code`` (a command's own ``CliError`` carries its code)."""
    token = env.get("TASKWARD_TOKEN")
    if a.token_file:
        try:
            with open(a.token_file) as f:
                token = f.read().strip()
        except OSError as exc:
            fail(f"cannot read --token-file: {exc.strerror or exc}", error_code)
    client = Client(f"{a.host}:{a.port}", token=token)
    try:
        return commands[a.command](client, a)
    except CliError as exc:
        fail(exc.args[0], exc.code)
    except Unavailable as exc:
        fail(unreachable(exc, client.addresses[0]).args[0], error_code)
    except TaskwardError as exc:
        fail(exc.message, error_code)
    finally:
        client.close()


def main(argv: Sequence[str], env: dict[str, str]) -> int:
    a = build_parser().parse_args(argv)
    return run(a, env, COMMANDS, error_code=EXIT_OTHER if a.command == "wait" else 1)
