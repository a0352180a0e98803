from __future__ import annotations

import subprocess
import sys

import pytest
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


def test_cli_shows_a_library_log_line_once_even_with_a_root_handler(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Library code logs to logging.getLogger(__name__); the CLI prints those records on its console, once,
    also after another library installed a root handler (``logging.info`` on the root logger does that)."""
    import io
    import logging

    from kept.commands.common import configure_logging

    root_stream = io.StringIO()
    root_handler = logging.StreamHandler(root_stream)
    logging.getLogger().addHandler(root_handler)
    try:
        configure_logging()
        configure_logging()  # idempotent: still one console handler
        logging.getLogger("kept.runner").info("kg: TransE embeddings, MRR [0.031]")
        logging.getLogger("masking.annotator").warning("3 spans dropped")
    finally:
        logging.getLogger().removeHandler(root_handler)
    err = capsys.readouterr().err
    assert err.count("kg: TransE embeddings, MRR [0.031]") == 1  # printed literally (no rich markup)
    assert "warning: 3 spans dropped" in err
    assert root_stream.getvalue() == ""
    monkeypatch.setenv("RANK", "1")  # another process of a torchrun launch: its warnings only
    logging.getLogger("kept.pretrain").info("resuming from checkpoint-2")
    logging.getLogger("kept.pretrain").warning("rank 1 saw a bad batch")
    err = capsys.readouterr().err
    assert "resuming" not in err and "warning: rank 1 saw a bad batch" in err
