"""Sharded annotation of one run directory by concurrent processes (kept.annotation.annotate_shard)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kept.annotation import annotate_run_dir, annotate_shard, shards_complete
from kept.errors import KeptError
from kept.rundir import RunLock
from masking import AnnotationConfig

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "Paris is in France.",
    "Barack Obama visited Microsoft.",
    "The Eiffel Tower is tall.",
    "New York City never sleeps.",
    "Obama met Paris officials.",
    "Nothing to see here.",
]


def write_run(root: Path) -> Path:
    run = root / "run"
    (run / "corpus").mkdir(parents=True)
    lines = []
    for i, text in enumerate(TEXTS):
        word = text.split()[0]
        spans = [{"start": 0, "end": len(word), "kind": "entity", "label": "X", "entity_id": -1, "source": "gold"}]
        lines.append(json.dumps({"id": f"d{i}", "title": "", "text": text, "spans": spans}))
    (run / "corpus" / "documents.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run


def test_a_shard_runs_beside_a_sibling_and_leaves_the_merge_to_it(tmp_path):
    from datasets import load_from_disk

    config = AnnotationConfig.from_names("gold")
    whole = annotate_run_dir(write_run(tmp_path / "single"), config)
    run = write_run(tmp_path)
    sibling = RunLock(run, "shard 0", shared=True).acquire()  # shard 0 still annotating
    try:
        with pytest.raises(KeptError, match="in use"):  # exclusive writers wait for the shards
            RunLock(run, "kept encode").acquire()
        stats = annotate_shard(run, config, num_shards=2, shard_index=1)
        assert not stats["shard"].get("merged") and not (run / "corpus" / "annotated").exists()
        stats = annotate_shard(run, config, num_shards=2, shard_index=0)  # "shard 0" finishes (sibling holds on)
        assert not stats["shard"].get("merged") and shards_complete(run, 2)
    finally:
        sibling.release()
    stats = annotate_shard(run, config, num_shards=2, shard_index=0)  # the last one to finish merges
    assert stats["shard"] == {"num_shards": 2, "merged": True} and stats["spans"] == whole["spans"]
    assert (
        load_from_disk(str(run / "corpus" / "annotated"))["spans"]
        == load_from_disk(str(tmp_path / "single" / "run" / "corpus" / "annotated"))["spans"]
    )


def test_one_shard_is_annotated_by_one_process(tmp_path):
    import fcntl

    run = write_run(tmp_path)
    lock_path = run / "corpus" / "annotated.shards" / "shard-00001-of-00002.lock"
    lock_path.parent.mkdir(parents=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(KeptError, match="shard 1 of 2 is being annotated by another process"):
            annotate_shard(run, AnnotationConfig.from_names("gold"), num_shards=2, shard_index=1)
    with pytest.raises(Exception, match="not below --num-shards"):
        annotate_shard(run, AnnotationConfig.from_names("gold"), num_shards=2, shard_index=2)


@pytest.mark.slow
def test_two_concurrent_shard_processes_on_one_run(tmp_path):
    """What the README documents: `kept annotate RUN --num-shards K --shard-index I` from K processes at once."""
    from datasets import load_from_disk

    annotate_run_dir(write_run(tmp_path / "single"), AnnotationConfig.from_names("gold"))
    run = write_run(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kept",
                "annotate",
                str(run),
                "--detectors",
                "gold",
                "--num-shards",
                "2",
                "--shard-index",
                str(i),
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    assert (
        load_from_disk(str(run / "corpus" / "annotated"))["spans"]
        == load_from_disk(str(tmp_path / "single" / "run" / "corpus" / "annotated"))["spans"]
    )
    stats = json.loads((run / "corpus" / "annotation_stats.json").read_text())
    assert stats["shard"] == {"num_shards": 2, "merged": True} and stats["documents"] == len(TEXTS)


def test_last_shard_says_so_when_another_command_holds_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shard done, but a non-shard writer took the run between the shard's release and its merge:
    nobody would merge, so the shard says how to merge instead of returning quietly."""
    import kept.annotation as annotation

    run = write_run(tmp_path)
    holders: list[RunLock] = []

    def complete_and_taken(*_: object) -> bool:  # the gap: `kept encode` takes the run right now
        holders.append(RunLock(run, "kept encode").acquire())
        return True

    monkeypatch.setattr(annotation, "shards_complete", complete_and_taken)
    try:
        with pytest.raises(KeptError, match=r"were not merged.*--num-shards 2 --merge"):
            annotation.annotate_shard(run, AnnotationConfig.from_names("gold"), num_shards=2, shard_index=0)
    finally:
        for holder in holders:
            holder.release()
