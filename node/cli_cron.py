"""``taskward cron …``: cluster-wide schedules, over gRPC to one node (any node answers alike).

Errors go to stderr as ``error: …`` with exit 1 (an invalid document names the entry and why); the
connection options are those of ``taskward tasks``, and so is the way in: the client library's cron methods.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from taskward.cli_tasks import (
    CliError,
    add_connection_arguments,
    parse,
    parse_arg,
    render_cell,
    render_table,
    run,
)
from taskward.client import Client

LIST_COLUMNS = ("id", "module", "task_type", "schedule", "timezone", "enabled", "cluster", "concurrency",
                "next_fire_time", "last_slot", "last_task_id", "last_task_state")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskward cron", add_help=False,
                                description="Manage the cluster's cron schedules (any node answers).")
    add_connection_arguments(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    ls = sub.add_parser("list", help="every schedule with its next fire time and last task")
    ls.add_argument("--json", action="store_true", help="the document as JSON ({\"schedules\": [...]})")
    gt = sub.add_parser("get", help="one schedule with its recent history")
    gt.add_argument("id", help="schedule id")
    gt.add_argument("--json", action="store_true", help="print JSON instead of text")
    st = sub.add_parser("set", help="create or replace a schedule, or (--file) replace the whole document")
    st.add_argument("id", nargs="?", help="schedule id (not with --file)")
    st.add_argument("--file", help="a cron.json document ({\"schedules\": [...]}, AeorDB's format; - for stdin)")
    st.add_argument("--type", dest="task_type", help="task type (with --module when several modules have it)")
    st.add_argument("--module", default="", help="module of the task type (needed when several modules have it)")
    st.add_argument("--schedule", help="five cron fields, or @hourly/@daily/@weekly/@monthly/@yearly")
    st.add_argument("--arg", action="append", default=[], metavar="K=V", help="V parsed as JSON when it parses")
    st.add_argument("--timezone", default="", help="IANA time zone (default UTC)")
    st.add_argument("--cluster", action="store_true", help="fire a cluster task instead of a node task")
    st.add_argument("--concurrency", default="", choices=["", "forbid", "allow", "replace"],
                    help="when the previous run still runs: forbid (skip the slot, default), allow, or replace it")
    st.add_argument("--misfire-grace", type=float, metavar="S", help="seconds a late slot may still fire (60)")
    st.add_argument("--disabled", action="store_true", help="store it disabled")
    for name, text in (("enable", "enable a schedule (slots from now on fire)"), ("disable", "disable a schedule"),
                       ("delete", "delete a schedule"), ("run-now", "fire a schedule's task now; prints its id")):
        sub.add_parser(name, help=text).add_argument("id", help="schedule id")
    return p


def _print_schedule(d: dict[str, Any]) -> None:
    for key, value in d.items():
        if key == "history":
            continue
        print(f"{key}: {json.dumps(value) if isinstance(value, dict | list) else render_cell(value)}")
    for h in d["history"]:
        print(f"history: {h['slot']} {h['outcome']}" + "".join(
            f" {k}={render_cell(h[k])}" for k in ("task_id", "node", "reason") if h.get(k)))


def cmd_list(c: Client, a: argparse.Namespace) -> int:
    rows = c.schedules()
    print(json.dumps({"schedules": rows}) if a.json else render_table(rows, LIST_COLUMNS))
    return 0


def cmd_get(c: Client, a: argparse.Namespace) -> int:
    d = c.schedule(a.id)
    print(json.dumps(d)) if a.json else _print_schedule(d)
    return 0


def cmd_set(c: Client, a: argparse.Namespace) -> int:
    if a.file:
        if a.id:
            raise CliError("give either an id with its fields, or --file, not both")
        return _set_document(c, a.file)
    if not a.id or not a.task_type or not a.schedule:
        raise CliError("cron set needs ID --type TYPE --schedule EXPR (or --file cron.json)")
    entry: dict[str, Any] = {
        "id": a.id, "module": a.module, "task_type": a.task_type, "schedule": a.schedule,
        "args": dict(parse_arg(x) for x in a.arg), "timezone": a.timezone, "cluster": a.cluster,
        "concurrency": a.concurrency, "enabled": not a.disabled,
    }
    if a.misfire_grace is not None:
        entry["misfire_grace_s"] = a.misfire_grace
    _print_schedule(c.put_schedule(entry))
    return 0


def _set_document(c: Client, path: str) -> int:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
        body = json.loads(text)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("schedules"), list) or set(body) != {"schedules"}:
        raise CliError(f'{path} must hold {{"schedules": [...]}}')
    print(f"{len(c.put_schedules(body['schedules']))} schedule(s) in force")  # a bad entry: InvalidArgument
    return 0


def _setter(enabled: bool) -> Callable[[Client, argparse.Namespace], int]:
    def run(c: Client, a: argparse.Namespace) -> int:
        d = c.enable_schedule(a.id, enabled)
        print(f"{d['id']} {'enabled' if d['enabled'] else 'disabled'}; next fire time: {d['next_fire_time']}")
        return 0

    return run


def cmd_delete(c: Client, a: argparse.Namespace) -> int:
    c.delete_schedule(a.id)
    return 0


def cmd_run_now(c: Client, a: argparse.Namespace) -> int:
    print(c.run_schedule_now(a.id)["task_id"])
    return 0


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "list": cmd_list, "get": cmd_get, "set": cmd_set, "enable": _setter(True), "disable": _setter(False),
    "delete": cmd_delete, "run-now": cmd_run_now,
}


def main(argv: Sequence[str], env: dict[str, str]) -> int:
    return run(parse(build_parser(), argv), env, COMMANDS)
