from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from kept import __version__
from kept.cli import app

runner = CliRunner()


def test_version_prints_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_command_groups() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "data" in result.output and "kg" in result.output


def test_console_script_runs_as_module() -> None:
    completed = subprocess.run([sys.executable, "-m", "kept", "--version"], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"kept {__version__}"
