"""What a new user sees: no command prints a dependency's warning on stderr.

Each command runs in its own interpreter, since a warning raised while a module is imported
shows only once per process. The environment is the user's, less any warning settings of
ours: ``PYTHONWARNINGS`` would change what is shown.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitserver.cli import build_parser
from tests.conftest import TEST_PROCESS_ONLY_ENV
from tests.functional.conftest import REPO_ROOT


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand of the CLI, as the words a user types."""
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_paths(sub, (*prefix, name))


def user_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITSERVER_", "PYTHONWARNINGS")) and k not in TEST_PROCESS_ONLY_ENV}
    env["GITSERVER_DATA_DIR"] = str(data_dir)
    return env


def gitserver(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gitserver", *args], env=env, cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


ALL_COMMANDS = sorted(command_paths(build_parser()))


def test_the_command_list_is_complete() -> None:
    # A guard on the walk itself: the parametrized test below must cover nested commands.
    assert ("init",) in ALL_COMMANDS and ("token", "create") in ALL_COMMANDS and ("db", "upgrade") in ALL_COMMANDS


@pytest.mark.parametrize("words", ALL_COMMANDS, ids=lambda words: " ".join(words) or "gitserver")
def test_help_of_every_command_prints_nothing_on_stderr(words: tuple[str, ...], tmp_path: Path) -> None:
    result = gitserver(user_env(tmp_path / "data"), *words, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"gitserver {' '.join(words)} --help wrote on stderr:\n{result.stderr}"
    assert "usage:" in result.stdout


def test_init_and_first_commands_print_nothing_on_stderr(tmp_path: Path) -> None:
    env = user_env(tmp_path / "data")
    for args in (("init",), ("tenant", "create", "x"), ("user", "create", "x", "alice"),
                 ("repo", "create", "x", "widgets")):
        result = gitserver(env, *args)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", f"gitserver {' '.join(args)} wrote on stderr:\n{result.stderr}"


def test_gunicorn_run_by_the_operator_prints_nothing_on_stderr(tmp_path: Path) -> None:
    # etc/gunicorn.conf.py loads the configuration (which asks asyncssh for its algorithms)
    # before gitserver's app is imported; --check-config loads the app too, then exits.
    env = user_env(tmp_path / "data")
    assert gitserver(env, "init").returncode == 0
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run([str(gunicorn), "-c", str(REPO_ROOT / "etc" / "gunicorn.conf.py"), "--check-config",
                             "gitserver.cmd.wiring:get_app()"], env=env, cwd=tmp_path, text=True,
                            capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
