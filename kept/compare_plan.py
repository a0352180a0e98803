"""What `kept compare CONFIG` will run: the compare section of the YAML and the plan made from it.

The compare YAML is a run configuration plus a ``compare`` section::

    name: strategies
    data: {source: wikipedia_sample, max_documents: 30}
    train: {max_steps: 100}
    compare:
      strategies: [token, entity]
      fusion: [false, true]
      seeds: [0, 1]
      sop: [false, true]                    # optional: SOP loss off/on (variants `token`, `token+sop`, ...)
      baseline: token                       # default: the first variant
      bootstrap: {resamples: 1000, seed: 0}

or, instead of the product of strategies × fusion × sop, a list of named variants, each a set of dotted
overrides of the base configuration (anything a run configuration holds)::

    compare:
      variants:
        - {name: token, set: {masking.strategy: token, model.fusion: false}}
        - {name: entity+joint-kg, set: {masking.strategy: entity, model.freeze_entity_table: false,
                                       model.joint_kg_weight: 0.1}}
      seeds: [0, 1]

`--set compare.seeds=[0,1,2]` overrides the compare section like any other field. A second `kept compare`
on the same compare directory merges its variants into the summary already there (a variant run again
replaces its old runs) as long as the shared data are the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from kept.compare_result import HEADLINE_METRICS, BootstrapSection
from kept.errors import KeptError


class VariantSpec(BaseModel):
    """One named variant of ``compare.variants``: dotted overrides of the base configuration."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9+._-]*$",
        max_length=100,
        description="the variant's column in the table (run directories: NAME-seedS, + as _)",
    )
    set: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value, e.g. masking.strategy: entity")


#: Fields of the product form, refused together with an explicit ``variants`` list.
PRODUCT_FIELDS: tuple[str, ...] = ("strategies", "fusion", "sop")


