"""Results: learning curves, the comparison, probe per relation, cloze examples and wins."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kept import analysis
from kept.errors import KeptError
from kept.explore._common import _figure
from kept.explore.runs import RunSet


def learning_curves(runs: RunSet) -> tuple[Any | None, dict[str, str]]:
    """A figure of every run's logged losses and learning rate (kept.figures.learning_curve_figure),
    and ``{run: reason}`` for the runs without a log history."""
    from kept.figures import learning_curve_figure

    histories: dict[str, list[dict[str, Any]]] = {}
    missing: dict[str, str] = {}
    for label, run_dir in runs.runs.items():
        try:
            histories[label] = analysis.load_log_history(run_dir)
        except KeptError as error:
            missing[label] = str(error)
    if not histories:
        return None, missing
    return learning_curve_figure(histories, title="learning curves"), missing


def comparison(runs: RunSet) -> Any | None:
    """The strategy × fusion comparison (kept.compare.CompareResult): compare/summary.json when the
    directory has one, else aggregated from its evaluated runs; None without evaluated runs."""
    from kept.compare import CompareResult, compare_runs

    if runs.compare is not None:
        return CompareResult.from_dict(runs.compare)
    if not runs.variants:
        return None
    return compare_runs(runs.variants)


def comparison_figure(result: Any, metrics: Sequence[str] | None = None) -> Any:
    """Bars per variant with error bars (sample std over seeds), one panel per metric."""
    from kept.figures import metric_bars_figure

    shown = list(metrics) if metrics is not None else result.shown_metrics()
    return metric_bars_figure(result, shown, title="mean ± std over seeds")


def skipped_metrics(runs: RunSet) -> dict[str, dict[str, str]]:
    """``{run: {metric: reason}}`` for the metrics a run's evaluation skipped (e.g. no FewRel data)."""
    skipped: dict[str, dict[str, str]] = {}
    for label, run_dir in runs.runs.items():
        metrics = analysis.load_metrics(run_dir).get("metrics") or {}
        for name, section in metrics.items():
            if isinstance(section, Mapping) and "skipped" in section:
                skipped.setdefault(label, {})[name] = str(section["skipped"])
    return skipped


def probe_per_relation(runs: RunSet, metric: str = "hits_at_1") -> Any:
    """KG-probe ``metric`` (hits@1 = probe accuracy; or ``mrr``) per relation (rows) and run
    (columns), with the number of facts; empty when no run has a per-relation breakdown."""
    import pandas as pd

    table: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for label, run_dir in runs.runs.items():
        probe = (analysis.load_metrics(run_dir).get("metrics") or {}).get("probe") or {}
        for relation, values in (probe.get("per_relation") or {}).items():
            table.setdefault(label, {})[relation] = values.get(metric, math.nan)
            counts[relation] = max(counts.get(relation, 0), int(values.get("count", 0) or 0))
    if not table:
        return pd.DataFrame()
    frame = pd.DataFrame(table)
    frame.insert(0, "facts", pd.Series(counts))
    return frame.sort_values("facts", ascending=False)


