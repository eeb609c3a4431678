"""``taskward tasks …``: the nodetool-style client, speaking gRPC to one node through the client library
(``taskward.Client``), as an application would.

Output and exit codes are fixed (README, CLI reference): errors go to stderr as ``error: …`` with exit 1;
``wait`` exits 0 done, 123 failed, 124 timed out, 125 any other error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from taskward import limits
from taskward.client import Client, TaskHandle, TaskStatus
from taskward.convert import iso, node_pb_to_dict
from taskward.errors import InvalidArgument, NoNodeReachable, TaskFailed, TaskwardError, Unavailable, WaitTimeout
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.security.tls import FLAGS, TlsError, client_credentials
from taskward.security.tls_probe import explain_unreachable

LIST_COLUMNS = ("task_id", "type", "kind", "scope", "state", "sequence_number", "keyspace", "table",
                "entity", "shard", "start_time", "end_time")
TREE_COLUMNS = (*LIST_COLUMNS, "parent_id", "error", "progress_completed", "progress_total")
NODE_COLUMNS = ("id", "address", "alive", "leader", "version", "started_at")
EXIT_FAILED, EXIT_TIMEOUT, EXIT_OTHER = 123, 124, 125


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


WAIT_EXITS = "exit codes: 0 done, 123 failed or aborted, 124 timed out (--timeout), 125 any other error"
UNREGISTERS = ("a finished root task leaves the node when read (ScyllaDB's task_status), unless the node runs with "
               "--keep-finished-on-read; wait never unregisters")


def port_number(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {port}")
    return port


def seconds(*, zero_ok: bool) -> Callable[[str], float]:
    """An argparse type for a duration: a finite number of seconds, above zero (or zero, when ``zero_ok``)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of seconds, got {raw!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {raw!r}")
        return value

    return parse


def positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}")
    return value


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    """nodetool's connection options: ``-h HOST`` (so help is ``--help``, or ``-h`` with nothing after it)."""
    p.add_argument("--help", action="help", help="show this help and exit (-h alone too)")
    p.add_argument("-h", "--host", default="127.0.0.1", help="node host (default 127.0.0.1)")
    p.add_argument("-p", "--port", type=port_number, default=7100, help="node gRPC port (default 7100)")
    p.add_argument("--token-file", metavar="FILE", help="file holding the bearer token (default: env TASKWARD_TOKEN)")
    p.add_argument("--tls-ca", metavar="FILE", help="talk TLS to the node, verifying it with this PEM CA bundle")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="PEM client certificate, for a node that requires one (--tls-client-ca); with --tls-key")
    p.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")


