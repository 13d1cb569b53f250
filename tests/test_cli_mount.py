"""digitize.cli: the storage, pipeline and web commands are mounted when asked for (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from digitize import cli

ROOT = Path(__file__).resolve().parent.parent


def test_the_optional_commands_are_imported_only_when_one_is_asked_for() -> None:
    code = ("import json, sys, click; from digitize import cli; before = 'storage.cli' in sys.modules; "
            "run = cli.cli.get_command(click.Context(cli.cli), 'run'); after_run = 'storage.cli' in sys.modules; "
            "cases = cli.cli.get_command(click.Context(cli.cli), 'cases'); "
            "print(json.dumps([before, after_run, cases is not None, 'storage.cli' in sys.modules]))")
    done = _in_a_fresh_process(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [False, False, True, True]


def _every_command_name() -> set[str]:
    import importlib

    names = set(cli.cli.commands)  # the built-ins, before mounting
    for module in cli._Commands.OPTIONAL:
        names |= {command.name for command in importlib.import_module(module).COMMANDS}
    return names


def test_help_lists_every_command_and_an_unknown_one_is_refused() -> None:
    runner = CliRunner()
    shown = runner.invoke(cli.cli, ["--help"])
    assert shown.exit_code == 0
    listed = {line.split()[0] for line in shown.output.split("Commands:")[1].splitlines()
              if line.startswith("  ") and line.split()}
    assert listed >= _every_command_name() and len(_every_command_name()) > 15
    refused = runner.invoke(cli.cli, ["no-such-command"])
    assert refused.exit_code == 2 and "No such command" in refused.output


def _in_a_fresh_process(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


def test_an_optional_module_that_does_not_import_is_named_and_leaves_the_others_working() -> None:
    """A broken web extra made every storage and pipeline command, and --help, fail; a second lookup
    in the same process then said "No such command" (review of coldstart15)."""
    code = ("import sys; sys.modules['web.cli'] = None; from digitize import cli; "
            "codes = [cli.main(['serve', '--help']), cli.main(['serve', '--help']), "
            "cli.main(['cases', '--help']), cli.main(['--help'])]; print([int(c) for c in codes])")
    done = _in_a_fresh_process(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == f"[{int(cli.ExitCode.missing_dependency)}, " \
        f"{int(cli.ExitCode.missing_dependency)}, 0, 0]"
    errors = [line for line in done.stderr.splitlines() if line.startswith("digitize:")]
    assert len(errors) == 2 and all("'serve' unavailable: web.cli" in line for line in errors), done.stderr
    assert "Traceback" not in done.stderr


def test_a_command_name_defined_twice_is_refused() -> None:
    names = [command.name for command in cli.cli.commands.values()]
    assert len(names) == len(set(names))
    code = ("import storage.cli as s, click; from digitize import cli; "
            "s.COMMANDS.append(click.Command('run')); "
            "cli.cli.get_command(click.Context(cli.cli), 'cases')")
    done = _in_a_fresh_process(code)
    assert done.returncode != 0 and "command 'run' defined twice (storage.cli)" in done.stderr
