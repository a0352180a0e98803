"""Paired bootstrap intervals (kept.significance) on synthetic per-item outcomes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kept.errors import KeptError
from kept.evaluate.common import macro_f1 as reported_macro_f1
from kept.significance import (
    ITEM_METRICS,
    Difference,
    accuracy,
    align_items,
    macro_f1,
    mean_of,
    paired_bootstrap,
    resample_weights,
    seed_bootstrap,
)

N_ITEMS = 400


def _cloze_runs(rate: float, seeds: int, salt: int, n: int = N_ITEMS) -> list[dict[str, list]]:
    """One run per seed: ``n`` items, each correct with probability ``rate``."""
    runs = []
    for seed in range(seeds):
        rng = np.random.default_rng(1000 * salt + seed)
        runs.append(
            {"ids": [f"doc{i}:0:{i}" for i in range(n)], "correct": (rng.random(n) < rate).astype(int).tolist()}
        )
    return runs


def test_a_clear_difference_excludes_zero() -> None:
    better, worse = _cloze_runs(0.7, 3, salt=1), _cloze_runs(0.4, 3, salt=2)
    difference = paired_bootstrap(mean_of("correct"), better, worse, n_resamples=500, seed=0)
    expected = np.mean([np.mean(r["correct"]) for r in better]) - np.mean([np.mean(r["correct"]) for r in worse])
    assert difference.delta == pytest.approx(expected)
    assert 0 < difference.ci_low < difference.delta < difference.ci_high
    assert difference.significant and difference.share_le_zero == 0.0
    assert difference.method == "items+seeds" and difference.n_items == N_ITEMS
    assert difference.format().endswith("]*") and difference.format().startswith("+0.")
    reverse = paired_bootstrap(mean_of("correct"), worse, better, n_resamples=500, seed=0)
    assert reverse.delta == pytest.approx(-difference.delta) and reverse.ci_high < 0 and reverse.significant


def test_identical_or_equally_good_variants_contain_zero() -> None:
    runs = _cloze_runs(0.5, 2, salt=3)
    same = paired_bootstrap(mean_of("correct"), runs, runs, n_resamples=300)
    assert same.delta == 0.0 and same.ci_low <= 0.0 <= same.ci_high and not same.significant
    assert not same.format().endswith("*")
    # same accuracy, independent noise: the interval is wide and contains 0
    other = _cloze_runs(0.5, 2, salt=4)
    noisy = paired_bootstrap(mean_of("correct"), other, runs, n_resamples=300)
    assert noisy.ci_low < 0.0 < noisy.ci_high and not noisy.significant
    assert 0.0 < noisy.share_le_zero < 1.0


def test_bootstrap_is_seeded() -> None:
    a, b = _cloze_runs(0.55, 3, salt=5), _cloze_runs(0.5, 3, salt=6)
    first = paired_bootstrap(mean_of("correct"), a, b, n_resamples=200, seed=7)
    assert paired_bootstrap(mean_of("correct"), a, b, n_resamples=200, seed=7) == first
    other = paired_bootstrap(mean_of("correct"), a, b, n_resamples=200, seed=8)
    assert other.delta == first.delta and (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    assert seed_bootstrap([0.3, 0.5, 0.4], [0.1, 0.2, 0.3], 200, 1) == seed_bootstrap(
        [0.3, 0.5, 0.4], [0.1, 0.2, 0.3], 200, 1
    )


def test_items_pair_by_id_whatever_their_order() -> None:
    a = {"ids": ["x", "y", "z", "only_a"], "correct": [1, 1, 0, 1]}
    b = {"ids": ["z", "y", "x"], "correct": [1, 0, 0]}
    aligned, count = align_items([a, b], ["correct"])
    assert count == 3
    assert aligned[0]["correct"].tolist() == [1, 1, 0] and aligned[1]["correct"].tolist() == [0, 0, 1]
    difference = paired_bootstrap(mean_of("correct"), [a], [b], n_resamples=50)
    assert difference.n_items == 3 and difference.delta == pytest.approx(2 / 3 - 1 / 3)
    nothing_shared = paired_bootstrap(mean_of("correct"), [a], [{"ids": ["w"], "correct": [1]}])
    assert nothing_shared.method == "n/a" and math.isnan(nothing_shared.delta)
    with pytest.raises(KeptError, match=r"items\.cloze: per-item field 'correct'.*kept evaluate"):
        align_items([{"ids": ["x", "y"], "correct": [1]}], ["correct"], where="items.cloze")


def test_resample_weights_count_draws() -> None:
    weights = resample_weights(np.random.default_rng(0), 5, 100)  # [R, N]
    assert weights.shape == (100, 5) and (weights.sum(axis=1) == 5).all() and (weights >= 0).all()


def _manual_macro_f1(gold: list[int], pred: list[int]) -> float:
    """scikit-learn's default macro-F1: the mean F1 over the labels in gold or predictions."""
    scores = []
    for label in sorted(set(gold) | set(pred)):
        tp = sum(1 for g, p in zip(gold, pred) if g == label and p == label)
        fp = sum(1 for g, p in zip(gold, pred) if g != label and p == label)
        fn = sum(1 for g, p in zip(gold, pred) if g == label and p != label)
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def test_macro_f1_recomputation_matches_the_reported_figure() -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, 120)
    pred = np.where(rng.random(120) < 0.6, gold, rng.integers(0, 7, 120))  # label 6 only predicted
    items = {"gold": gold, "pred": pred}
    full = float(macro_f1(items, np.ones((1, 120)))[0])
    assert full == pytest.approx(_manual_macro_f1(gold.tolist(), pred.tolist()))
    assert full == pytest.approx(reported_macro_f1(pred.tolist(), gold.tolist(), num_labels=7))
    # a resample's weights act as repeated items
    weights = resample_weights(np.random.default_rng(1), 120, 4)  # [4, 120]
    for row, value in zip(weights.astype(int), macro_f1(items, weights)):
        repeated = np.repeat(np.arange(120), row)
        assert value == pytest.approx(_manual_macro_f1(gold[repeated].tolist(), pred[repeated].tolist()))
    assert float(accuracy(items, np.ones((1, 120)))[0]) == pytest.approx(float(np.mean(gold == pred)))


