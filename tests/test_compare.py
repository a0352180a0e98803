"""compare_runs statistics, outputs, and the compare YAML."""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from eval_fixtures import fake_run

from kept.analysis import load_compare
from kept.analysis.files import json_safe
from kept.compare import BootstrapSection, CompareResult, compare_runs, load_compare_config, summarize
from kept.errors import KeptError


@pytest.fixture()
def runs(tmp_path) -> dict[str, list[Path]]:
    return {
        "token": [fake_run(tmp_path, "token-0", 0.10, 5.0), fake_run(tmp_path, "token-1", 0.20, 5.4)],
        "entity+fusion": [
            fake_run(tmp_path, "ent-0", 0.30, 4.8, {"accuracy": 0.6, "macro_f1": 0.5}),
            fake_run(tmp_path, "ent-1", 0.50, 4.6, {"accuracy": 0.8, "macro_f1": 0.7}),
            fake_run(tmp_path, "ent-2", 0.40, 4.7, {"accuracy": 0.7, "macro_f1": 0.6}),
        ],
    }


def test_summarize_is_mean_and_sample_std() -> None:
    stat = summarize([1.0, 2.0, 4.0])
    assert stat.mean == pytest.approx(7 / 3) and stat.std == pytest.approx(statistics.stdev([1, 2, 4])) and stat.n == 3
    assert summarize([3.0]).std == 0.0
    assert summarize([math.nan, 2.0]).n == 1
    assert summarize([]).n == 0 and math.isnan(summarize([]).mean)


def test_compare_runs_table(runs) -> None:
    result = compare_runs(runs)
    assert result.variants == ["token", "entity+fusion"]
    cloze = result.table["entity+fusion"]["cloze.accuracy"]
    assert cloze.mean == pytest.approx(0.4) and cloze.std == pytest.approx(0.1) and cloze.n == 3
    assert result.table["token"]["cloze.accuracy"].std == pytest.approx(statistics.stdev([0.1, 0.2]))
    # a metric only one variant has: n == 0 for the other
    assert result.table["token"]["relation.accuracy"].n == 0
    assert result.table["entity+fusion"]["relation.macro_f1"].mean == pytest.approx(0.6)
    # counts and per-relation breakdowns are not compared
    assert not any(m.endswith("num_mentions") or "per_relation" in m for m in result.metrics)
    assert result.best("cloze.accuracy") == "entity+fusion"
    assert result.best("mlm.token.loss") == "entity+fusion"  # lower is better
    assert result.best("probe.mrr") is None  # every run has 0.5: a tie
    assert result.metrics[0] == "mlm.token.loss"  # headline order first


