"""``model.init_from``: the checkpoint a run starts from, resolved and checked before any training.

:func:`resolve_init_from` turns ``run:NAME``, ``packaged:NAME`` or a path into a model directory;
:func:`check_checkpoint_dir` checks it holds a kept or BERT config.json and readable safetensors weights;
:func:`refuse_remote_code` refuses a directory asking for custom code (``auto_map``). :mod:`kept.config`
re-exports these names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kept.errors import KeptError


def resolve_init_from(value: str | None, runs_dir: str | Path = "runs") -> Path | None:
    """``run:NAME`` → ``runs_dir/NAME/model``; ``packaged:NAME`` → a packaged checkpoint
    (:func:`kept.checkpoints.offline_checkpoint_dir`); a path stays a path. Checks it is a loadable model dir."""
    if value is None:
        return None
    if value.startswith("packaged:"):  # a checkpoint shipped in a Python package (kept demo: packaged:minilm-l6)
        from kept.checkpoints import offline_checkpoint_dir

        path = offline_checkpoint_dir(value[len("packaged:") :])
    elif value.startswith("run:"):
        import re

        name = value[4:]
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
            raise KeptError(
                f"init_from '{value}': '{name}' is not a run name",
                where="model.init_from",
                fix="run:NAME takes the name of a run under runs_dir (letters, digits, '.', '_', '-'; "
                "no '/' or '..'); give a path for a model elsewhere",
            )
        path = Path(runs_dir) / name / "model"
        if not path.exists():
            raise KeptError(
                f"init_from '{value}': run '{value[4:]}' has no final model",
                where="model.init_from",
                fix=f"finish pretraining that run first ({path} missing)",
            )
    else:
        path = Path(value).expanduser()
        if not path.exists():
            raise KeptError(
                f"init_from '{value}' does not exist",
                where="model.init_from",
                fix="give a model directory (a run's model/ or a BERT checkpoint) or run:NAME",
            )
    check_checkpoint_dir(path)
    return path


#: Files of a model or tokenizer directory whose ``auto_map`` makes transformers offer to run code
#: shipped in the directory (``trust_remote_code``).
REMOTE_CODE_FILES: tuple[str, ...] = ("config.json", "tokenizer_config.json")


def refuse_remote_code(directory: str | Path, where: str) -> None:
    """Refuse a model or tokenizer directory that asks for custom code (an ``auto_map`` in its config.json or
    tokenizer_config.json). kept loads everything with ``trust_remote_code=False`` as well; this says so up
    front, in one line naming the file, instead of transformers' question or traceback."""
    import json

    for name in REMOTE_CODE_FILES:
        file = Path(directory) / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise KeptError(
                f"'{file}' is not valid JSON", where=where, fix="re-save the directory with save_pretrained"
            ) from None
        if isinstance(data, dict) and "auto_map" in data:
            raise KeptError(
                f"'{file}' has an `auto_map` key: loading it would run code from the directory",
                where=where,
                fix="kept never runs custom model code (trust_remote_code); use a "
                "kept or BERT checkpoint, or remove `auto_map` if the classes are built in",
            )


def check_checkpoint_dir(path: Path) -> dict[str, Any]:
    """A model dir must hold config.json of a kept or BERT model and its weights, and no ``auto_map``."""
    import json

    where = "model.init_from"
    config_file = path / "config.json"
    if not path.is_dir() or not config_file.exists():
        raise KeptError(
            f"'{path}' is not a model checkpoint (no config.json)",
            where=where,
            fix="point init_from at a directory written by save_pretrained (a run's model/)",
        )
    try:
        model_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KeptError(
            f"'{config_file}' is not valid JSON",
            where=where,
            fix="point init_from at a directory written by save_pretrained (a run's model/)",
        ) from None
    if not isinstance(model_config, dict):
        raise KeptError(
            f"'{config_file}' is not a model configuration (a JSON object)",
            where=where,
            fix="point init_from at a directory written by save_pretrained (a run's model/)",
        )
    refuse_remote_code(path, where)
    model_type = model_config.get("model_type")
    if model_type not in ("kept", "bert"):
        raise KeptError(
            f"'{path}' holds a '{model_type}' model; init_from needs a kept or BERT checkpoint",
            where=where,
            fix="start from a run's model/ dir or a BERT checkpoint",
        )
    weights = [
        p for p in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json") if (path / p).exists()
    ]
    if not weights:
        raise KeptError(
            f"'{path}' has no weights (model.safetensors)",
            where=where,
            fix="the checkpoint is incomplete; re-run the stage that saved it",
        )
    if model_type == "kept" and weights == ["pytorch_model.bin"]:
        raise KeptError(
            f"'{path / 'pytorch_model.bin'}' is a pickle file; kept checkpoints are loaded from model.safetensors only",
            where=where,
            fix="re-save the model with save_pretrained(DIR) (safetensors is its default) and point init_from at DIR",
        )
    if weights[0] == "model.safetensors":
        from safetensors import safe_open

        try:  # reads only the header: cheap, and catches truncated or foreign files before training starts
            with safe_open(str(path / "model.safetensors"), framework="numpy") as handle:
                handle.keys()
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise KeptError(
                f"'{path / 'model.safetensors'}' is not a readable safetensors file "
                f"({str(error).splitlines()[0][:100]})",
                where=where,
                fix="the checkpoint is damaged or incomplete; re-run the stage that saved it",
            ) from None
    return model_config
