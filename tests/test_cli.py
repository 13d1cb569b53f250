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
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [False, False, True, True]


def test_help_lists_every_command_and_an_unknown_one_is_refused() -> None:
    runner = CliRunner()
    shown = runner.invoke(cli.cli, ["--help"])
    assert shown.exit_code == 0
    for name in ("run", "servers", "cases", "search", "batch", "watch", "queue", "serve"):
        assert f"  {name} " in shown.output
    refused = runner.invoke(cli.cli, ["no-such-command"])
    assert refused.exit_code == 2 and "No such command" in refused.output
