"""A run's trained model and its tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kept.analysis.files import existing_dir
from kept.errors import KeptError


def load_tokenizer(run_dir: str | Path) -> Any:
    """The run's fast tokenizer (``tokenizer/``, or ``model/`` when it carries one)."""
    from transformers import AutoTokenizer

    run_dir = existing_dir(run_dir)
    for path in (run_dir / "tokenizer", run_dir / "model"):
        if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    raise KeptError(
        "tokenizer not found", where=run_dir / "tokenizer", fix="run the tokenizer step (`kept run CONFIG`)"
    )


def load_model(run_dir: str | Path, model_class: Any = None, **kwargs: Any) -> Any:
    """The run's final model (``model/``) in eval mode; ``model_class`` defaults to
    ``fusion.KeptForMaskedLM``. Extra keyword arguments go to ``from_pretrained``."""
    run_dir = existing_dir(run_dir)
    path = run_dir / "model"
    if not (path / "config.json").is_file():
        raise KeptError(
            "model not found (no model/config.json)", where=path, fix="pretrain the run first (`kept run CONFIG`)"
        )
    if model_class is None:
        from fusion import KeptForMaskedLM as model_class  # noqa: N813
    from kept.evaluate.common import quiet_from_pretrained

    try:
        model = quiet_from_pretrained(model_class, str(path), **kwargs)
    except (OSError, ValueError, KeyError) as error:
        from kept.export import outside_kept_fix

        raise KeptError(
            f"cannot load the model ({error})",
            where=path,
            fix=outside_kept_fix(error) or "check that it was saved by this version of kept (save_pretrained)",
        ) from error
    model.eval()
    return model