def probe_per_relation_figure(frame: Any, metric: str = "hits_at_1", top: int = 15) -> Any:
    """Grouped horizontal bars of :func:`probe_per_relation` (``top`` relations by facts)."""
    shown = frame.head(top)
    runs = [c for c in shown.columns if c != "facts"]
    figure, axes = _figure(7, 0.45 * max(len(shown), 2) * max(1, len(runs)) / 1.5 + 1.2)
    axis = axes[0][0]
    height = 0.8 / max(len(runs), 1)
    for i, run in enumerate(runs):
        axis.barh([y + i * height for y in range(len(shown))], shown[run].fillna(0.0), height=height, label=run)
    axis.set_yticks([y + height * (len(runs) - 1) / 2 for y in range(len(shown))])
    axis.set_yticklabels([f"{r} (n={int(n)})" for r, n in zip(shown.index, shown["facts"])], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel(metric)
    axis.set_xlim(0, 1)
    axis.set_title(f"KG probe {metric} per relation")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def cloze_examples(run_dir: str | Path, recompute: int = 0) -> list[dict[str, Any]]:
    """A run's entity-cloze examples: those recorded in eval/metrics.json (``recompute=0``), or the
    first ``recompute`` of the evaluation's held-out mentions predicted again with the run's model and
    the evaluation's own settings (rows, seed, context, max pieces; kept.evaluate.cloze): the items
    are the same for two runs on the same data, and the first ones match the recorded examples."""
    run_dir = Path(run_dir)
    record = analysis.load_metrics(run_dir)
    if not recompute:
        return list((record.get("examples") or {}).get("cloze") or [])
    import torch

    from fusion import KeptForMaskedLM
    from kept.evaluate.cloze import evaluate_cloze
    from kept.evaluate.common import quiet_from_pretrained
    from kept.evaluate.config import EvalConfig

    settings = EvalConfig.model_validate(record.get("eval_config") or {})
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise KeptError(
            "model not found (no model/config.json)",
            where=model_dir,
            fix="pretrain the run first, or use the recorded examples (recompute=0)",
        )
    validation = analysis.load_encoded(run_dir, "validation")
    # the rows and items kept.evaluate uses, so the first examples are the evaluation's own items
    rows = validation.select(range(min(settings.cloze.max_rows, len(validation)))).to_list()
    tokenizer = analysis.load_tokenizer(run_dir)
    model = quiet_from_pretrained(KeptForMaskedLM, str(model_dir)).eval()
    fusion = bool((record.get("model") or {}).get("fusion"))
    torch.manual_seed(settings.seed)
    result = evaluate_cloze(
        model,
        tokenizer,
        rows,
        max_mentions=max(recompute, settings.cloze.max_mentions),
        max_pieces=settings.cloze.max_pieces,
        context_tokens=settings.cloze.context_tokens,
        seed=settings.seed,
        batch_size=settings.batch_size,
        num_examples=recompute,
        use_entities=fusion,
    )
    return result["examples"]


def cloze_comparison(baseline_dir: str | Path, knowledge_dir: str | Path, recompute: int = 0) -> Any:
    """The entity-cloze examples of two runs side by side, joined on the item (document row and
    token position: both runs evaluate the same seeded held-out mentions on the same data).

    ``recompute=0``: the examples recorded in each eval/metrics.json (``eval.num_examples``);
    ``recompute=N``: the first N mentions predicted again by both models (see :func:`cloze_examples`).
    """
    import pandas as pd

    def frame(run_dir: str | Path, suffix: str) -> Any:
        rows = [
            {
                "doc_id": e.get("doc_id"),
                "row": e.get("row"),
                "position": e.get("position"),
                "gold": e.get("gold"),
                f"context_{suffix}": e.get("context"),
                f"prediction_{suffix}": e.get("prediction"),
                f"correct_{suffix}": bool(e.get("correct")),
            }
            for e in cloze_examples(run_dir, recompute)
        ]
        return pd.DataFrame(
            rows,
            columns=[
                "doc_id",
                "row",
                "position",
                "gold",
                f"context_{suffix}",
                f"prediction_{suffix}",
                f"correct_{suffix}",
            ],
        )

    base, know = frame(baseline_dir, "baseline"), frame(knowledge_dir, "knowledge")
    keys = ["doc_id", "row", "position", "gold"]
    merged = base.merge(know, on=keys, how="inner")
    merged = merged.rename(columns={"context_knowledge": "context"}).drop(columns=["context_baseline"])
    return merged[
        [
            "doc_id",
            "row",
            "position",
            "context",
            "gold",
            "prediction_baseline",
            "prediction_knowledge",
            "correct_baseline",
            "correct_knowledge",
        ]
    ]


def cloze_wins(baseline_dir: str | Path, knowledge_dir: str | Path, recompute: int = 0) -> Any:
    """Cloze examples the knowledge run gets right and the baseline gets wrong."""
    both = cloze_comparison(baseline_dir, knowledge_dir, recompute)
    return both[both["correct_knowledge"] & ~both["correct_baseline"]].reset_index(drop=True)