def test_compare_outputs(tmp_path, runs) -> None:
    result = compare_runs(runs)
    markdown = result.to_markdown()
    assert "| metric | token (n=2) | entity+fusion (n=3) |" in markdown
    # no per-item outcomes in these runs: the difference to token is bootstrapped over seeds
    assert re.search(
        r"\| cloze\.accuracy ↑ \| 0\.150 ± 0\.071 \| \*\*0\.400 ± 0\.100\*\* "
        r"\+0\.250 \[0\.\d{3}, 0\.\d{3}\]\* \|",
        markdown,
    )
    assert "| probe.mrr ↑ | 0.500 ± 0.000 | 0.500 ± 0.000 +0.000 [0.000, 0.000] |" in markdown  # equal: no *
    assert "| relation.accuracy ↑ | – | **0.700 ± 0.100** |" in markdown  # the baseline has none: no difference
    assert "Difference to `token`" in markdown and "over seeds (no run stores per-item outcomes)" in markdown
    written = result.save(tmp_path / "out" / "compare")
    summary = json.loads(written["summary.json"].read_text())
    assert summary["table"]["token"]["cloze.accuracy"]["n"] == 2
    assert summary["baseline"] == "token" and summary["bootstrap"] == {"resamples": 1000, "seed": 0}
    cloze = summary["table"]["entity+fusion"]["cloze.accuracy"]
    assert cloze["delta"] == pytest.approx(0.25) and cloze["significant"] is True and cloze["method"] == "seeds"
    assert 0 < cloze["ci_low"] < 0.25 < cloze["ci_high"]
    assert "delta" not in summary["table"]["token"]["cloze.accuracy"]
    assert (tmp_path / "out" / "compare" / "summary.md").read_text().startswith("# KEPT comparison")
    pngs = sorted(p.name for p in (tmp_path / "out" / "compare" / "figures").glob("*.png"))
    assert "compare_cloze.png" in pngs and "compare_mlm.png" in pngs
    assert all((tmp_path / "out" / "compare" / "figures" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    loaded = load_compare(tmp_path / "out")
    again = CompareResult.from_dict(loaded)
    assert again.table["entity+fusion"]["cloze.accuracy"] == result.table["entity+fusion"]["cloze.accuracy"]
    assert again.differences["entity+fusion"]["cloze.accuracy"] == result.differences["entity+fusion"]["cloze.accuracy"]
    assert again.baseline == "token" and again.to_markdown() == result.to_markdown()
    from rich.console import Console

    from kept.commands.tables import compare_table

    console = Console(record=True, width=200)
    console.print(compare_table(result))
    text = console.export_text()
    assert "0.400 ± 0.100" in text and "+0.250 [0." in text and "Δ to token" in text


def _with_items(run_dir: Path, items: dict) -> Path:
    """Add per-item outcomes (the top-level ``items`` of metrics.json) to a fake run."""
    path = run_dir / "eval" / "metrics.json"
    record = json.loads(path.read_text())
    record["items"] = items
    path.write_text(json.dumps(record))
    return run_dir


def _outcomes(rate: float, seed: int, n: int = 200) -> list[int]:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < rate).astype(int).tolist()


def test_compare_runs_bootstraps_over_paired_items(tmp_path) -> None:
    ids = [f"doc{i}:0:{i}" for i in range(200)]
    facts = [f"{i}|0|{i + 1}" for i in range(60)]
    gold = [i % 4 for i in range(80)]

    def run(name: str, rate: float, seed: int) -> Path:
        correct = _outcomes(rate, seed)
        ranks = [1.0 if hit else 2.0 for hit in _outcomes(rate, seed + 50, 60)]
        pred = [g if hit else (g + 1) % 4 for g, hit in zip(gold, _outcomes(rate, seed + 90, 80))]
        relation = {"accuracy": float(np.mean(np.equal(gold, pred))), "macro_f1": 0.0}  # figures present
        run_dir = fake_run(tmp_path, name, sum(correct) / 200, 5.0, relation)
        return _with_items(
            run_dir,
            {
                # the stronger variant lists its items in another order and has one more: pairing is by id
                "cloze": {"ids": ids[::-1] + ["extra"], "correct": correct[::-1] + [1]}
                if rate > 0.5
                else {"ids": ids, "correct": correct},
                "probe": {
                    "ids": facts,
                    "reciprocal_rank": [1 / r for r in ranks],
                    "hits_at_1": [int(r == 1) for r in ranks],
                },
                "relation": {"ids": [f"s{i}" for i in range(80)], "gold": gold, "pred": pred},
            },
        )

    runs = {
        "token": [run("t0", 0.3, 0), run("t1", 0.3, 1)],
        "entity": [run("e0", 0.7, 2), run("e1", 0.7, 3)],
        "phrase": [run("p0", 0.3, 4), run("p1", 0.3, 5)],
    }
    result = compare_runs(runs, bootstrap=BootstrapSection(resamples=300, seed=1))
    entity = result.differences["entity"]
    cloze = entity["cloze.accuracy"]
    assert cloze.method == "items+seeds" and cloze.n_items == 200 and cloze.significant
    assert cloze.delta == pytest.approx(
        result.table["entity"]["cloze.accuracy"].mean - result.table["token"]["cloze.accuracy"].mean
    )
    for metric in ("probe.hits_at_1", "probe.mrr", "relation.accuracy", "relation.macro_f1"):
        assert entity[metric].method == "items+seeds" and entity[metric].significant, metric
    assert entity["linkpred.mrr"].method == "seeds"  # no per-item outcomes: over seeds only
    phrase = result.differences["phrase"]["cloze.accuracy"]
    assert phrase.ci_low < 0 < phrase.ci_high and not phrase.significant  # same rate, other noise
    assert "token" not in result.differences
    assert "paired items: cloze 200, probe 60, relation 80" in result.to_markdown()
    # one line says what it shows: entity better (interval above 0), phrase no different
    line = result.verdict("cloze.accuracy")
    assert line.startswith("cloze.accuracy vs token (") and f"entity {cloze.format()} (better)" in line
    assert "phrase" in line and "interval includes 0: no difference shown" in line
    assert f"What it shows: {result.verdict()}." in result.to_markdown()
    assert result.verdict().startswith("relation.macro_f1 vs token")  # the downstream task speaks first
    # the same call gives the same intervals; another baseline gives other differences
    again = compare_runs(runs, bootstrap=BootstrapSection(resamples=300, seed=1))
    assert again.differences["entity"]["cloze.accuracy"] == cloze
    versus_entity = compare_runs(runs, baseline="entity", bootstrap=BootstrapSection(resamples=300, seed=1))
    assert versus_entity.differences["token"]["cloze.accuracy"].delta == pytest.approx(-cloze.delta)
    with pytest.raises(KeptError, match=r"compare\.baseline: baseline 'tokn'.*token, entity, phrase"):
        compare_runs(runs, baseline="tokn")


def test_a_summary_without_differences_still_loads(tmp_path, runs) -> None:
    summary = compare_runs(runs).to_dict()
    del summary["baseline"], summary["bootstrap"]
    for rows in summary["table"].values():
        for stat in rows.values():
            for key in ("delta", "ci_low", "ci_high", "significant", "share_le_zero", "method", "n_items"):
                stat.pop(key, None)
    old = CompareResult.from_dict(json.loads(json.dumps(json_safe(summary))))
    assert old.baseline is None and old.differences == {}
    assert old.table["entity+fusion"]["cloze.accuracy"].mean == pytest.approx(0.4)
    assert "| cloze.accuracy ↑ | 0.150 ± 0.071 | **0.400 ± 0.100** |" in old.to_markdown()
    assert "Difference to" not in old.to_markdown()


def test_missing_metrics_names_the_file(tmp_path, runs) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeptError, match=r"empty/eval/metrics\.json: metrics file not found.*kept evaluate"):
        compare_runs({"token": [*runs["token"], tmp_path / "empty"]})
    with pytest.raises(KeptError, match="no runs"):
        compare_runs({})


