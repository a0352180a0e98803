"""Stage stamps (``RUN_DIR/stamps/<stage>.json``): when a stage of a run is done and need not run again.

A stamp records a fingerprint of the configuration sections a stage depends on plus its inputs
(:func:`stamp_fingerprint`: names, sizes and modification times of the input files, :func:`path_fingerprint`);
a stage is done (:func:`stage_done`) when its outputs exist and the stamp's fingerprint equals the current
one. :mod:`kept.rundir` re-exports these names.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kept.atomic_io import atomic_write_json


def fingerprint(obj: Any) -> str:
    """A stable short hash of a JSON-serialisable object."""
    payload = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def path_fingerprint(paths: Iterable[str | Path]) -> dict[str, str]:
    """A cheap fingerprint of files/directories: relative names, sizes and modification times."""
    result: dict[str, str] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            result[str(path)] = "missing"
            continue
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        entries = []
        for file in files:
            if ".tmp-" in file.name or ".old-" in file.name:
                continue
            stat = file.stat()
            entries.append((str(file.relative_to(path)) if file != path else file.name, stat.st_size, stat.st_mtime_ns))
        result[str(path)] = fingerprint(entries)
    return result


def stamp_fingerprint(config_part: Any, inputs: Iterable[str | Path] = ()) -> str:
    return fingerprint({"config": config_part, "inputs": path_fingerprint(inputs)})


def write_stamp(
    run_dir: str | Path, stage: str, fp: str, config_part: Any = None, extra: dict[str, Any] | None = None
) -> Path:
    from kept.rundir import run_paths

    paths = run_paths(run_dir)
    record = {
        "stage": stage,
        "fingerprint": fp,
        "config": config_part,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if extra:
        record.update(extra)
    return atomic_write_json(paths.stamp(stage), record)


def read_stamp(run_dir: str | Path, stage: str) -> dict[str, Any] | None:
    from kept.rundir import run_paths

    path = run_paths(run_dir).stamp(stage)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def stage_done(run_dir: str | Path, stage: str, fp: str, outputs: Iterable[str | Path]) -> bool:
    """True when every output exists and the stamp records the same fingerprint."""
    if not all(Path(out).exists() for out in outputs):
        return False
    stamp = read_stamp(run_dir, stage)
    return stamp is not None and stamp.get("fingerprint") == fp
