"""The command line's first touch, without services: help, version, usage and configuration errors.

Each case runs ``python -m app.ops.cli`` as a user would, in a clean environment (no ``TXLAKE_``
variable of the test run), and checks the exit status and that stderr is one line -- a
traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import SettingsError

from app.core.settings import Settings
from app.ops.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[2]


def txlake(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.upper().startswith("TXLAKE_")}
    return subprocess.run(
        [sys.executable, "-m", "app.ops.cli", *args],
        cwd=cwd or REPO_ROOT,
        env={**clean, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction]:  # type: ignore[type-arg]
    return [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]


def _walk(parser: argparse.ArgumentParser, path: str = "txlake"):  # type: ignore[no-untyped-def]
    yield path, parser
    for sub in _subparsers(parser):
        for name, child in sub.choices.items():
            yield from _walk(child, f"{path} {name}")


# -- help and version ---------------------------------------------------------------------------


def test_every_command_and_option_has_help():
    missing = []
    for path, parser in _walk(build_parser()):
        for sub in _subparsers(parser):
            helped = {action.dest for action in sub._choices_actions if action.help}
            missing += [f"{path} {name}" for name in sub.choices if name not in helped]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"without help: {missing}"


def test_help_lists_every_command():
    result = txlake("--help")
    assert result.returncode == 0
    (commands,) = _subparsers(build_parser())
    for name in commands.choices:
        assert f"\n    {name} " in result.stdout, f"{name} missing from txlake --help:\n{result.stdout}"


def test_version():
    result = txlake("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("txlake ") and result.stdout.split()[1][0].isdigit()


# -- usage errors: exit 2 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("produce", "--count", "-5"), "--count: -5 is out of range: must be >= 0"),
        (("produce", "--count", "many"), "--count: 'many' is not an integer"),
        (("produce", "--late-fraction", "1.5"), "--late-fraction: 1.5 is out of range"),
        (("produce", "--rate", "0"), "--rate: 0 is out of range: must be > 0"),
        (("produce", "--now", "yesterday"), "--now: 'yesterday' is not an ISO 8601 time"),
        (("topics", "--partitions", "0"), "--partitions: 0 is out of range: must be >= 1"),
        (("progress", "--timeout", "-1"), "--timeout: -1 is out of range"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_usage_exits_2_before_anything_runs(args, complaint, capsys):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(args)
    assert exit.value.code == 2
    assert complaint in capsys.readouterr().err


def test_bad_usage_is_one_line_after_the_usage():
    result = txlake("produce", "--count", "-5")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "txlake produce: error: argument --count: -5 is out of range: must be >= 0"
    assert "Traceback" not in result.stderr


# -- configuration errors: exit 2, one line ----------------------------------------------------


def test_an_invalid_setting_is_one_line_naming_the_variable():
    result = txlake("settings", TXLAKE_BATCHING__FLUSH_SIZE="abc")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("txlake: configuration error: TXLAKE_BATCHING__FLUSH_SIZE='abc'")
    assert "valid integer" in line


def test_every_invalid_setting_is_named():
    result = txlake("settings", TXLAKE_BATCHING__FLUSH_SIZE="0", TXLAKE_LOG_FORMAT="xml")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "TXLAKE_BATCHING__FLUSH_SIZE='0'" in line and "TXLAKE_LOG_FORMAT='xml'" in line


def test_the_worker_refuses_a_bad_setting_before_faust_starts():
    result = txlake("worker", TXLAKE_BATCHING__FLUSH_SIZE="abc")
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("txlake: configuration error: TXLAKE_BATCHING__FLUSH_SIZE")
    assert result.stdout == ""  # Faust never printed its banner


@pytest.mark.parametrize(
    ("value", "countries"),
    [("RU", ["ru"]), ("RU, by", ["by", "ru"]), ('["RU", "BY"]', ["by", "ru"]), ("", [])],
)
def test_list_settings_take_comma_separated_values_or_json(value, countries, monkeypatch):
    monkeypatch.setenv("TXLAKE_BLACKLIST__COUNTRIES", value)
    assert sorted(Settings().blacklist.countries) == countries


def test_a_json_list_python_refuses_says_what_is_expected(monkeypatch):
    monkeypatch.setenv("TXLAKE_BLACKLIST__COUNTRIES", "[" + "1" * 5000 + "]")  # beyond Python's digit limit
    with pytest.raises(SettingsError) as caught:
        Settings()
    assert "starts like a JSON list but is not one (Exceeds the limit" in str(caught.value.__cause__)


def test_a_broken_json_list_is_one_line_saying_what_is_expected():
    result = txlake("settings", TXLAKE_BLACKLIST__COUNTRIES='["RU"')
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "countries" in line and "comma-separated values" in line


def test_debug_shows_the_traceback():
    result = txlake("--debug", "settings", TXLAKE_BATCHING__FLUSH_SIZE="abc")
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("txlake: configuration error:")
    after = txlake("settings", "--debug", TXLAKE_BATCHING__FLUSH_SIZE="abc")  # after the command too
    assert after.returncode == 2 and "Traceback" in after.stderr


def test_lake_commands_refuse_a_lake_root_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-lake"
    for args in (("lake", "ls"), ("lake", "describe", "streams/transaction_stream")):
        result = txlake(*args, TXLAKE_LAKE__ROOT=str(missing))
        assert result.returncode == 2
        line = one_line(result.stderr)
        assert f"the lake root {missing} does not exist" in line and "TXLAKE_LAKE__ROOT" in line


def test_an_empty_lake_is_listed(tmp_path):
    result = txlake("lake", "ls", TXLAKE_LAKE__ROOT=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"0 datasets in {tmp_path}" in result.stdout


def test_an_unknown_dataset_is_a_usage_error(tmp_path):
    result = txlake("lake", "describe", "streams/nope", TXLAKE_LAKE__ROOT=str(tmp_path))
    assert result.returncode == 2
    assert "streams/nope" in one_line(result.stderr)


# -- unknown variables: a warning naming the closest setting -----------------------------------


def test_a_misspelt_variable_gets_a_warning_with_the_closest_setting():
    result = txlake("settings", TXLAKE_MYSQL_PORT="3308")
    assert result.returncode == 0
    assert one_line(result.stderr) == (
        "txlake: warning: TXLAKE_MYSQL_PORT matches no setting and is ignored; did you mean TXLAKE_MYSQL__PORT?"
    )


def test_a_misspelt_variable_in_the_env_file_gets_a_warning(tmp_path):
    (tmp_path / ".env").write_text("TXLAKE_LOG_LEVLE=DEBUG\n")
    result = txlake("settings", cwd=tmp_path)
    assert result.returncode == 0
    assert "TXLAKE_LOG_LEVLE (in .env) matches no setting" in one_line(result.stderr)
    assert "did you mean TXLAKE_LOG_LEVEL?" in result.stderr


def test_known_variables_get_no_warning():
    result = txlake("settings", TXLAKE_MYSQL__PORT="3308", TXLAKE_SECRETS_DIR="/nowhere", TXLAKE_KAFKA_PORT="9092",
                    txlake_log_level="INFO")
    assert result.returncode == 0
    assert result.stderr == ""