class CompareSection(BaseModel):
    """The ``compare`` section of a compare YAML."""

    model_config = ConfigDict(extra="forbid")

    variants: Optional[list[VariantSpec]] = Field(
        None,
        min_length=1,
        description="named variants, each a set of dotted overrides; instead of the product "
        "of strategies × fusion × sop",
    )

    strategies: list[str] = Field(default_factory=lambda: ["token", "entity"], min_length=1)
    fusion: list[bool] = Field(default_factory=lambda: [False, True], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    sop: Optional[list[bool]] = Field(
        None,
        min_length=1,
        description="SOP loss off/on per variant (model.overrides.use_sop, name suffix +sop); "
        "with any true, every variant trains on the same sentence pairs "
        "(encode.sentence_pairs). null: what the base configuration sets",
    )
    out: Path | None = Field(None, description="compare directory; default runs_dir/name")
    metrics: list[str] = Field(
        default_factory=lambda: list(HEADLINE_METRICS), description="figures shown in the table and figures"
    )
    baseline: str | None = Field(
        None, description="variant the others are compared to (default: the first), e.g. `token` or `entity+fusion`"
    )
    bootstrap: BootstrapSection = Field(
        default_factory=BootstrapSection, description="resamples and seed of the paired bootstrap intervals"
    )
    reference: bool = Field(
        False,
        description="also evaluate the starting checkpoint (model.init_from) with no "
        "continued pretraining, as the variant `reference`, through the "
        "same evaluation and fine-tuning, once per seed",
    )


def variant_name(strategy: str, fusion: bool, sop: bool = False) -> str:
    return f"{strategy}{'+fusion' if fusion else ''}{'+sop' if sop else ''}"


def product_variants(section: CompareSection) -> list[VariantSpec]:
    """The variants a section names: its ``variants`` list, else strategies × fusion × sop as overrides."""
    if section.variants is not None:
        return list(section.variants)
    specs = []
    sops: list[bool | None] = list(section.sop) if section.sop else [None]
    for strategy, fusion, sop in itertools.product(section.strategies, section.fusion, sops):
        overrides: dict[str, Any] = {"masking.strategy": strategy, "model.fusion": fusion}
        if sop is not None:
            overrides["model.overrides.use_sop"] = sop
        specs.append(VariantSpec(name=variant_name(strategy, fusion, bool(sop)), set=overrides))
    return specs


# ------------------------------------------------------------------ kept compare CONFIG

#: The variant holding the starting checkpoint evaluated with no continued pretraining.
REFERENCE = "reference"
#: Stages prepared once and shared by every variant (their outputs are symlinked into each run).
SHARED_STAGES: tuple[str, ...] = ("data", "kg", "annotate", "encode")
SHARED_PATHS: tuple[str, ...] = ("kg", "corpus", "tokenizer", "encoded")
VARIANT_STAGES: tuple[str, ...] = ("pretrain", "evaluate", "report")
#: What the shared stages are made from: a variant may not override it (its runs train on the shared data).
SHARED_KEYS: tuple[str, ...] = ("data", "kg", "annotation", "tokenizer", "encode", "model.init_from", "runs_dir")


@dataclass
class ComparePlan:
    """What `kept compare` will run: the base configuration and one entry per variant × seed."""

    base: Any  # kept.config.RunConfig
    section: CompareSection
    out: Path
    runs: dict[str, list[tuple[int, Any]]]  # variant -> [(seed, RunConfig)]

    @property
    def prepared_dir(self) -> Path:
        return self.out / "prepared"

    def run_dir(self, variant: str, seed: int) -> Path:
        safe = variant.replace("+", "_")
        return self.out / "runs" / f"{safe}-seed{seed}"


def _section_error(error: Any, path: Path, text: str | None) -> KeptError:
    from kept import config as config_module

    first = error.errors()[0]
    loc = ("compare", *first["loc"])
    return KeptError(
        f"invalid value for '{'.'.join(map(str, loc))}': {first['msg']}",
        where=path,
        line=config_module._yaml_line(text, loc),
        fix="see `kept compare --help`",
    )


def load_compare_config(path: str | Path, overrides: Sequence[str] = ()) -> ComparePlan:
    """Read a compare YAML: a run configuration plus a ``compare`` section (KeptError naming file:line).

    ``overrides`` (``--set KEY=VALUE``) apply to the base configuration, and to the compare section
    for keys under ``compare.``."""
    from pydantic import ValidationError

    from kept import config as config_module

    path = Path(path)
    data, text = config_module.read_yaml(path)
    if not isinstance(data, dict):
        raise KeptError(
            "a compare configuration must be a YAML mapping",
            where=path,
            fix="write a run configuration plus a `compare:` section",
        )
    compare_overrides = [o for o in overrides if o.split("=", 1)[0].strip().startswith("compare.")]
    base_overrides = [o for o in overrides if o not in compare_overrides]
    if compare_overrides:
        data = config_module.apply_overrides(data, compare_overrides)
    raw = data.pop("compare", None)
    if raw is None:
        raise KeptError(
            "no `compare:` section",
            where=path,
            fix="add `compare: {strategies: [token, entity], fusion: [false, true], seeds: [0, 1]}`",
        )
    try:
        section = CompareSection.model_validate(raw)
    except ValidationError as error:
        raise _section_error(error, path, text) from None
    given_product = [f for f in PRODUCT_FIELDS if f in section.model_fields_set]
    if section.variants is not None and given_product:
        raise KeptError(
            f"compare.variants and compare.{given_product[0]} are both given",
            where=path,
            line=config_module._yaml_line(text, ("compare", given_product[0])),
            fix="list the variants (each with its overrides) or the product fields, not both",
        )
    variants = product_variants(section)
    data = config_module._absolutize(data, path.resolve().parent)
    data = config_module.apply_overrides(data, base_overrides)
    if section.sop is not None and any(section.sop):  # the prepared data is shared: pairs for every variant
        data = config_module.apply_overrides(data, {"encode.sentence_pairs": True})
    base = config_module.validate_config(data, source=path, text=text)
    out = section.out if section.out is not None else base.run_dir()
    if not out.is_absolute() and section.out is not None:
        out = path.resolve().parent / out
    runs: dict[str, list[tuple[int, Any]]] = {}
    for index, spec in enumerate(variants):
        if spec.name in runs or spec.name == REFERENCE:
            raise KeptError(
                f"variant '{spec.name}' is listed twice"
                if spec.name in runs
                else f"variant name '{REFERENCE}' is reserved",
                where=path,
                line=config_module._yaml_line(
                    text, ("compare", "variants", index) if section.variants is not None else ("compare",)
                ),
                fix="give each variant its own name (compare.reference adds `reference`)",
            )
        shared = [key for key in spec.set if any(key == k or key.startswith(f"{k}.") for k in SHARED_KEYS)]
        if shared:
            raise KeptError(
                f"variant '{spec.name}' sets {shared[0]}, which the shared data are made from",
                where=path,
                line=config_module._yaml_line(text, ("compare", "variants", index)),
                fix="every variant trains on the same prepared data: set it in the base configuration, "
                "or compare it in another `kept compare` directory",
            )
        runs[spec.name] = []
        for seed in section.seeds:
            values = config_module.apply_overrides(base.to_dict(), dict(spec.set))
            values["name"] = f"{spec.name.replace('+', '_')}-seed{seed}"
            if "seed" in values.get("masking", {}):
                values["masking"]["seed"] = seed
            values["train"] = {**values["train"], "seed": seed}
            runs[spec.name].append((seed, config_module.validate_config(values, source=path, text=text)))
    if section.reference:  # last, so the default baseline stays the first variant
        if not base.model.init_from:
            raise KeptError(
                "compare.reference needs a starting checkpoint",
                where=path,
                line=config_module._yaml_line(text, ("compare", "reference")),
                fix="set model.init_from (a BERT or kept model directory, or run:NAME)",
            )
        runs[REFERENCE] = []
        for seed in section.seeds:
            values = base.to_dict()
            values["name"] = f"{REFERENCE}-seed{seed}"
            # no continued pretraining: the checkpoint as loaded (plain text layers, no fusion)
            values["model"] = {**values["model"], "fusion": False}
            values["train"] = {**values["train"], "seed": seed, "max_steps": 0}
            runs[REFERENCE].append((seed, config_module.validate_config(values, source=path, text=text)))
    return ComparePlan(base, section, Path(out), runs)