def test_metrics_of_another_version_are_refused(tmp_path) -> None:
    run_dir = fake_run(tmp_path, "old", 0.1, 5.0)
    path = run_dir / "eval" / "metrics.json"
    data = json.loads(path.read_text())
    data["format_version"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(KeptError, match=r"old/eval/metrics\.json: written by another version of kept"):
        compare_runs({"a": [run_dir]})


def test_compare_config_builds_every_variant_and_seed(tmp_path) -> None:
    path = tmp_path / "compare.yaml"
    path.write_text(
        "name: cmp\nruns_dir: out\ntrain: {max_steps: 7}\n"
        "compare:\n  strategies: [token, entity]\n  fusion: [false, true]\n  seeds: [0, 3]\n"
    )
    plan = load_compare_config(path, ["train.learning_rate=0.001"])
    assert list(plan.runs) == ["token", "token+fusion", "entity", "entity+fusion"]
    seed, config = plan.runs["entity+fusion"][1]
    assert seed == 3 and config.train.seed == 3 and config.masking.strategy == "entity"
    assert config.model.fusion is True and config.train.max_steps == 7 and config.train.learning_rate == 0.001
    assert plan.runs["token"][0][1].model.fusion is False
    assert plan.run_dir("entity+fusion", 3) == plan.out / "runs" / "entity_fusion-seed3"
    assert plan.out.name == "cmp"
    assert plan.section.baseline is None and plan.section.bootstrap.resamples == 1000
    path.write_text(
        "name: cmp\ncompare:\n  strategies: [token]\n  baseline: token\n  bootstrap: {resamples: 200, seed: 3}\n"
    )
    section = load_compare_config(path).section
    assert section.baseline == "token" and (section.bootstrap.resamples, section.bootstrap.seed) == (200, 3)


def test_compare_variants_list_applies_each_variants_overrides(tmp_path) -> None:
    path = tmp_path / "compare.yaml"
    path.write_text(
        "name: cmp\nruns_dir: out\ntrain: {max_steps: 7}\ncompare:\n  variants:\n"
        "    - {name: token, set: {masking.strategy: token, model.fusion: false}}\n"
        "    - {name: entity+lr, set: {masking.strategy: entity, train.learning_rate: 0.002}}\n"
        "  seeds: [0, 1]\n"
    )
    plan = load_compare_config(path, ["compare.seeds=[4]", "train.max_steps=9"])
    assert list(plan.runs) == ["token", "entity+lr"] and plan.section.seeds == [4]
    seed, config = plan.runs["entity+lr"][0]
    assert seed == 4 and config.train.seed == 4 and config.masking.strategy == "entity"
    assert config.train.learning_rate == 0.002 and config.train.max_steps == 9 and config.model.fusion is True
    token = plan.runs["token"][0][1]
    assert token.model.fusion is False and token.train.learning_rate != 0.002 and token.name == "token-seed4"
    assert plan.run_dir("entity+lr", 4) == plan.out / "runs" / "entity_lr-seed4"
    # the product fields and a variants list are one or the other
    path.write_text("name: cmp\ncompare:\n  strategies: [token]\n  variants: [{name: a}]\n")
    with pytest.raises(KeptError, match=r"compare\.yaml:3: compare.variants and compare.strategies are both given"):
        load_compare_config(path)
    path.write_text("name: cmp\ncompare:\n  variants:\n    - {name: a}\n    - {name: a}\n")
    with pytest.raises(KeptError, match=r"compare\.yaml:5: variant 'a' is listed twice"):
        load_compare_config(path)
    path.write_text(
        "name: cmp\ncompare:\n  variants:\n    - {name: a}\n    - {name: long, set: {encode.max_length: 256}}\n"
    )
    with pytest.raises(
        KeptError, match=r"compare\.yaml:5: variant 'long' sets encode.max_length, which the shared data"
    ):
        load_compare_config(path)
    path.write_text("name: cmp\ncompare:\n  variants:\n    - {name: a, set: {train.max_steps: -1}}\n")
    with pytest.raises(KeptError, match=r"train\.max_steps"):
        load_compare_config(path)
    # --set compare.* reaches the compare section (and is validated there)
    path.write_text("name: cmp\ncompare:\n  strategies: [token]\n  fusion: [false]\n")
    assert list(load_compare_config(path, ["compare.strategies=[token,phrase]"]).runs) == ["token", "phrase"]
    with pytest.raises(KeptError, match=r"compare\.seeds"):
        load_compare_config(path, ["compare.seeds=[]"])


def test_a_second_compare_merges_the_earlier_summary(tmp_path, caplog) -> None:
    from kept.compare import earlier_runs

    path = tmp_path / "compare.yaml"
    path.write_text(
        f"name: cmp\nruns_dir: {tmp_path / 'out'}\ncompare:\n  strategies: [token]\n  fusion: [false]\n  seeds: [0]\n"
    )
    plan = load_compare_config(path)
    assert plan.out == tmp_path / "out" / "cmp"
    shared = {"data": "abc", "encode": "def"}
    earlier = compare_runs(
        {
            "entity": [fake_run(plan.out / "runs", "entity-seed0", 0.3, 4.8)],
            "token": [fake_run(plan.out / "runs", "token-seed0", 0.1, 5.0)],
        },
        baseline="entity",
    )
    earlier.shared_data = dict(shared)
    earlier.runs = {v: [str(Path(r).relative_to(plan.out)) for r in rs] for v, rs in earlier.runs.items()}
    earlier.save(plan.out / "compare", figures=False)
    caplog.set_level(logging.INFO, logger="kept")
    runs, summary = earlier_runs(plan, shared)
    # token is re-run by this plan: only entity is carried over, with the earlier baseline and order
    assert list(runs) == ["entity"] and runs["entity"] == [plan.out / "runs" / "entity-seed0"]
    assert summary is not None and summary.baseline == "entity" and summary.variants == ["entity", "token"]
    assert "merging the earlier variants entity" in caplog.messages[-1]
    # other shared data: the earlier runs no longer match, nothing is merged
    runs, summary = earlier_runs(plan, {"data": "changed", "encode": "def"})
    assert runs == {} and summary is None and "other shared data" in caplog.messages[-1]
    # an earlier run without its metrics is not merged
    (plan.out / "runs" / "entity-seed0" / "eval" / "metrics.json").unlink()
    runs, _ = earlier_runs(plan, shared)
    assert runs == {} and "incomplete" in caplog.messages[-1]


def test_tables_are_not_cut_to_80_columns_when_stdout_is_not_a_terminal(capsys) -> None:
    from rich.table import Table

    from kept.commands.common import stdout_console

    table = Table()
    for index in range(8):
        table.add_column(f"a_rather_long_variant_name_{index}")
    table.add_row(*[f"0.{index}00 ± 0.010" for index in range(8)])
    stdout_console().print(table)
    lines = capsys.readouterr().out.splitlines()
    assert any("a_rather_long_variant_name_7" in line for line in lines) and max(map(len, lines)) > 200


def test_compare_reference_variant_is_the_untrained_starting_checkpoint(tmp_path) -> None:
    checkpoint = tmp_path / "bert"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"model_type": "bert"}')
    path = tmp_path / "compare.yaml"
    path.write_text(
        f"name: cmp\nmodel: {{init_from: {checkpoint}}}\ntrain: {{max_steps: 7}}\n"
        "compare:\n  strategies: [token, entity]\n  fusion: [true]\n  seeds: [0, 1]\n  reference: true\n"
    )
    plan = load_compare_config(path)
    assert list(plan.runs) == ["token+fusion", "entity+fusion", "reference"]  # the baseline stays a strategy
    for seed, config in plan.runs["reference"]:
        assert config.train.max_steps == 0 and config.model.fusion is False and config.train.seed == seed
    path.write_text("name: cmp\ncompare:\n  strategies: [token]\n  reference: true\n")
    with pytest.raises(KeptError, match=r"compare\.yaml:4: compare.reference needs a starting checkpoint"):
        load_compare_config(path)


