"""The run configuration: one YAML file, validated with pydantic, saved resolved in the run directory.

```yaml
name: demo                  # the run directory is runs_dir/name unless a command is given one
data: {source: wikipedia_sample, max_documents: 30}
kg: {model: TransE, dim: 64, epochs: 50}          # kg.EmbeddingConfig fields
annotation: {...}                                  # masking.AnnotationConfig fields
tokenizer: {vocab_size: 8000}                      # or base_model: bert-base-uncased
encode: {max_length: 128, validation_fraction: 0.1}
masking: {strategy: entity}                        # masking.MaskingConfig fields
model: {preset: tiny, fusion: true, init_from: null}
train: {max_steps: 200, batch_size: 16, learning_rate: 5e-4}
eval: {...}                                        # kept.evaluate.config.EvalConfig fields
```

Every section forbids unknown keys; a wrong key or type is a :class:`KeptError` naming the key
path, the file and the line. Numbers must be finite and not booleans; the YAML is read by
:func:`read_yaml` (no aliases, no duplicate keys, not empty). Command-line flags are overrides of the same fields
(``--set train.max_steps=50``), applied after the file.

The ``kg``, ``annotation`` and ``masking`` sections are the configuration classes of the ``kg`` and
``masking`` packages (pydantic models on the one base, :class:`kg.config_model.ConfigModel`), so their
fields are defined (and documented) in one place.

This module holds :class:`RunConfig` and loading/saving; beside it: :mod:`kept.config_sections` (kept's own
sections: data, tokenizer, encode, model, train, distill), :mod:`kept.yaml_loader` (the YAML reader),
:mod:`kept.overrides` (``--set``), :mod:`kept.config_errors` (error messages with file:line),
:mod:`kept.model_overrides` (``model.overrides`` checks), :mod:`kept.init_from` (``model.init_from``) and
:mod:`kept.config_diff` (what changed between two configurations).
Their public names (and ``read_yaml``, ``_yaml_line``, ...) stay importable from ``kept.config``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

# the names below moved to their own modules; kept.config re-exports them (and uses some itself)
from kept.config_diff import NON_TRAINING_KEYS, TRAINING_SECTIONS, changed_keys, flatten, training_view  # noqa: F401
from kept.config_errors import (
    _PYDANTIC_EXTRA,
    _config_error,
    _describe,
    _flatten_validation,
    non_finite_number,  # noqa: F401
    non_string_key,
)
from kept.config_sections import (  # noqa: F401 - the sections are kept.config's names
    DataConfig,
    DataSource,
    DistillConfig,
    EncodeConfig,
    ModelConfig,
    TokenizerConfig,
    TrainConfig,
    _Section,
)
from kept.errors import KeptError
from kept.evaluate.config import EvalConfig
from kept.init_from import REMOTE_CODE_FILES, check_checkpoint_dir, refuse_remote_code, resolve_init_from  # noqa: F401
from kept.model_overrides import closest_name, kept_config_fields, override_range_problem, validate_model_overrides  # noqa: F401
from kept.overrides import apply_overrides, override_pairs, parse_overrides  # noqa: F401
from kept.yaml_loader import MAX_YAML_DEPTH, RefusedYaml, _yaml_line, parse_yaml, read_yaml  # noqa: F401
from kg.config_model import ConfigModel, boolean_number_problem  # noqa: F401 - boolean_number_problem: kept's name
from kg.embedding_config import EmbeddingConfig
from masking.detectors.config import AnnotationConfig
from masking.masking_config import MaskingConfig


class RunConfig(_Section):
    """A whole run: data → kg → annotation → tokenizer → encode → pretrain → eval."""

    #: a plain name of at most 200 characters (a folder name takes 255; kept adds suffixes such as ``.old-<pid>``)
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=200)
    runs_dir: Path = Path("runs")
    data: DataConfig = Field(default_factory=DataConfig)
    kg: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    annotation: AnnotationConfig = Field(default_factory=AnnotationConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)

    @field_validator("kg", "annotation", "masking", "eval", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # `masking:` with every key commented out: the defaults

    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ------------------------------------------------------------------ validating, loading, saving


def validate_config(
    data: dict[str, Any],
    *,
    source: str | Path | None = None,
    text: str | None = None,
    overridden: Collection[tuple[str, ...]] = (),
) -> RunConfig:
    """Validate a raw mapping; errors name the key path, the file and (from ``text``) the line, or the
    command line for a key in ``overridden`` (set by a flag or ``--set``)."""
    if not isinstance(data, dict):
        raise KeptError(
            "a run configuration must be a YAML mapping of sections",
            where=source,
            fix="start from the example in README.md (`kept run --help`)",
        )
    loc = non_finite_number(data)
    if loc is not None:
        raise _config_error(
            f"invalid value for '{'.'.join(map(str, loc))}': not a finite number",
            loc,
            "give a finite number (.inf and .nan are not allowed)",
            source,
            text,
            overridden,
        )
    loc = non_string_key(data)
    if loc is not None:
        where = f"'{'.'.join(map(str, loc[:-1]))}'" if loc[:-1] else "the top level"
        raise _config_error(
            f"invalid key {loc[-1]} at {where}: keys are names",
            loc[:-1],
            "write the section or field name as a key",
            source,
            text,
            overridden,
        )
    try:
        return RunConfig.model_validate(data)
    except KeptError:
        raise
    except ValidationError as error:
        problems = _flatten_validation(error)
        loc, what = _describe(problems)
        valid = ", ".join(RunConfig.model_fields) if len(loc) == 1 else None
        kind, msg = problems[0][1], problems[0][2]
        if valid and kind == "extra_forbidden":
            fix = f"top-level sections are: {valid}"
        elif kind == "extra_forbidden" and msg != _PYDANTIC_EXTRA:  # a validator's own hint (closest field name)
            fix = msg
        else:
            fix = "fix the value or remove the key (see README.md for every field)"
        raise _config_error(what, loc, fix, source, text, overridden) from None


def load_config(path: str | Path | None = None, overrides: Iterable[str] | dict[str, Any] = ()) -> RunConfig:
    """Read a YAML file (or start from defaults when None), apply overrides, validate."""
    data: dict[str, Any] = {}
    text = None
    if path is not None:
        data, text = read_yaml(path)
        if not isinstance(data, dict):
            raise KeptError("a run configuration must be a YAML mapping of sections", where=path)
        # relative paths inside the file are relative to the file
        data = _absolutize(data, Path(path).resolve().parent)
    pairs = override_pairs(overrides)
    data = apply_overrides(data, {".".join(key): value for key, value in pairs})
    return validate_config(data, source=path, text=text, overridden=[tuple(key) for key, _ in pairs])


_PATH_KEYS = {("data", k) for k in ("corpus", "wikipedia_dump", "kg_triples", "kg_labels", "kg_aliases", "fewrel")} | {
    ("runs_dir",),
    ("eval", "relation", "data"),
    ("eval", "probe", "relation_labels"),
}


def _absolutize(data: dict[str, Any], base: Path) -> dict[str, Any]:
    for keys in _PATH_KEYS:
        node: Any = data
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            value = Path(node[keys[-1]]).expanduser()
            if not value.is_absolute() and (base / value).exists():
                node[keys[-1]] = str(base / value)
    return data


def save_config(config: RunConfig, run_dir: str | Path) -> Path:
    """Write the resolved configuration to ``RUN_DIR/config.yaml`` (atomically, rank 0 only)."""
    from kept.rundir import atomic_write_text, is_main_process, run_paths

    path = run_paths(run_dir).config
    if is_main_process():
        text = "# resolved KEPT run configuration (written by kept; edit and re-run to change)\n"
        text += yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
        atomic_write_text(path, text)
    return path


def load_run_config(
    run_dir: str | Path, overrides: Iterable[str] | dict[str, Any] = (), required: bool = False
) -> RunConfig:
    """The configuration of a run directory (its config.yaml) with overrides applied.

    Without a config.yaml the defaults are used (or a KeptError when ``required``).
    """
    from kept.rundir import check_run_format, run_paths

    check_run_format(run_dir)
    path = run_paths(run_dir).config
    if not path.exists():
        if required:
            raise KeptError(
                "config.yaml not found in the run directory",
                where=run_dir,
                fix="run `kept run CONFIG` or an earlier stage first",
            )
        config = load_config(None, overrides)
        return (
            config.model_copy(update={"name": Path(run_dir).name or "run", "runs_dir": Path(run_dir).parent})
            if config.name == "run"
            else config
        )
    return load_config(path, overrides)


def resolve_run_config(
    run_dir: str | Path, config_file: str | Path | None = None, overrides: Iterable[str] | dict[str, Any] = ()
) -> RunConfig:
    """The configuration a command uses on RUN_DIR: ``config_file`` if given, else RUN_DIR/config.yaml,
    else the defaults; then the overrides (command-line flags and ``--set``)."""
    if config_file is not None:
        config = load_config(config_file, overrides)
    else:
        config = load_run_config(run_dir, overrides)
    return config
