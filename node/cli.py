"""The ``taskward`` console script: ``node``, ``gateway``, ``tasks`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from taskward.config import check_can_listen, gateway_config_from, node_config_from
from taskward.errors import ConfigError, TaskwardError
from taskward.settings import GATEWAY_SETTINGS, NODE_SETTINGS, add_arguments, resolve

USAGE = """usage: taskward [--version] {node,gateway,tasks,cron,demo} ...

  node    run one node (gRPC task service, durable store)
  gateway REST API (ScyllaDB-compatible) in front of one or more nodes
  tasks   nodetool-style client: taskward tasks --help
  cron    cluster-wide schedules: taskward cron --help
  demo    start a local 3-node cluster on etcd with a sample cluster operation
"""


def _serve(build: Callable[[], Coroutine[Any, Any, None]], values: dict[str, Any], *, node: str = "") -> int:
    """Run a server process to its end, turning start-up errors into a message and an exit code."""
    from taskward.logs import setup_logging

    listener = setup_logging(values["log_level"], values["log_format"], node=node)
    try:
        asyncio.run(build())
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except TaskwardError as exc:  # e.g. etcd unreachable at start
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        listener.stop()
    if any(t.name.startswith("task-body") for t in threading.enumerate()):
        # Task-body threads still alive were abandoned (time limit, shutdown): exit must not join them.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _config_error(exc: ConfigError) -> int:
    print(f"error: {exc.message}", file=sys.stderr)
    return 2


def run_node(argv: Sequence[str]) -> int:
    from taskward.app import NodeApp
    from taskward.security.tls import load_config

    p = argparse.ArgumentParser(prog="taskward node", description="Run one taskward node.")
    add_arguments(p, NODE_SETTINGS)
    args = p.parse_args(argv)
    try:  # everything that can be refused is refused before anything is created (the data dir, a port)
        values = resolve(NODE_SETTINGS, args, os.environ)
        config = node_config_from(values)
        load_config(config.tls)  # a bad certificate file is refused here, before the data dir exists
        for address in config.listeners.values():
            check_can_listen(address)
    except ConfigError as exc:
        return _config_error(exc)
    return _serve(lambda: NodeApp(config).run(), values, node=config.node_id)


def run_gateway(argv: Sequence[str]) -> int:
    from taskward.gateway import GatewayApp
    from taskward.security.tls import load_config

    p = argparse.ArgumentParser(prog="taskward gateway", description="Serve the REST API in front of nodes.")
    add_arguments(p, GATEWAY_SETTINGS)
    args = p.parse_args(argv)
    try:
        values = resolve(GATEWAY_SETTINGS, args, os.environ)
        config = gateway_config_from(values)
        load_config(config.tls)
        check_can_listen(config.listen)
    except ConfigError as exc:
        return _config_error(exc)
    return _serve(lambda: GatewayApp(config).run(), values, node="gateway")


def completion_parser() -> argparse.ArgumentParser:
    """Every command's parser under one root, for shell completion only: each command keeps its own parser
    (``taskward tasks -h HOST`` is nodetool's, not argparse's help), so ``main`` dispatches by hand."""
    from taskward import cli_cron, cli_tasks, demo

    top = argparse.ArgumentParser(prog="taskward")
    top.add_argument("--version", action="store_true")
    sub = top.add_subparsers(dest="command")
    add_arguments(sub.add_parser("node", help="run one node"), NODE_SETTINGS)
    add_arguments(sub.add_parser("gateway", help="REST API in front of nodes"), GATEWAY_SETTINGS)
    for name, parser, text in (("tasks", cli_tasks.build_parser(), "nodetool-style client"),
                               ("cron", cli_cron.build_parser(), "cluster-wide schedules"),
                               ("demo", demo.build_parser(), "a local 3-node cluster")):
        sub.add_parser(name, parents=[parser], add_help=False, help=text)
    return top


def complete() -> None:
    """Answer a shell's completion request and exit, when the shell asks (``_ARGCOMPLETE`` is set by the
    hook ``register-python-argcomplete taskward`` installs); otherwise return at once."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(completion_parser())


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        complete()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        from taskward import __version__

        print(f"taskward {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "node":
        return run_node(rest)
    if command == "gateway":
        return run_gateway(rest)
    if command == "tasks":
        from taskward.cli_tasks import main as tasks_main

        return tasks_main(rest, dict(os.environ))
    if command == "cron":
        from taskward.cli_cron import main as cron_main

        return cron_main(rest, dict(os.environ))
    if command == "demo":
        from taskward.demo import main as demo_main

        return demo_main(rest)
    print(f"taskward: unknown command {command!r}\n{USAGE}", file=sys.stderr, end="")
    return 2

