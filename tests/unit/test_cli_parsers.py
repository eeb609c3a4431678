"""Every option of every command says what it does (``--help`` is an operator's first stop)."""

from __future__ import annotations

import argparse

import pytest

from taskward.cli import completion_parser


def actions(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            found.append((path, action))
    return found


ALL = actions(completion_parser(), "taskward")


@pytest.mark.parametrize(("path", "action"), ALL, ids=[f"{p} {a.dest}" for p, a in ALL])
def test_every_option_has_help(path: str, action: argparse.Action) -> None:
    if path == "taskward" and action.dest == "version":
        return  # the root parser exists for completion only; main answers --version itself
    assert action.help and len(action.help) > 5, f"{path} {action.option_strings or action.dest} has no help"
