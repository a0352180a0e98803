"""Compare variants (masking strategy × fusion on/off) over seeds on the same data and budget.

Two entry points:

* :func:`compare_runs` — aggregate already evaluated runs: ``{variant: [run_dir, ...]}`` →
  :class:`CompareResult` with mean ± std (sample std, ddof 1) of every figure per variant.
* :func:`run_compare` — `kept compare CONFIG`: prepare the data once, train and evaluate every
  variant × seed as its own run directory under the compare directory (the prepared kg, corpus,
  tokenizer and encoded data are shared through symlinks), then aggregate.

Outputs (``COMPARE_DIR/compare/``): ``summary.json`` (format ``kept.compare.summary``),
``summary.md`` and ``figures/*.png`` (bars with error bars).

The compare YAML is a run configuration plus a ``compare`` section::

    name: strategies
    data: {source: wikipedia_sample, max_documents: 30}
    train: {max_steps: 100}
    compare:
      strategies: [token, entity]
      fusion: [false, true]
      seeds: [0, 1]
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from kept.analysis import COMPARE_FORMAT, COMPARE_FORMAT_VERSION, flatten_metrics, json_safe, load_metrics
from kept.errors import KeptError

#: Figures shown in the printed table, the markdown summary and the figures (when present).
HEADLINE_METRICS: tuple[str, ...] = (
    "mlm.token.loss", "mlm.token.accuracy", "mlm.token.accuracy_by_kind.entity", "mlm.strategy.accuracy",
    "cloze.accuracy", "probe.hits_at_1",
    "probe.mrr", "relation.accuracy", "relation.macro_f1", "linkpred.mrr",
)
#: Figures where lower is better (everything else: higher is better).
LOWER_IS_BETTER: frozenset[str] = frozenset({"mlm.token.loss", "mlm.strategy.loss", "mlm.token.perplexity",
                                             "mlm.strategy.perplexity", "probe.mean_rank", "linkpred.mean_rank"})
#: Bookkeeping figures left out of the comparison.
_COUNTS = ("num_", "count", "seed", "epochs", "mlm_probability", "chance", "dim", "mean_candidates")


class CompareSection(BaseModel):
    """The ``compare`` section of a compare YAML."""

    model_config = ConfigDict(extra="forbid")

    strategies: list[str] = Field(default_factory=lambda: ["token", "entity"], min_length=1)
    fusion: list[bool] = Field(default_factory=lambda: [False, True], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    out: Path | None = Field(None, description="compare directory; default runs_dir/name")
    metrics: list[str] = Field(default_factory=lambda: list(HEADLINE_METRICS),
                               description="figures shown in the table and figures")


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int

    def format(self, digits: int = 3) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}" if self.n > 1 else f"{self.mean:.{digits}f}"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def summarize(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (0 for a single value) of the finite values."""
    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not finite:
        return Stat(math.nan, math.nan, 0)
    return Stat(statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0, len(finite))


def variant_name(strategy: str, fusion: bool) -> str:
    return f"{strategy}+fusion" if fusion else strategy


