"""`kept annotate RUN --engine datatrove --workers 2`: shards on datatrove's local executor, merged, equal to the
single-process annotation (skipped where the kept[datatrove] extra is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("datatrove")

from test_annotation_shards import TEXTS, write_run  # noqa: E402

from kept.annotation import annotate_run_dir  # noqa: E402
from masking import AnnotationConfig  # noqa: E402


def _spans(run: Path) -> list:
    from datasets import load_from_disk

    return load_from_disk(str(run / "corpus" / "annotated"))["spans"]


@pytest.mark.slow
def test_datatrove_engine_with_two_workers_equals_one_process(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kept.cli import app

    single = write_run(tmp_path / "single")
    whole = annotate_run_dir(single, AnnotationConfig.from_names("gold"))
    run = write_run(tmp_path / "engine")
    result = CliRunner().invoke(
        app, ["annotate", str(run), "--detectors", "gold", "--engine", "datatrove", "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    assert _spans(run) == _spans(single) and len(_spans(run)) == len(TEXTS)
    shards = sorted(p.name for p in (run / "corpus" / "annotated.shards").glob("*.stats.json"))
    assert shards == ["shard-00000-of-00002.stats.json", "shard-00001-of-00002.stats.json"]
    import json

    stats = json.loads((run / "corpus" / "annotation_stats.json").read_text())
    assert stats["spans"] == whole["spans"] and stats["shard"] == {"num_shards": 2, "merged": True}


@pytest.mark.slow
def test_datatrove_engine_with_one_worker_writes_the_annotation_without_a_merge(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kept.cli import app

    single = write_run(tmp_path / "single")
    annotate_run_dir(single, AnnotationConfig.from_names("gold"))
    run = write_run(tmp_path / "engine")
    result = CliRunner().invoke(
        app, ["annotate", str(run), "--detectors", "gold", "--engine", "datatrove", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert _spans(run) == _spans(single)


def test_datatrove_engine_refuses_hand_made_shards(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kept.cli import app

    run = write_run(tmp_path)
    result = CliRunner().invoke(app, ["annotate", str(run), "--engine", "datatrove", "--num-shards", "2"])
    assert result.exit_code != 0
    assert "makes its own shards" in str(result.exception) + result.output