def json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskward tasks", add_help=False,
                                description="Inspect and steer the tasks of a taskward node (nodetool-style).",
                                epilog="Errors are one 'error: ...' line on stderr with exit 1 (usage errors: 2). "
                                       + WAIT_EXITS.replace("exit codes", "wait's exit codes") + ".")
    add_connection_arguments(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    json_flag(sub.add_parser("modules", help="list modules"))
    ls = sub.add_parser("list", help="list the tasks of a module (never unregisters)")
    ls.add_argument("module", help="module name (see: modules)")
    ls.add_argument("--internal", action="store_true", help="include internal tasks (children)")
    ls.add_argument("--keyspace", "-ks", default="", help="only tasks of this keyspace")
    ls.add_argument("--table", "-t", default="", help="only tasks of this table")
    ls.add_argument("--interval", type=seconds(zero_ok=False), metavar="S", help="list again every S seconds")
    ls.add_argument("--iterations", type=positive_int, metavar="N", help="number of listings (with --interval)")
    json_flag(ls)
    st = sub.add_parser("status", help=f"status of a task; {UNREGISTERS}")
    st.add_argument("id", help="task id")
    json_flag(st)
    tr = sub.add_parser("tree", help="statuses of a task tree in BFS order, root first (no ID: every root of every "
                                     f"module); {UNREGISTERS}")
    tr.add_argument("id", nargs="?", help="root task id")
    json_flag(tr)
    ab = sub.add_parser("abort", help="abort a task and its descendants (cooperative)")
    ab.add_argument("id", help="task id")
    wt = sub.add_parser("wait", help=f"wait for a task to finish, with a progress bar on a terminal; {WAIT_EXITS}",
                        epilog=WAIT_EXITS)
    wt.add_argument("id", help="task id")
    wt.add_argument("--quiet", "-q", action="store_true", help="print nothing (the exit code says how it ended)")
    wt.add_argument("--timeout", type=seconds(zero_ok=True), metavar="S", help="give up after S seconds (exit 124)")
    for name, label in (("ttl", "task_ttl"), ("user-ttl", "user_task_ttl")):
        t = sub.add_parser(name, help=f"get or set {label} (seconds a finished root task is kept)")
        t.add_argument("--set", type=int, dest="set_value", metavar="N", help="set it to N seconds (0-4294967295)")
        json_flag(t)
    dr = sub.add_parser("drain", help="unregister finished tasks")
    dr.add_argument("--module", help="only this module's (default: every module)")
    sa = sub.add_parser("start", help="start a task; prints its id")
    sa.add_argument("module", help="module of the task type")
    sa.add_argument("type", help="task type")
    sa.add_argument("--arg", action="append", default=[], metavar="K=V",
                    help="an argument of the task (repeatable); V is parsed as JSON when it parses, else a string")
    sa.add_argument("--cluster", action="store_true", help="start a cluster task: a child on every node")
    sa.add_argument("--nodes", default="", metavar="ID,ID", help="with --cluster: only these node ids")
    sa.add_argument("--idempotency-key", default="", metavar="KEY",
                    help="the same key and request again returns the first task's id")
    sa.add_argument("--keyspace", "-ks", default="", help="keyspace label")
    sa.add_argument("--table", "-t", default="", help="table label")
    sa.add_argument("--entity", default="", help="entity label")
    sa.add_argument("--wait", action="store_true", help=f"then wait for it, with the progress bar; {WAIT_EXITS}")
    json_flag(sub.add_parser("nodes", help="the cluster's members (id, address, alive, leader, version, started)"))
    return p


def help_wanted(argv: Sequence[str], parser: argparse.ArgumentParser) -> bool:
    """``-h`` is nodetool's host flag, but ``-h`` with no host after it (last, or followed by an option or a
    subcommand) asks for help, as a person typing it means."""
    subcommands = {a for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                   for a in action.choices}
    for i, arg in enumerate(argv):
        if arg in ("-h", "--host"):
            following = argv[i + 1] if i + 1 < len(argv) else None
            return following is None or following.startswith("-") or following in subcommands
        if arg in subcommands:
            return False
    return False


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [list(columns)] + [[render_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


UNSET_TIME = iso(None)  # how REST and --json spell a time that is not set


def render_cell(value: Any) -> str:
    if value == UNSET_TIME:  # a time not set yet prints empty, as nodetool does (JSON keeps the epoch)
        return ""
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
        limits.check_json_depth(raw, f"--arg {key}")
    except InvalidArgument as exc:
        raise CliError(exc.message) from None
    try:  # strict JSON: NaN, Infinity and 1e400 are not JSON numbers, so they stay strings
        return key, limits.loads(raw, "")
    except InvalidArgument:
        return key, raw


def unreachable(exc: Unavailable, address: str, a: argparse.Namespace) -> CliError:
    """``cannot reach node at ADDRESS: why``: the node's own words when it answered UNAVAILABLE itself, or, when
    no node answered and a TLS handshake of our own says why (a TLS node and no ``--tls-ca``, a client
    certificate missing or refused), that."""
    cause = exc.__cause__ if isinstance(exc, NoNodeReachable) and isinstance(exc.__cause__, TaskwardError) else exc
    why = (explain_unreachable(address, ca=a.tls_ca, cert=a.tls_cert, key=a.tls_key)
           if isinstance(exc, NoNodeReachable) else None)
    return CliError(f"cannot reach node at {address}: {why or cause.message}")


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
        status: TaskStatus | None = None
        try:
            status = handle.wait(a.timeout)
        except TaskFailed as exc:
            assert isinstance(exc.status, TaskStatus)
            status = exc.status
        finally:
            if bar is not None:
                bar.stop(status)
    except WaitTimeout:
        raise CliError("Operation timed out", EXIT_TIMEOUT) from None
    except Unavailable as exc:
        raise CliError(unreachable(exc, c.addresses[0], a).args[0], EXIT_OTHER) from None
    except TaskwardError as exc:
        raise CliError(exc.message, EXIT_OTHER) from None
    if not a.quiet and getattr(a, "show", True):
        _print_status(status.to_dict())
    return 0 if status.state == "done" else EXIT_FAILED


class ProgressBar:
    """One line on stderr while ``wait`` blocks: the task's rolled-up progress (a cluster task's comes from
    its children on every node), done/total units, elapsed time and the ETA the node computes, fitted
    to the terminal's width. Read from the task's status a few times a second: one small call, the same
    for a node task, a tree and a cluster task."""

    REFRESH_S = 0.25

    def __init__(self, handle: TaskHandle, *, out: TextIO = sys.stderr) -> None:
        self._handle = handle
        self._out = out
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._drawn = False
        self._thread = threading.Thread(target=self._run, name="progress-bar", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TaskwardError):  # the wait itself reports what went wrong
                self.draw(self._handle.status())
            self._stop.wait(self.REFRESH_S)

    def draw(self, st: TaskStatus) -> None:
        self._out.write("\r" + render_bar(st, time.monotonic() - self._started, shutil.get_terminal_size().columns))
        self._out.flush()
        self._drawn = True

    def stop(self, final: TaskStatus | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if final is not None:
            self.draw(final)
        if self._drawn:
            self._out.write("\n")
            self._out.flush()


def render_bar(st: TaskStatus, elapsed_s: float, width: int) -> str:
    """``[#####.....]  42.0%  21/50 batches  elapsed 0:12  eta 0:16  running``, no wider than ``width``."""
    fraction = 1.0 if st.state == "done" and not st.progress_total else st.progress_fraction
    units = f"  {st.progress_completed:g}/{st.progress_total:g}{' ' + st.progress_units if st.progress_units else ''}" \
        if st.progress_total else ""
    eta = f"  eta {clock(st.eta_ms / 1000)}" if st.eta_ms is not None and st.state == "running" else ""
    tail = f" {fraction:6.1%}{units}  elapsed {clock(elapsed_s)}{eta}  {st.state}"
    room = max(0, width - 1 - len(tail) - 2)  # the last column stays empty: no wrap on any terminal
    bar_width = min(40, room)
    line = (f"[{'#' * int(fraction * bar_width)}{'.' * (bar_width - int(fraction * bar_width))}]" if bar_width >= 5
            else "") + tail
    return line[:max(0, width - 1)].ljust(max(0, width - 1))


def clock(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def cmd_ttl(c: Client, a: argparse.Namespace) -> int:
    user = a.command == "user-ttl"
    if a.set_value is not None:
        c.set_ttl(a.set_value, user=user)
    ttl = c.ttl(user=user)
    label = "user_ttl" if user else "ttl"
    print(json.dumps({label: ttl}) if a.json else f"Current {'user ' if user else ''}ttl: {ttl}")
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
        return cmd_wait(c, argparse.Namespace(id=handle.id, quiet=False, timeout=None, show=False))
    return 0


def cmd_nodes(c: Client, a: argparse.Namespace) -> int:
    resp = c.call("ListNodes", pb.ListNodesRequest())  # the typed list has no staleness flag
    rows = [node_pb_to_dict(n) for n in resp.nodes]
    print(json.dumps(rows) if a.json else render_table(rows, NODE_COLUMNS))
    if resp.stale:
        print(f"warning: {c.addresses[0]} has lost the cluster store; this is its last known view", file=sys.stderr)
    return 0


def cmd_modules(c: Client, a: argparse.Namespace) -> int:
    modules = c.modules()
    print(json.dumps(modules) if a.json else "\n".join(modules))
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
    """Connect as ``a`` says (host, port, token, TLS files) and run ``a.command``; every failure is one ``error:`` line
    with ``error_code`` (a command's own ``CliError`` carries its code)."""
    token = env.get("TASKWARD_TOKEN")
    if a.token_file:
        try:
            with open(a.token_file) as f:
                token = f.read().strip()
        except OSError as exc:
            fail(f"cannot read --token-file: {exc.strerror or exc}", error_code)
    try:  # the files are checked here, so a bad one is named by its flag
        client_credentials(a.tls_ca, a.tls_cert, a.tls_key, names=FLAGS)
    except TlsError as exc:
        fail(exc.message, error_code)
    client = Client(f"{a.host}:{a.port}", token=token, tls_ca=a.tls_ca, tls_cert=a.tls_cert, tls_key=a.tls_key)
    try:
        return commands[a.command](client, a)
    except CliError as exc:
        fail(exc.args[0], exc.code)
    except Unavailable as exc:
        fail(unreachable(exc, client.addresses[0], a).args[0], error_code)
    except TaskwardError as exc:
        fail(exc.message, error_code)
    finally:
        client.close()


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse as nodetool would: ``-h`` alone is help. A closed pipe (``| head``) ends the command quietly,
    as it ends other command-line tools (SIGPIPE's default action)."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if help_wanted(argv, parser):
        parser.print_help()
        sys.exit(0)
    return parser.parse_args(argv)


def main(argv: Sequence[str], env: dict[str, str]) -> int:
    a = parse(build_parser(), argv)
    return run(a, env, COMMANDS, error_code=EXIT_OTHER if a.command == "wait" else 1)
