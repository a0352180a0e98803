"""Atomic writes for the masking package (it cannot import kept): ``name.tmp-<pid>`` then ``os.replace``.

A failing write (disk full, read-only, no permission) removes the temporary file, leaves the
previous artifact as it was and raises :class:`MaskingError` naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from masking.errors import MaskingError


def _tmp(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def _write_error(error: OSError, path: Path) -> MaskingError:
    return MaskingError(f"cannot write: {error.strerror or error}", where=path,
                        fix="free disk space or fix the permissions, then re-run (files written before are unchanged)")


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    tmp = _tmp(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise _write_error(error, path) from error
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_json(path: str | Path, payload: Any, **dump_kwargs: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, **dump_kwargs) + "\n")


def atomic_save_dataset(dataset: Any, target: str | Path) -> Path:
    """``dataset.save_to_disk`` into a sibling temporary directory, then swap it in place of ``target``."""
    target = Path(target)
    tmp = _tmp(target)
    old = target.with_name(f"{target.name}.old-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        dataset.save_to_disk(str(tmp))
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(error, target) from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError as error:
        if old.exists():
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(error, target) from error
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return target
