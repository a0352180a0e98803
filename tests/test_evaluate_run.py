"""evaluate_run_dir on a tiny run directory (real tokenizer, real tiny KEPT model, KG, encoded data)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from eval_fixtures import build_run_dir

from kept.analysis import load_metrics
from kept.analysis.metrics import METRICS_FORMAT
from kept.errors import KeptError
from kept.evaluate import EvalConfig, evaluate_run_dir

FAST = {"relation": {"enabled": False}, "batch_size": 8, "num_examples": 3}
#: the metrics a test switches off to run one alone (typing is left as the eval config has it)
METRICS = ("mlm", "cloze", "probe", "relation", "linkpred")


def only(metric: str, **config: Any) -> dict[str, Any]:
    """An eval config that runs ``metric`` alone of :data:`METRICS`, plus the other ``config`` fields."""
    return {**{name: {"enabled": False} for name in METRICS if name != metric}, **config}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return build_run_dir(tmp_path_factory.mktemp("runs"), eval_section=FAST)


@pytest.fixture(scope="module")
def record(run_dir):
    """The default evaluation and the metrics.json it wrote (read at once: later tests overwrite it)."""
    result = evaluate_run_dir(run_dir)
    return {**result, "on_disk": load_metrics(run_dir)}


def test_metrics_json_has_every_figure(run_dir, record) -> None:
    on_disk = record["on_disk"]
    assert on_disk["metrics"] == record["metrics"]
    assert on_disk["format"] == METRICS_FORMAT and on_disk["run"] == "tiny"
    metrics = on_disk["metrics"]
    assert metrics["mlm"]["strategy"]["strategy"] == "entity" and metrics["mlm"]["token"]["strategy"] == "token"
    for part in (metrics["mlm"]["strategy"], metrics["mlm"]["token"]):
        assert part["num_predicted"] > 0 and 0.0 <= part["accuracy"] <= 1.0 and part["loss"] > 0
    assert metrics["cloze"]["num_mentions"] > 0 and 0.0 <= metrics["cloze"]["accuracy"] <= 1.0
    assert metrics["probe"]["num_facts"] >= 1 and 0.0 < metrics["probe"]["mrr"] <= 1.0
    assert metrics["probe"]["per_relation"]
    assert metrics["relation"] == {"skipped": "disabled in eval config"}
    assert metrics["linkpred"]["mrr"] == 0.25 and metrics["linkpred"]["source"] == "kg/kg_metrics.json"
    assert len(on_disk["examples"]["cloze"]) == 3 and {"gold", "prediction", "context"} <= set(
        on_disk["examples"]["cloze"][0]
    )
    assert on_disk["model"]["fusion"] is True and on_disk["model"]["strategy"] == "entity"
    assert set(on_disk["timings_s"]) == {"mlm", "cloze", "probe", "linkpred"}
    assert not list((run_dir / "eval").glob("*.tmp-*")), "written atomically"


def test_per_item_outcomes_sit_at_the_top_level(record) -> None:
    on_disk = record["on_disk"]
    items, metrics = on_disk["items"], on_disk["metrics"]
    assert {"cloze", "probe"} <= set(items) and "relation" not in items  # relation is disabled here
    assert "items" not in metrics["cloze"] and "items" not in metrics["probe"]
    assert len(items["cloze"]["ids"]) == metrics["cloze"]["num_mentions"]
    assert sum(items["cloze"]["correct"]) / len(items["cloze"]["correct"]) == pytest.approx(
        metrics["cloze"]["accuracy"]
    )
    assert len(items["probe"]["ids"]) == metrics["probe"]["num_facts"]
    assert sum(items["probe"]["reciprocal_rank"]) / metrics["probe"]["num_facts"] == pytest.approx(
        metrics["probe"]["mrr"]
    )


def test_evaluation_is_deterministic(run_dir, record) -> None:
    again = evaluate_run_dir(run_dir, EvalConfig.model_validate({**FAST, "probe": {"enabled": False}}))
    assert again["metrics"]["mlm"] == record["metrics"]["mlm"]
    assert again["metrics"]["cloze"] == record["metrics"]["cloze"]
    assert again["metrics"]["probe"] == {"skipped": "disabled in eval config"}


def test_token_masking_is_the_same_task_for_every_strategy(tmp_path, run_dir, record) -> None:
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    config_text = (other / "config.yaml").read_text().replace("strategy: entity", "strategy: span")
    (other / "config.yaml").write_text(config_text)
    result = evaluate_run_dir(
        other, EvalConfig.model_validate({**FAST, "probe": {"enabled": False}, "cloze": {"enabled": False}})
    )
    assert result["metrics"]["mlm"]["strategy"]["strategy"] == "span"
    assert result["metrics"]["mlm"]["token"] == record["metrics"]["mlm"]["token"]


def test_caps_limit_the_evaluated_items(run_dir) -> None:
    result = evaluate_run_dir(
        run_dir,
        {
            "mlm": {"max_examples": 2},
            "cloze": {"max_mentions": 2},
            "probe": {"max_facts": 1},
            "relation": {"enabled": False},
            "linkpred": {"enabled": False},
        },
    )
    metrics = result["metrics"]
    assert metrics["mlm"]["token"]["num_sequences"] == 2
    assert metrics["cloze"]["num_mentions"] == 2
    assert metrics["probe"]["num_facts"] == 1
    assert metrics["linkpred"]["skipped"]


def test_missing_model_names_the_directory(tmp_path) -> None:
    run_dir = build_run_dir(tmp_path, with_model=False)
    with pytest.raises(KeptError, match=r"model.*pretrain the run first"):
        evaluate_run_dir(run_dir, FAST)
    (run_dir / "config.yaml").unlink()
    with pytest.raises(KeptError, match=r"config\.yaml: config\.yaml not found"):
        evaluate_run_dir(run_dir, FAST)
    with pytest.raises(KeptError, match=r"run directory not found"):
        evaluate_run_dir(tmp_path / "nowhere", FAST)


def test_model_of_another_kind_names_config_json(tmp_path, run_dir) -> None:
    other = tmp_path / "roberta"  # a BERT is evaluated (a `kept distill` student); other kinds are refused
    shutil.copytree(run_dir, other)
    config_file = other / "model" / "config.json"
    data = json.loads(config_file.read_text())
    data["model_type"] = "roberta"
    config_file.write_text(json.dumps(data))
    with pytest.raises(KeptError, match=r"model/config\.json.*'roberta' model"):
        evaluate_run_dir(other, FAST)


def test_run_config_of_another_version_names_config_yaml(tmp_path, run_dir) -> None:
    other = tmp_path / "old"
    shutil.copytree(run_dir, other)
    with open(other / "config.yaml", "a", encoding="utf-8") as handle:
        handle.write("pretraining_objective: mlm\n")  # a key this version does not know
    with pytest.raises(KeptError, match=r"config\.yaml.*pretraining_objective"):
        evaluate_run_dir(other, FAST)


def test_missing_kg_metrics_is_a_note_and_bad_ones_an_error(tmp_path, run_dir) -> None:
    other = tmp_path / "nokg"
    shutil.copytree(run_dir, other)
    only_linkpred = only("linkpred")
    (other / "kg" / "kg_metrics.json").unlink()
    result = evaluate_run_dir(other, only_linkpred)
    assert "kg_metrics.json not found" in result["metrics"]["linkpred"]["skipped"]
    (other / "kg" / "kg_metrics.json").write_text('{"model": "TransE"}')
    with pytest.raises(KeptError, match=r"kg_metrics\.json.*lack mrr"):
        evaluate_run_dir(other, only_linkpred)
    (other / "kg" / "kg_metrics.json").write_text('{"mrr": ')
    with pytest.raises(KeptError, match=r"kg_metrics\.json.*not valid JSON"):
        evaluate_run_dir(other, only_linkpred)


def test_relation_skips_with_a_note_without_fewrel(run_dir) -> None:
    result = evaluate_run_dir(run_dir, only("relation"))
    assert "no FewRel data configured" in result["metrics"]["relation"]["skipped"]
    missing = evaluate_run_dir(run_dir, only("relation", relation={"data": str(run_dir / "nowhere.json")}))
    assert "does not exist" in missing["metrics"]["relation"]["skipped"]


@pytest.mark.slow
def test_relation_classification_on_fewrel(run_dir, fewrel_dir) -> None:
    result = evaluate_run_dir(
        run_dir,
        only(
            "relation",
            relation={
                "data": str(fewrel_dir / "val_nyt.json"),
                "max_relations": 3,
                "max_per_relation": 20,
                "epochs": 2,
            },
            finetune_seed=3,
        ),
    )
    relation = result["metrics"]["relation"]
    assert relation["num_labels"] == 3 and relation["num_test"] == 18
    assert relation["num_train"] == 36 and relation["num_dev"] == 6  # 42 training sentences, 2 per relation for dev
    assert 0.0 <= relation["accuracy"] <= 1.0 and not math.isnan(relation["macro_f1"])
    assert relation["chance"] == pytest.approx(1 / 3) and relation["best_epoch"] in (1, 2)
    assert relation["init"] == "kept" and relation["new_tensors"] == 2 and relation["k_layers"] == 2
    assert relation["finetune_seed"] == 3  # the split still follows eval.seed (num_* above)
    items = result["items"]["relation"]
    assert "items" not in relation and len(items["ids"]) == len(items["gold"]) == len(items["pred"]) == 18


@pytest.mark.slow
def test_linkpred_recompute_ranks_with_pykeen(tmp_path) -> None:
    from kept.evaluate.linkpred import evaluate_linkpred
    from kg import EmbeddingConfig, load_pykeen_dataset

    load_pykeen_dataset("Nations").save(tmp_path / "run" / "kg")
    result = evaluate_linkpred(
        tmp_path / "run", recompute=True, embedding_config=EmbeddingConfig(model="TransE", dim=8, epochs=1)
    )
    assert result["source"] == "recomputed" and result["model"] == "TransE"
    assert 0.0 < result["mrr"] <= 1.0 and 0.0 <= result["hits_at_1"] <= result["hits_at_10"] <= 1.0
    assert not (tmp_path / "run" / "kg" / "kg_metrics.json").exists(), "recomputing writes nothing"


def test_cli_evaluate_prints_table_and_writes_metrics(run_dir) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from kept.cli import app
    from kept.commands.evaluate import print_summary

    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(run_dir),
            "--set",
            "eval.probe.enabled=false",
            "--set",
            "eval.mlm.max_examples=3",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = load_metrics(run_dir)
    assert metrics["metrics"]["probe"]["skipped"] and metrics["metrics"]["mlm"]["token"]["num_sequences"] == 3
    console = Console(record=True, width=160)
    print_summary(metrics, console)
    text = console.export_text()
    assert "cloze.accuracy" in text and "probe" in text and "skipped" in text


def test_missing_encoded_validation_names_the_directory(tmp_path, run_dir) -> None:
    other = tmp_path / "noenc"
    shutil.copytree(run_dir, other)
    shutil.rmtree(other / "encoded" / "validation")
    with pytest.raises(KeptError, match=r"encoded/validation: encoded validation split not found"):
        evaluate_run_dir(other, FAST)
    shutil.rmtree(other / "kg")
    with pytest.raises(KeptError, match=r"kg/entities\.tsv: KG table not found"):
        evaluate_run_dir(other, {**FAST, "mlm": {"enabled": False}, "cloze": {"enabled": False}})


def test_no_linked_mentions_gives_null_not_nan(tmp_path, run_dir) -> None:
    import datasets

    other = tmp_path / "nolinks"
    shutil.copytree(run_dir, other)
    rows = datasets.load_from_disk(str(other / "encoded" / "validation")).to_list()
    for row in rows:
        row["entity_ids"] = [-1] * len(row["entity_ids"])
    shutil.rmtree(other / "encoded" / "validation")
    datasets.Dataset.from_list(rows).save_to_disk(str(other / "encoded" / "validation"))
    evaluate_run_dir(other, {**FAST, "mlm": {"enabled": False}, "probe": {"enabled": False}})

    def refuse(constant: str) -> None:
        raise AssertionError(f"metrics.json holds {constant}, which is not JSON")

    data = json.loads((other / "eval" / "metrics.json").read_text(), parse_constant=refuse)
    assert data["metrics"]["cloze"]["num_mentions"] == 0 and data["metrics"]["cloze"]["accuracy"] is None
    from kept.analysis import flatten_metrics

    assert "cloze.accuracy" not in flatten_metrics(data) and flatten_metrics(data)["cloze.num_mentions"] == 0


@pytest.mark.slow
def test_relation_feeds_linked_entities_to_a_fusion_model(run_dir, fewrel_dir) -> None:
    from kept.evaluate.relation import evaluate_relation
    from kept.fewrel import fewrel_entities, load_fewrel

    kb_ids = [kb for kb, _ in fewrel_entities(load_fewrel(fewrel_dir / "val_nyt.json"))]
    index = {kb: i % 17 for i, kb in enumerate(kb_ids)}  # the tiny model's table has 17 rows
    result = evaluate_relation(
        run_dir / "model",
        run_dir / "tokenizer",
        fewrel_dir / "val_nyt.json",
        max_relations=2,
        max_per_relation=10,
        epochs=1,
        entity_index=index,
    )
    assert result["entity_input"] and result["linked_fraction"] == 1.0
    assert 0.0 <= result["accuracy"] <= 1.0
