"""Compare variants (masking strategy × fusion on/off) over seeds on the same data and budget.

Two entry points:

* :func:`compare_runs` — aggregate already evaluated runs: ``{variant: [run_dir, ...]}`` →
  :class:`CompareResult` with mean ± std (sample std, ddof 1) of every figure per variant, and each
  variant's difference to the baseline variant with a bootstrap 95% interval
  (:mod:`kept.significance`): over test items and seeds for figures with per-item outcomes in
  ``eval/metrics.json`` ``items`` (cloze, probe, relation), over seeds only for the others. It, the
  statistics and the result's formatting and saving live in :mod:`kept.compare_result` (re-exported here).
* :func:`run_compare` — `kept compare CONFIG`: prepare the data once, train and evaluate every
  variant × seed as its own run directory under the compare directory (the prepared kg, corpus,
  tokenizer and encoded data are shared through symlinks), then aggregate.

Outputs (``COMPARE_DIR/compare/``): ``summary.json`` (format ``kept.compare.summary``),
``summary.md`` and ``figures/*.png`` (bars with error bars).

The compare YAML (a run configuration plus a ``compare`` section) and the plan made from it are
:mod:`kept.compare_plan`'s (re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from kept.compare_plan import (  # noqa: F401 - re-exported: kept.compare's names before the split
    REFERENCE,
    SHARED_KEYS,
    SHARED_PATHS,
    SHARED_STAGES,
    VARIANT_STAGES,
    ComparePlan,
    CompareSection,
    VariantSpec,
    load_compare_config,
    product_variants,
    variant_name,
)
from kept.compare_result import (  # noqa: F401 - re-exported: kept.compare's names before the split
    HEADLINE_METRICS,
    LOWER_IS_BETTER,
    VERDICT_METRICS,
    BootstrapSection,
    CompareResult,
    Stat,
    check_baseline,
    compare_runs,
    difference_to_baseline,
    summarize,
)
from kept.errors import KeptError

logger = logging.getLogger(__name__)


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
            raise KeptError(
                f"{target} exists and is not the shared prepared data",
                where=target,
                fix="remove it, or use another compare directory",
            )
        os.symlink(os.path.relpath(source, run_dir), target, target_is_directory=True)
    (run_dir / "stamps").mkdir(exist_ok=True)
    for stage in SHARED_STAGES:
        stamp = prepared / "stamps" / f"{stage}.json"
        if stamp.is_file():
            from kept.rundir import atomic_write_bytes

            atomic_write_bytes(run_dir / "stamps" / f"{stage}.json", stamp.read_bytes())


def shared_data_fingerprint(prepared: Path) -> dict[str, str]:
    """What the prepared data were made from: each shared stage's stamp fingerprint."""
    from kept.rundir import read_stamp

    stamps = {stage: read_stamp(prepared, stage) for stage in SHARED_STAGES}
    return {stage: str(stamp.get("fingerprint")) for stage, stamp in stamps.items() if stamp}


def base_fingerprint(plan: ComparePlan) -> str:
    """What every variant starts from besides the shared data: the base model, masking, training and
    evaluation settings and the seeds (variants of two invocations compare only when these agree)."""
    from kept.rundir import fingerprint

    base = plan.base.to_dict()
    return fingerprint(
        {key: base.get(key) for key in ("model", "masking", "train", "eval")} | {"seeds": list(plan.section.seeds)}
    )


def earlier_runs(plan: ComparePlan, shared: Mapping[str, str]) -> tuple[dict[str, list[Path]], CompareResult | None]:
    """Runs of variants an earlier `kept compare` on this directory evaluated and this one does not
    re-run, with that summary; nothing when there is no summary or it was made on other shared data
    (its runs no longer match the prepared data)."""
    from kept.analysis import load_compare

    summary_path = plan.out / "compare" / "summary.json"
    if not summary_path.is_file():
        return {}, None
    earlier = CompareResult.from_dict(load_compare(plan.out))
    if earlier.shared_data != dict(shared):
        logger.info(
            f"compare: {summary_path} was made on other shared data or another base configuration (budget, "
            "evaluation, seeds); its variants are not merged"
        )
        return {}, None
    runs: dict[str, list[Path]] = {}
    for variant in earlier.variants:
        paths = [plan.out / r if not Path(r).is_absolute() else Path(r) for r in earlier.runs.get(variant, [])]
        if variant in plan.runs or not paths:
            continue
        if not all((path / "eval" / "metrics.json").is_file() for path in paths):
            logger.info(f"compare: the earlier runs of '{variant}' are incomplete; not merged")
            continue
        runs[variant] = paths
    if runs:
        logger.info(f"compare: merging the earlier variants {', '.join(runs)} from {summary_path}")
    return runs, earlier


def run_compare(plan: ComparePlan, *, progress: bool = False, force: Sequence[str] = ()) -> CompareResult:
    """Prepare the data once, train + evaluate every variant × seed, aggregate and save the summary
    (merged with the variants of an earlier summary in the same directory, see :func:`earlier_runs`)."""
    from kept.runner import run_pipeline

    check_baseline(plan.section.baseline, list(plan.runs))  # before hours of training, not after
    plan.out.mkdir(parents=True, exist_ok=True)
    logger.info(f"compare: preparing shared data in {plan.prepared_dir}")
    prepare_config = plan.base.model_copy(update={"name": "prepared"})
    run_pipeline(
        prepare_config,
        plan.prepared_dir,
        stages=list(SHARED_STAGES),
        force=[s for s in force if s in SHARED_STAGES],
        progress=progress,
    )
    shared = shared_data_fingerprint(plan.prepared_dir)
    shared["variants_base"] = base_fingerprint(plan)  # same budget, evaluation and seeds, or no merge
    by_variant, earlier = earlier_runs(plan, shared)
    total = sum(len(v) for v in plan.runs.values())
    done = 0
    for variant, seeded in plan.runs.items():
        for seed, config in seeded:
            done += 1
            run_dir = plan.run_dir(variant, seed)
            logger.info(f"compare: [{done}/{total}] {variant}, seed {seed} -> {run_dir}")
            _link_shared(plan.prepared_dir, run_dir)
            run_pipeline(
                config,
                run_dir,
                stages=list(VARIANT_STAGES),
                force=[s for s in force if s in VARIANT_STAGES],
                progress=progress,
            )
            by_variant.setdefault(variant, []).append(run_dir)
    baseline = plan.section.baseline
    if earlier is not None:  # a merged summary keeps its column order and the baseline it was read with
        order = [v for v in earlier.variants if v in by_variant] + [v for v in by_variant if v not in earlier.variants]
        by_variant = {v: by_variant[v] for v in order}
        if baseline is None and earlier.baseline in by_variant:
            baseline = earlier.baseline
    result = compare_runs(
        by_variant, headline=plan.section.metrics, baseline=baseline, bootstrap=plan.section.bootstrap
    )
    result.shared_data = shared
    # paths relative to the compare directory, so it can be moved
    result.runs = {
        v: [str(Path(r).relative_to(plan.out)) if Path(r).is_relative_to(plan.out) else r for r in runs]
        for v, runs in result.runs.items()
    }
    result.per_run = {
        str(Path(r).relative_to(plan.out)) if Path(r).is_relative_to(plan.out) else r: flat
        for r, flat in result.per_run.items()
    }
    result.save(plan.out / "compare")
    return result
