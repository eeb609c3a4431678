"""The import graph of the product code, read with ``ast``: no cycles, and dependencies that point one
way (docs/architecture.md, "Layering"). A new import that breaks a rule fails here with its path."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"taskward": REPO / "node", "taskward.coordinator": REPO / "coordinator"}
GENERATED = "taskward.pb"

# What the coordinator may use of the node package: domain types and boundaries, never its services.
COORDINATOR_MAY_USE = {"taskward", "taskward.cron", "taskward.model", "taskward.errors", "taskward.events",
                       "taskward.config", "taskward.convert", "taskward.channels", "taskward.event_calls",
                       "taskward.cluster_view", "taskward.limits", "taskward.metrics"}
# The domain core: no protobuf, no surfaces, no coordinator.
CORE = {"taskward.model", "taskward.manager", "taskward.executor", "taskward.store", "taskward.events",
        "taskward.registry", "taskward.retention", "taskward.context", "taskward.task_table",
        "taskward.scylla_test_api", "taskward.errors", "taskward.limits", "taskward.metrics",
        "taskward.procpool", "taskward.procpool.pool", "taskward.procpool.protocol", "taskward.procpool.worker"}


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for prefix, root in ROOTS.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if name.startswith(GENERATED) or (prefix == "taskward" and parts[:1] == ["pb"]):
                continue
            if prefix == "taskward" and path.is_relative_to(ROOTS["taskward.coordinator"]):
                continue
            found[name] = path
    return found


def imports(path: Path, known: set[str]) -> Iterator[str]:
    """The product modules ``path`` imports (``from taskward import convert`` names the submodule)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("taskward"):
                    yield _known(alias.name, known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("taskward"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield sub if sub in known else _known(node.module, known)


def _known(name: str, known: set[str]) -> str:
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods) | {GENERATED}
    return {m: {i for i in imports(p, known) if i != m} for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    g = graph()
    assert "taskward.coordinator.leader" in g and "taskward.manager" in g
    assert "taskward.coordinator.node_client" in g["taskward.coordinator.leader"]
    assert "taskward.convert" in g["taskward.api.grpc.servicers"]


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_composition_root_imports_the_coordinator() -> None:
    wrong = {m: sorted(i for i in deps if i.startswith("taskward.coordinator"))
             for m, deps in graph().items() if not m.startswith("taskward.coordinator") and m != "taskward.app"}
    assert {m: d for m, d in wrong.items() if d} == {}


def test_the_coordinator_uses_only_domain_types_of_the_node() -> None:
    wrong = {m: sorted(i for i in deps if not i.startswith("taskward.coordinator") and i != GENERATED
                       and i not in COORDINATOR_MAY_USE)
             for m, deps in graph().items() if m.startswith("taskward.coordinator")}
    assert {m: d for m, d in wrong.items() if d} == {}


def test_protobuf_stays_at_the_edges() -> None:
    g = graph()
    assert {m: GENERATED for m in CORE | {"taskward.coordinator.leader", "taskward.coordinator.child_events",
                                          "taskward.coordinator.cluster", "taskward.coordinator.forwarding"}
            if GENERATED in g.get(m, set())} == {}
    assert {m for m in CORE if any(i.startswith(("taskward.api", "taskward.app", "taskward.cli"))
                                   for i in g.get(m, set()))} == set()
