"""kept report on run and compare directories (hand-written metrics, log history, annotation stats)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_fixtures import ANNOTATION_STATS, LOG_HISTORY, fake_run
from typer.testing import CliRunner

from kept.cli import app
from kept.compare import compare_runs
from kept.errors import KeptError
from kept.report import report, report_run_dir


def complete_run(root: Path, name: str, cloze: float = 0.3) -> Path:
    run_dir = fake_run(root, name, cloze, 5.0)
    (run_dir / "checkpoints" / "checkpoint-30").mkdir(parents=True)
    (run_dir / "checkpoints" / "checkpoint-30" / "trainer_state.json").write_text(
        json.dumps({"global_step": 30, "log_history": LOG_HISTORY})
    )
    (run_dir / "corpus").mkdir()
    (run_dir / "corpus" / "annotation_stats.json").write_text(json.dumps(ANNOTATION_STATS))
    return run_dir


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:4] == b"\x89PNG"


def test_run_report_has_figures_and_sections(tmp_path) -> None:
    run_dir = complete_run(tmp_path, "r1")
    path = report(run_dir)
    assert path == run_dir / "eval" / "report.md"
    text = path.read_text()
    for section in (
        "# KEPT report: r1",
        "## Metrics",
        "## Learning curves",
        "## Annotation",
        "## Entity cloze examples",
        "## KG probe by relation",
    ):
        assert section in text, section
    assert "| cloze.accuracy | 0.3 |" in text
    assert "**relation** skipped: no FewRel data configured" in text
    assert "checkpoints/checkpoint-30/trainer_state.json" in text
    assert "| linked_fraction | 0.9 |" in text
    for name in ("metrics.png", "learning_curves.png", "annotation.png"):
        assert is_png(run_dir / "eval" / "figures" / name), name
        assert f"figures/{name}" in text
    assert not list((run_dir / "eval").rglob("*.tmp-*"))


def test_run_report_without_history_or_stats_says_so(tmp_path) -> None:
    run_dir = fake_run(tmp_path, "bare", 0.1, 5.0)
    text = report_run_dir(run_dir).read_text()
    assert "No learning curves:" in text and "trainer_state.json" in text
    assert "No annotation statistics:" in text and "annotation_stats.json" in text


def test_report_without_metrics_names_the_file(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(KeptError, match=r"run/eval/metrics\.json: metrics file not found"):
        report(tmp_path / "run")
    with pytest.raises(KeptError, match="directory not found"):
        report(tmp_path / "nowhere")


def test_compare_report(tmp_path) -> None:
    compare_dir = tmp_path / "cmp"
    runs = {
        "token": [complete_run(compare_dir / "runs", "t0", 0.1), complete_run(compare_dir / "runs", "t1", 0.2)],
        "entity+fusion": [complete_run(compare_dir / "runs", "e0", 0.4)],
    }
    result = compare_runs(runs)
    result.runs = {v: [str(Path(r).relative_to(compare_dir)) for r in rs] for v, rs in result.runs.items()}
    result.save(compare_dir / "compare")
    path = report(compare_dir)
    assert path == compare_dir / "eval" / "report.md"
    text = path.read_text()
    assert "# KEPT comparison report: cmp" in text and "0.150 ± 0.071" in text
    assert is_png(compare_dir / "eval" / "figures" / "compare_cloze.png")
    assert is_png(compare_dir / "eval" / "figures" / "learning_curves.png")
    assert "No log history" not in text


def test_cli_report(tmp_path) -> None:
    run_dir = complete_run(tmp_path, "cli")
    runner = CliRunner()
    ok = runner.invoke(app, ["report", str(run_dir)])
    assert ok.exit_code == 0, ok.output
    assert (run_dir / "eval" / "report.md").is_file()


@pytest.mark.slow  # the CLI's error path imports every package's error type (masking pulls in torch)
def test_cli_report_error_is_one_line_exit_2(tmp_path) -> None:
    from kept.cli import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "empty")])
    assert exit_info.value.code == 2