def test_compare_config_errors_name_file_and_line(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: cmp\ncompare:\n  strategies: [token]\n  seed: [0]\n")
    with pytest.raises(KeptError, match=r"bad\.yaml:4.*compare\.seed"):
        load_compare_config(path)
    path.write_text("name: cmp\n")
    with pytest.raises(KeptError, match=r"bad\.yaml.*no `compare:` section"):
        load_compare_config(path)
    path.write_text("name: cmp\ncompare:\n  strategies: [tokn]\n")
    with pytest.raises(KeptError, match=r"bad\.yaml.*strategy"):
        load_compare_config(path)


COMPARE_YAML = """\
name: cmp
data: {source: pykeen, pykeen_dataset: Nations, max_documents: 12}
kg: {model: TransE, dim: 16, epochs: 2}
annotation:
  detectors: [{type: gold}]
tokenizer: {vocab_size: 200, min_frequency: 1}
encode: {max_length: 48, validation_fraction: 0.25}
model:
  preset: tiny
  overrides: {hidden_size: 32, num_hidden_layers: 1, num_knowledge_layers: 1, num_attention_heads: 2,
              intermediate_size: 64, dea_num_negatives: 4}
train: {max_steps: 2, batch_size: 4, eval_steps: 2, save_steps: 2, logging_steps: 1}
eval: {relation: {enabled: false}, probe: {max_facts: 10}}
compare:
  strategies: [entity]
  fusion: [false, true]
  seeds: [0, 1]
  out: out/cmp
"""


@pytest.mark.slow
def test_kept_compare_end_to_end_shares_prepared_data(tmp_path) -> None:
    from typer.testing import CliRunner

    from kept.cli import app
    from kept.report import report

    (tmp_path / "compare.yaml").write_text(COMPARE_YAML)
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "compare.yaml")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "cmp"
    summary = load_compare(out)
    assert summary["variants"] == ["entity", "entity+fusion"]
    assert summary["runs"]["entity+fusion"] == ["runs/entity_fusion-seed0", "runs/entity_fusion-seed1"]
    assert summary["table"]["entity"]["cloze.accuracy"]["n"] == 2
    for run in ("entity-seed0", "entity_fusion-seed1"):
        run_dir = out / "runs" / run
        for shared in ("kg", "corpus", "tokenizer", "encoded"):
            assert (run_dir / shared).is_symlink()
            assert (run_dir / shared).resolve() == (out / "prepared" / shared).resolve()
        assert (run_dir / "eval" / "metrics.json").is_file() and (run_dir / "eval" / "report.md").is_file()
    assert (out / "compare" / "summary.md").is_file() and list((out / "compare" / "figures").glob("*.png"))
    assert report(out) == out / "eval" / "report.md"
    # a second invocation finds every stage done and recomputes nothing
    before = (out / "runs" / "entity-seed0" / "model" / "model.safetensors").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["compare", str(tmp_path / "compare.yaml")])
    assert again.exit_code == 0, again.output
    assert (out / "runs" / "entity-seed0" / "model" / "model.safetensors").stat().st_mtime_ns == before
    # a third with another variant, chosen on the command line, merges it into the summary
    third = CliRunner().invoke(
        app,
        [
            "compare",
            str(tmp_path / "compare.yaml"),
            "--set",
            "compare.strategies=[token]",
            "--set",
            "compare.fusion=[false]",
            "--set",
            "compare.baseline=null",
        ],
    )
    assert third.exit_code == 0, third.output
    merged = load_compare(out)
    assert merged["variants"] == ["entity", "entity+fusion", "token"] and merged["baseline"] == "entity"
    assert merged["runs"]["token"] == ["runs/token-seed0", "runs/token-seed1"]
    assert "merging the earlier variants entity, entity+fusion" in third.output


def test_objectives_benchmark_config_adds_one_objective_per_variant() -> None:
    """benchmarks/objectives.yaml: every variant is the base (entity masking + fusion, sentence pairs) plus one
    objective, so the table reads as the objective's effect."""
    plan = load_compare_config(Path(__file__).resolve().parent.parent / "benchmarks" / "objectives.yaml")
    assert list(plan.runs) == ["mlm", "mlm+sop", "mlm+red", "electra"]
    configs = {name: runs[0][1] for name, runs in plan.runs.items()}
    assert all(c.encode.sentence_pairs and c.model.fusion for c in configs.values())
    assert configs["mlm+sop"].model.overrides.get("use_sop") is True
    assert not configs["mlm"].model.overrides.get("use_sop")
    assert configs["mlm+red"].masking.replaced_entity_probability == 0.3
    assert configs["mlm"].masking.replaced_entity_probability == 0
    assert configs["electra"].model.objective == "electra" and configs["mlm"].model.objective == "mlm"