@dataclass
class CompareResult:
    """Per-variant statistics of every flat metric (``table[variant][metric] -> Stat``)."""

    variants: list[str]
    metrics: list[str]
    table: dict[str, dict[str, Stat]]
    runs: dict[str, list[str]]
    per_run: dict[str, dict[str, float]] = field(default_factory=dict)
    headline: list[str] = field(default_factory=lambda: list(HEADLINE_METRICS))

    def shown_metrics(self) -> list[str]:
        """Headline metrics that some variant has, in headline order (all metrics if none)."""
        shown = [m for m in self.headline if m in self.metrics]
        return shown or list(self.metrics)

    def best(self, metric: str) -> str | None:
        """The variant with the best mean of ``metric`` (lower for losses/ranks); None on a tie."""
        candidates = [(v, self.table[v][metric].mean) for v in self.variants
                      if metric in self.table[v] and self.table[v][metric].n > 0]
        if not candidates:
            return None
        pick = min if metric in LOWER_IS_BETTER else max
        name, value = pick(candidates, key=lambda item: item[1])
        if sum(1 for _, other in candidates if math.isclose(other, value, rel_tol=1e-9, abs_tol=1e-12)) > 1:
            return None  # a tie: nobody is best
        return name

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": COMPARE_FORMAT,
            "format_version": COMPARE_FORMAT_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "variants": self.variants,
            "metrics": self.metrics,
            "headline": self.shown_metrics(),
            "runs": self.runs,
            "table": {v: {m: s.to_dict() for m, s in self.table[v].items()} for v in self.variants},
            "per_run": self.per_run,
            "lower_is_better": sorted(m for m in self.metrics if m in LOWER_IS_BETTER),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CompareResult":
        def number(value: Any) -> float:
            return math.nan if value is None else float(value)

        table = {v: {m: Stat(number(s["mean"]), number(s["std"]), int(s["n"])) for m, s in rows.items()}
                 for v, rows in data["table"].items()}
        return cls(list(data["variants"]), list(data["metrics"]), table, dict(data["runs"]),
                   dict(data.get("per_run", {})), list(data.get("headline", HEADLINE_METRICS)))

    def to_markdown(self, metrics: Sequence[str] | None = None) -> str:
        """Metrics as rows, variants as columns (runs per variant in the header), best in bold."""
        metrics = list(metrics) if metrics is not None else self.shown_metrics()
        header = "| metric | " + " | ".join(f"{v} (n={len(self.runs.get(v, []))})" for v in self.variants) + " |"
        lines = [header, "|" + "---|" * (len(self.variants) + 1)]
        for metric in metrics:
            cells = []
            best = self.best(metric) if len(self.variants) > 1 else None
            for variant in self.variants:
                text = self.table[variant].get(metric, Stat(math.nan, math.nan, 0)).format()
                cells.append(f"**{text}**" if variant == best else text)
            arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
            lines.append(f"| {metric} {arrow} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("mean ± sample std over seeds (n runs per variant); best in bold; ↑ higher is better, ↓ lower.")
        return "\n".join(lines) + "\n"

    def rich_table(self, metrics: Sequence[str] | None = None) -> Any:
        """The same table for the terminal: one row per metric, one column per variant."""
        from rich.table import Table

        metrics = list(metrics) if metrics is not None else self.shown_metrics()
        table = Table(title="kept compare: mean ± std over seeds")
        table.add_column("metric", style="bold")
        for variant in self.variants:
            table.add_column(f"{variant}\n(n={len(self.runs.get(variant, []))})", justify="right")
        for metric in metrics:
            best = self.best(metric) if len(self.variants) > 1 else None
            row = [metric + (" ↓" if metric in LOWER_IS_BETTER else " ↑")]
            for variant in self.variants:
                text = self.table[variant].get(metric, Stat(math.nan, math.nan, 0)).format()
                row.append(f"[green]{text}[/]" if variant == best else text)
            table.add_row(*row)
        return table

    def plot(self, out_dir: str | Path, metrics: Sequence[str] | None = None) -> list[Path]:
        """Bar charts with error bars (one PNG per metric group), written atomically."""
        from kept.report import metric_bars_figure, save_figure

        metrics = list(metrics) if metrics is not None else self.shown_metrics()
        out_dir = Path(out_dir)
        paths = []
        groups: dict[str, list[str]] = {}
        for metric in metrics:
            groups.setdefault(metric.split(".")[0], []).append(metric)
        for group, names in groups.items():
            figure = metric_bars_figure(self, names, title=f"{group}: mean ± std over seeds")
            paths.append(save_figure(figure, out_dir / f"compare_{group}.png"))
        return paths

    def save(self, out_dir: str | Path, figures: bool = True) -> dict[str, Path]:
        """Write summary.json, summary.md and figures/*.png under ``out_dir`` (atomically)."""
        from kept.rundir import atomic_write_json, atomic_write_text

        out_dir = Path(out_dir)
        written = {"summary.json": atomic_write_json(out_dir / "summary.json", json_safe(self.to_dict()))}
        text = "# KEPT comparison\n\n" + self.to_markdown() + "\n## Runs\n\n"
        text += "\n".join(f"- **{v}**: " + ", ".join(f"`{r}`" for r in self.runs.get(v, [])) for v in self.variants)
        written["summary.md"] = atomic_write_text(out_dir / "summary.md", text + "\n")
        if figures:
            for path in self.plot(out_dir / "figures"):
                written[f"figures/{path.name}"] = path
        return written


def _is_compared(metric: str) -> bool:
    if ".predicted_by_kind." in f".{metric}.":
        return False
    leaf = metric.rsplit(".", 1)[-1]
    return not any(leaf.startswith(prefix) for prefix in _COUNTS)


def compare_runs(run_dirs_by_variant: Mapping[str, Sequence[str | Path]],
                 headline: Sequence[str] = HEADLINE_METRICS) -> CompareResult:
    """Aggregate evaluated runs: every run needs ``eval/metrics.json`` (KeptError naming it if not)."""
    if not run_dirs_by_variant:
        raise KeptError("no runs to compare", where="compare", fix="give at least one variant with one run")
    table: dict[str, dict[str, Stat]] = {}
    runs: dict[str, list[str]] = {}
    per_run: dict[str, dict[str, float]] = {}
    names: list[str] = []
    for variant, run_dirs in run_dirs_by_variant.items():
        if not run_dirs:
            raise KeptError(f"variant '{variant}' has no runs", where="compare", fix="give at least one run dir")
        flats = []
        for run_dir in run_dirs:
            flat = {k: v for k, v in flatten_metrics(load_metrics(run_dir)).items() if _is_compared(k)}
            flats.append(flat)
            per_run[str(run_dir)] = flat
            names.extend(k for k in flat if k not in names)
        runs[str(variant)] = [str(r) for r in run_dirs]
        table[str(variant)] = {m: summarize([f.get(m, math.nan) for f in flats]) for m in names}
    for variant in table:  # metrics first seen in later variants
        for metric in names:
            if metric not in table[variant]:
                table[variant][metric] = Stat(math.nan, math.nan, 0)
    ordered = [m for m in headline if m in names] + sorted(m for m in names if m not in headline)
    return CompareResult(list(table), ordered, table, runs, per_run, list(headline))


# ------------------------------------------------------------------ kept compare CONFIG

#: Stages prepared once and shared by every variant (their outputs are symlinked into each run).
SHARED_STAGES: tuple[str, ...] = ("data", "kg", "annotate", "encode")
SHARED_PATHS: tuple[str, ...] = ("kg", "corpus", "tokenizer", "encoded")
VARIANT_STAGES: tuple[str, ...] = ("pretrain", "evaluate", "report")


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


def load_compare_config(path: str | Path, overrides: Sequence[str] = ()) -> ComparePlan:
    """Read a compare YAML: a run configuration plus a ``compare`` section (KeptError naming file:line)."""
    from pydantic import ValidationError

    from kept import config as config_module

    path = Path(path)
    data, text = config_module.read_yaml(path)
    if not isinstance(data, dict):
        raise KeptError("a compare configuration must be a YAML mapping", where=path,
                        fix="write a run configuration plus a `compare:` section")
    raw = data.pop("compare", None)
    if raw is None:
        raise KeptError("no `compare:` section", where=path,
                        fix="add `compare: {strategies: [token, entity], fusion: [false, true], seeds: [0, 1]}`")
    try:
        section = CompareSection.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        loc = ("compare", *first["loc"])
        raise KeptError(f"invalid value for '{'.'.join(map(str, loc))}': {first['msg']}", where=path,
                        line=config_module._yaml_line(text, loc), fix="see `kept compare --help`") from None
    data = config_module._absolutize(data, path.resolve().parent)
    data = config_module.apply_overrides(data, list(overrides))
    base = config_module.validate_config(data, source=path, text=text)
    out = section.out if section.out is not None else base.run_dir()
    if not out.is_absolute() and section.out is not None:
        out = path.resolve().parent / out
    runs: dict[str, list[tuple[int, Any]]] = {}
    for strategy in section.strategies:
        for fusion in section.fusion:
            variant = variant_name(strategy, fusion)
            if variant in runs:
                raise KeptError(f"variant '{variant}' is listed twice", where=path,
                                line=config_module._yaml_line(text, ("compare",)), fix="list each strategy once")
            runs[variant] = []
            for seed in section.seeds:
                values = base.to_dict()
                values["name"] = f"{variant.replace('+', '_')}-seed{seed}"
                values["masking"] = {**values.get("masking", {}), "strategy": strategy}
                if "seed" in values["masking"]:
                    values["masking"]["seed"] = seed
                values["model"] = {**values["model"], "fusion": fusion}
                values["train"] = {**values["train"], "seed": seed}
                runs[variant].append((seed, config_module.validate_config(values, source=path, text=text)))
    return ComparePlan(base, section, Path(out), runs)


def _link_shared(prepared: Path, run_dir: Path) -> None:
    """Symlink the prepared kg/corpus/tokenizer/encoded (and their stage stamps) into a variant run."""
    import os

    run_dir.mkdir(parents=True, exist_ok=True)
    for name in SHARED_PATHS:
        source = prepared / name
        target = run_dir / name
        if not source.exists():
            continue
        if target.is_symlink() or target.exists():
            if target.is_symlink() and target.resolve() == source.resolve():
                continue
            raise KeptError(f"{target} exists and is not the shared prepared data", where=target,
                            fix="remove it, or use another compare directory")
        os.symlink(os.path.relpath(source, run_dir), target, target_is_directory=True)
    (run_dir / "stamps").mkdir(exist_ok=True)
    for stage in SHARED_STAGES:
        stamp = prepared / "stamps" / f"{stage}.json"
        if stamp.is_file():
            from kept.rundir import atomic_write_bytes

            atomic_write_bytes(run_dir / "stamps" / f"{stage}.json", stamp.read_bytes())


def run_compare(plan: ComparePlan, *, log: Any = lambda _: None, progress: bool = False,
                force: Sequence[str] = ()) -> CompareResult:
    """Prepare the data once, train + evaluate every variant × seed, aggregate and save the summary."""
    from kept.runner import run_pipeline

    plan.out.mkdir(parents=True, exist_ok=True)
    log(f"compare: preparing shared data in {plan.prepared_dir}")
    prepare_config = plan.base.model_copy(update={"name": "prepared"})
    run_pipeline(prepare_config, plan.prepared_dir, stages=list(SHARED_STAGES),
                 force=[s for s in force if s in SHARED_STAGES], log=log, progress=progress)
    by_variant: dict[str, list[Path]] = {}
    total = sum(len(v) for v in plan.runs.values())
    done = 0
    for variant, seeded in plan.runs.items():
        for seed, config in seeded:
            done += 1
            run_dir = plan.run_dir(variant, seed)
            log(f"compare: [{done}/{total}] {variant}, seed {seed} -> {run_dir}")
            _link_shared(plan.prepared_dir, run_dir)
            run_pipeline(config, run_dir, stages=list(VARIANT_STAGES),
                         force=[s for s in force if s in VARIANT_STAGES], log=log, progress=progress)
            by_variant.setdefault(variant, []).append(run_dir)
    result = compare_runs(by_variant, headline=plan.section.metrics)
    # paths relative to the compare directory, so it can be moved
    result.runs = {v: [str(Path(r).relative_to(plan.out)) if Path(r).is_relative_to(plan.out) else r
                       for r in runs] for v, runs in result.runs.items()}
    result.per_run = {str(Path(r).relative_to(plan.out)) if Path(r).is_relative_to(plan.out) else r: flat
                      for r, flat in result.per_run.items()}
    result.save(plan.out / "compare")
    return result
