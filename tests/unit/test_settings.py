"""One description of every setting: each one is reachable as a flag (unless it is a secret), as its
``TASKWARD_*`` variable and as a ``--config`` key, with CLI > env > file > default, parsed alike."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from taskward.config import gateway_config_from, node_config_from
from taskward.errors import ConfigError
from taskward.settings import GATEWAY_SETTINGS, NODE_SETTINGS, Setting, add_arguments, boolean, markdown_table, resolve

CANDIDATES = ("7", "2.5", "yes", "NORMAL", "a.b,c.d", "some-text", "Debug", "JSON")
ALL = [pytest.param(s, settings, id=f"{kind}:{s.name}") for kind, settings in (("node", NODE_SETTINGS),
                                                                                   ("gateway", GATEWAY_SETTINGS))
       for s in settings]


def sample(s: Setting) -> tuple[str, Any]:
    """A raw value the setting accepts that differs from its default, and what it parses to."""
    for raw in CANDIDATES:
        try:
            value = s.read(raw, "test")
        except ConfigError:
            continue
        if value != s.default:
            return raw, value
    raise AssertionError(f"no sample value for {s.name}")


def parse(settings: tuple[Setting, ...], argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser()
    add_arguments(p, settings)
    return resolve(settings, p.parse_args(argv), env or {})


def cli_args(s: Setting, raw: str) -> list[str]:
    if s.switch:
        return [f"--{s.name}"]
    return [f"--{s.name}", raw]


@pytest.mark.parametrize(("setting", "settings"), ALL)
def test_every_setting_reads_flag_env_and_file_in_that_order(setting: Setting, settings: tuple[Setting, ...],
                                                             tmp_path: Path) -> None:
    raw, value = sample(setting)
    assert setting.env_name.startswith("TASKWARD_")
    assert parse(settings, [])[setting.key] == setting.default
    assert parse(settings, [], {setting.env_name: raw})[setting.key] == value
    config = tmp_path / "taskward.toml"
    config.write_text(f'{setting.name} = "{raw}"\n')
    assert parse(settings, ["--config", str(config)])[setting.key] == value
    # the env beats the file, the flag beats both
    other = "no" if setting.parse is boolean else "some-other-text"
    config.write_text(f'{setting.name.replace("-", "_")} = "{other}"\n')
    try:
        file_value = setting.read(other, "test")
    except ConfigError:
        file_value = None
    if file_value is not None:
        assert parse(settings, ["--config", str(config)])[setting.key] == file_value
    assert parse(settings, ["--config", str(config)], {setting.env_name: raw})[setting.key] == value
    if setting.flag:
        assert parse(settings, [*cli_args(setting, raw), "--config", str(config)],
                     {setting.env_name: "garbage-that-is-not-read"})[setting.key] == value


@pytest.mark.parametrize("word", ["true", "TRUE", "True", "1", "yes", "YES"])
def test_booleans_accept_the_usual_words_in_any_case(word: str) -> None:
    assert parse(NODE_SETTINGS, [], {"TASKWARD_INSECURE_BIND": word})["insecure_bind"] is True
    assert parse(NODE_SETTINGS, [], {"TASKWARD_INSECURE_BIND": word.replace("true", "false").replace(
        "TRUE", "FALSE").replace("True", "False").replace("1", "0").replace("yes", "no").replace("YES", "NO")}
    )["insecure_bind"] is False


@pytest.mark.parametrize(("env", "message"), [
    ({"TASKWARD_INSECURE_BIND": "maybe"}, "invalid TASKWARD_INSECURE_BIND 'maybe': expected true/false/1/0/yes/no"),
    ({"TASKWARD_CONCURRENCY": "x"}, "invalid TASKWARD_CONCURRENCY 'x': expected an integer"),
    ({"TASKWARD_CONCURRENCY": "0"},
     "invalid TASKWARD_CONCURRENCY '0': expected an integer from 1 to 9223372036854775807"),
    ({"TASKWARD_SHUTDOWN_GRACE": "inf"}, "invalid TASKWARD_SHUTDOWN_GRACE 'inf': expected a finite number >= 0"),
    ({"TASKWARD_SQLITE_SYNCHRONOUS": "fast"},
     "invalid TASKWARD_SQLITE_SYNCHRONOUS 'fast': expected one of OFF, NORMAL, FULL, EXTRA"),
])
def test_a_bad_value_is_refused_naming_its_source(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(NODE_SETTINGS, ["--id", "n1"], env)
    assert err.value.message == message


def test_config_file_errors(tmp_path: Path) -> None:
    bad_key = tmp_path / "a.toml"
    bad_key.write_text("concurency = 4\n")
    with pytest.raises(ConfigError, match=f"unknown setting 'concurency' in {bad_key}"):
        parse(NODE_SETTINGS, ["--config", str(bad_key)])
    bad_toml = tmp_path / "b.toml"
    bad_toml.write_text("concurrency = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        parse(NODE_SETTINGS, ["--config", str(bad_toml)])
    with pytest.raises(ConfigError, match="cannot read --config"):
        parse(NODE_SETTINGS, ["--config", str(tmp_path / "missing.toml")])
    bad_value = tmp_path / "c.toml"
    bad_value.write_text("concurrency = 0\n")
    with pytest.raises(ConfigError, match=f"invalid concurrency in {bad_value} '0'"):
        parse(NODE_SETTINGS, ["--config", str(bad_value)])


def test_typed_toml_values_and_lists(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('id = "n7"\ndata_dir = "/var/lib/tw"\nconcurrency = 4\ninsecure-bind = true\n'
                      'tasks = ["pkg.a", "pkg.b"]\netcd = ["http://127.0.0.1:2379"]\nlease-ttl = 9\n')
    c = node_config_from(parse(NODE_SETTINGS, ["--config", str(config), "--tasks", "pkg.c"]))
    assert (c.node_id, str(c.data_dir), c.manager.concurrency, c.insecure_bind) == ("n7", "/var/lib/tw", 4, True)
    assert c.task_modules == ("pkg.c",)  # the flag replaces the file's list
    assert c.cluster.etcd.endpoints == ("http://127.0.0.1:2379",) and c.cluster.lease_ttl_s == 9
    assert c.cluster.loop_interval_s == 0.5 and c.cluster.etcd.timeout_s == 2.0


def test_tokens_and_gateway_defaults(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    assert node_config_from(parse(NODE_SETTINGS, ["--id", "n1"], {"TASKWARD_TOKEN": "t"})).token == "t"
    assert node_config_from(parse(NODE_SETTINGS, ["--id", "n1", "--token-file", str(token)],
                                  {"TASKWARD_TOKEN": "t"})).token == "s3cret"
    g = gateway_config_from(parse(GATEWAY_SETTINGS, [], {"TASKWARD_GATEWAY_NODES": "127.0.0.1:1,127.0.0.1:2"}))
    assert (g.listen, g.nodes, g.token) == ("127.0.0.1:10000", ("127.0.0.1:1", "127.0.0.1:2"), None)
    with pytest.raises(ConfigError, match=r"refusing to bind --listen 0\.0\.0\.0:1 without a token"):
        gateway_config_from(parse(GATEWAY_SETTINGS, ["--listen", "0.0.0.0:1"]))
    assert gateway_config_from(parse(GATEWAY_SETTINGS, ["--listen", "0.0.0.0:1"],
                                     {"TASKWARD_INSECURE_BIND": "Yes"})).insecure_bind


def test_secrets_have_no_flag() -> None:
    p = argparse.ArgumentParser()
    add_arguments(p, NODE_SETTINGS)
    flags = {a for action in p._actions for a in action.option_strings}
    assert "--etcd-password" not in flags and "--token" not in flags
    assert {"--id", "--config", "--etcd-cacert", "--tasks", "--insecure-bind"} <= flags


def test_readme_shows_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for kind, settings in (("node", NODE_SETTINGS), ("gateway", GATEWAY_SETTINGS)):
        start = readme.index(f"<!-- settings:{kind} ")
        table = readme[readme.index("\n", start) + 1:readme.index(f"<!-- /settings:{kind} -->")].strip()
        assert table == markdown_table(settings), f"README's {kind} settings table is out of date"