def test_probe_figures_from_reciprocal_ranks() -> None:
    ranks = np.array([1.0, 1.5, 3.0, 4.0, 10.0, 11.0])
    items = {"reciprocal_rank": 1.0 / ranks}
    full = np.ones((1, len(ranks)))
    figure = {
        name: float(ITEM_METRICS[name][2](items, full)[0])
        for name in ("probe.mrr", "probe.hits_at_3", "probe.hits_at_10", "probe.mean_rank")
    }
    assert figure["probe.mrr"] == pytest.approx(float(np.mean(1.0 / ranks)))
    assert figure["probe.hits_at_3"] == pytest.approx(3 / 6) and figure["probe.hits_at_10"] == pytest.approx(5 / 6)
    assert figure["probe.mean_rank"] == pytest.approx(float(ranks.mean()))


def test_relation_bootstrap_recomputes_macro_f1_per_resample() -> None:
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 4, 200).tolist()
    good = [
        {"ids": list(range(200)), "gold": gold, "pred": [g if rng.random() < 0.9 else 0 for g in gold]}
        for _ in range(2)
    ]
    poor = [
        {"ids": list(range(200)), "gold": gold, "pred": [g if rng.random() < 0.5 else 0 for g in gold]}
        for _ in range(2)
    ]
    difference = paired_bootstrap(macro_f1, good, poor, n_resamples=300, fields=("gold", "pred"))
    expected = np.mean([_manual_macro_f1(gold, r["pred"]) for r in good]) - np.mean(
        [_manual_macro_f1(gold, r["pred"]) for r in poor]
    )
    assert difference.delta == pytest.approx(expected) and difference.significant


def test_typing_figures_from_type_sets_match_the_reported_ones() -> None:
    torch = pytest.importorskip("torch")
    typing_scores = pytest.importorskip("kept.evaluate.typing").typing_scores  # the entity-typing task

    gold = [[0], [1, 2], [2], [0, 3], [1], []]
    pred = [[0], [1], [0, 2], [], [1], [3]]
    items = {"gold": gold, "pred": pred}
    aligned, count = align_items([{"ids": list(range(6)), **items}], ["gold", "pred"])
    full = np.ones((1, count))

    def hot(rows: list[list[int]]) -> torch.Tensor:
        table = torch.zeros(len(rows), 4, dtype=torch.bool)
        for i, row in enumerate(rows):
            table[i, row] = True
        return table

    reported = typing_scores(hot(gold), hot(pred))
    for name in ("micro_f1", "macro_f1", "strict_accuracy"):
        assert float(ITEM_METRICS[f"typing.{name}"][2](aligned[0], full)[0]) == pytest.approx(reported[name]), name


def test_seed_bootstrap_needs_two_seeds() -> None:
    single = seed_bootstrap([0.5], [0.2, 0.3])
    assert single.method == "n/a" and single.delta == pytest.approx(0.25) and not single.significant
    assert single.format() == "+0.250 [n/a]"
    paired = seed_bootstrap([0.5, 0.6, 0.7], [0.2, 0.3, 0.4], n_resamples=200)
    assert paired.method == "seeds" and paired.delta == pytest.approx(0.3) and paired.significant
    noisy = seed_bootstrap([0.5, 0.1, 0.3], [0.2, 0.4, 0.3], n_resamples=200)
    assert noisy.ci_low < 0 < noisy.ci_high
    assert math.isnan(seed_bootstrap([math.nan], [0.1]).delta)


def test_difference_round_trips() -> None:
    difference = Difference(0.023, 0.004, 0.041, 0.01, "items+seeds", 120)
    assert difference.format() == "+0.023 [0.004, 0.041]*"
    data = difference.to_dict()
    assert data["significant"] is True and Difference.from_dict(data) == difference
