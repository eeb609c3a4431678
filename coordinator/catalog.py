"""What the coordinator needs to know of the task types a node has (the node's registry implements it;
every node of a cluster is expected to load the same task modules)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CheckedArgs:
    args_json: str  # canonical: sorted keys, compact
    abortable: bool
    progress_units: str


class TaskCatalog(Protocol):
    def check(self, module: str, type_name: str, args_json: str) -> CheckedArgs:
        """The type's facts and the arguments as stored; ``InvalidArgument`` for an unknown module or type
        or arguments the type refuses."""
        ...

    def modules_with(self, type_name: str) -> list[str]:
        """The modules that have a type of this name (AeorDB's API names types without a module)."""
        ...
