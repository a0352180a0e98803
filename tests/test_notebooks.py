"""The analyst notebooks: valid, stripped, parameterised (fast); kept.explore on tiny data (fast);
every notebook executed top to bottom with nbclient on tiny runs the test builds (slow)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest

from kept.analysis.metrics import METRICS_FORMAT, METRICS_FORMAT_VERSION

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
EXPECTED = ["01_annotations.ipynb", "02_knowledge_graph.ipynb", "03_results.ipynb"]
PARAMETER_LINE = 'RUN_DIR = os.environ.get("KEPT_RUN_DIR", "../runs/demo")'


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS_DIR / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ fast: the committed files


def test_every_notebook_is_valid_stripped_and_parameterised() -> None:
    paths = notebook_paths()
    assert [p.name for p in paths] == EXPECTED
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata["kernelspec"]["name"] == "python3", path.name
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        for cell in code:
            assert cell.outputs == [], f"{path.name}: cell {cell.id} has outputs (strip them)"
            assert cell.execution_count is None, f"{path.name}: cell {cell.id} has an execution count"
        first = code[0]
        assert "parameters" in first.metadata.get("tags", []), f"{path.name}: first code cell is not tagged"
        assert PARAMETER_LINE in first.source, path.name
        later = "\n".join(cell.source for cell in code[1:])
        assert "RUN_DIR =" not in later, f"{path.name}: RUN_DIR is set again after the parameters cell"
        # loaders live in the library (kept.analysis / kept.explore), not in cells
        for forbidden in ("open(", "json.load", "load_from_disk", "read_csv", "safe_open", "load_file(", "\ndef "):
            assert forbidden not in later, f"{path.name}: a cell reads files itself ({forbidden!r})"
        assert "from kept import" in later


def test_notebooks_match_their_generator() -> None:
    module = generator()
    assert sorted(module.NOTEBOOKS) == EXPECTED
    for name in EXPECTED:
        assert (NOTEBOOKS_DIR / name).read_text(encoding="utf-8") == module.render(name), (
            f"{name} differs from notebooks/make_notebooks.py: run `python notebooks/make_notebooks.py`"
        )
    assert module.main(["--check"]) == 0


@pytest.fixture(scope="session")
def jupyter_path(tmp_path_factory) -> Path:
    """A JUPYTER_PATH whose "python3" kernelspec starts this interpreter (the venv's), ahead of any
    user or system kernelspec of the same name; nothing is installed anywhere."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        ),
        encoding="utf-8",
    )
    return root


def test_python3_kernel_runs_this_interpreter(jupyter_path, monkeypatch) -> None:
    from jupyter_client.manager import KernelManager

    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    manager = KernelManager(kernel_name="python3")
    assert manager.format_kernel_cmd()[0] == sys.executable
    # without the override, the name still resolves (ipykernel ships its spec) to this interpreter
    monkeypatch.delenv("JUPYTER_PATH")
    assert KernelManager(kernel_name="python3").kernel_spec.language == "python"


# ------------------------------------------------------------------ fast: kept.explore


def metrics_record(
    name: str, fusion: bool, strategy: str, cloze: list[tuple[str, str, bool]], per_relation: dict | None = None
) -> dict:
    return {
        "format": METRICS_FORMAT,
        "format_version": METRICS_FORMAT_VERSION,
        "run": name,
        "model": {"strategy": strategy, "fusion": fusion, "num_parameters": 10},
        "metrics": {
            "mlm": {"token": {"loss": 5.0, "accuracy": 0.1}},
            "cloze": {"accuracy": sum(c for *_, c in cloze) / len(cloze), "num_mentions": len(cloze)},
            "probe": {"mrr": 0.5, "hits_at_1": 0.25, "per_relation": per_relation or {}},
            "relation": {"skipped": "no FewRel data configured"},
        },
        "examples": {
            "cloze": [
                {
                    "doc_id": f"d{i}",
                    "row": i,
                    "position": 3,
                    "entity_id": i,
                    "context": f"ctx {i}",
                    "gold": gold,
                    "prediction": predicted,
                    "correct": correct,
                }
                for i, (gold, predicted, correct) in enumerate(cloze)
            ]
        },
    }


def write_run(root: Path, name: str, record: dict) -> Path:
    (root / name / "eval").mkdir(parents=True)
    (root / name / "eval" / "metrics.json").write_text(json.dumps(record), encoding="utf-8")
    return root / name


def test_open_runs_pairs_baseline_and_knowledge_and_finds_wins(tmp_path) -> None:
    from kept import explore
    from kept.compare import compare_runs

    base = write_run(
        tmp_path / "runs",
        "token",
        metrics_record(
            "token",
            False,
            "token",
            [("paris", "rome", False), ("france", "france", True), ("seine", "rhine", False)],
            {"capital_of": {"hits_at_1": 0.0, "mrr": 0.3, "count": 4}},
        ),
    )
    know = write_run(
        tmp_path / "runs",
        "entity_fusion",
        metrics_record(
            "entity_fusion",
            True,
            "entity",
            [("paris", "paris", True), ("france", "spain", False), ("seine", "rhine", False)],
            {"capital_of": {"hits_at_1": 0.5, "mrr": 0.6, "count": 4}, "lies_on": {"hits_at_1": 1.0, "count": 1}},
        ),
    )

    folder = explore.open_runs(tmp_path)  # a compare layout whose summary is not written yet: runs/*
    assert folder.compare is None and set(folder.runs) == {"token", "entity+fusion"}
    assert folder.baseline() == "token" and folder.knowledge() == "entity+fusion"
    assert folder.pick(None, "knowledge") == ("entity+fusion", know.resolve())
    assert folder.pick("entity_fusion", "baseline")[1] == know.resolve()  # a directory works too
    with pytest.raises(Exception, match="no evaluated run 'nope'"):
        folder.pick("nope")

    wins = explore.cloze_wins(base, know)
    assert wins[["gold", "prediction_baseline", "prediction_knowledge"]].values.tolist() == [["paris", "rome", "paris"]]
    assert len(explore.cloze_comparison(base, know)) == 3

    table = explore.probe_per_relation(folder)
    assert table.loc["capital_of", "entity+fusion"] == 0.5 and table.loc["capital_of", "token"] == 0.0
    assert table.loc["lies_on", "facts"] == 1 and table.index[0] == "capital_of"
    assert explore.skipped_metrics(folder)["token"] == {"relation": "no FewRel data configured"}
    result = explore.comparison(folder)
    assert result.table["entity+fusion"]["cloze.accuracy"].mean == pytest.approx(1 / 3)

    # the same runs behind a compare summary (relative paths, as kept demo / kept compare write them)
    summary = compare_runs({"token": [base], "entity+fusion": [know]})
    summary.runs = {v: [str(Path(r).relative_to(tmp_path)) for r in rs] for v, rs in summary.runs.items()}
    summary.save(tmp_path / "compare", figures=False)
    compared = explore.open_runs(tmp_path)
    assert compared.compare is not None and compared.runs == {"token": base.resolve(), "entity+fusion": know.resolve()}
    assert compared.data_dir is None  # no corpus or KG anywhere: the annotation/KG notebooks print notes

    # several seeds of a variant: one label per run
    seed1 = write_run(
        tmp_path / "runs", "token-seed1", metrics_record("token-seed1", False, "token", [("paris", "paris", True)])
    )
    seeded = compare_runs({"token": [base, seed1], "entity+fusion": [know]})
    seeded.save(tmp_path / "seeded" / "compare", figures=False)
    runs = explore.open_runs(tmp_path / "seeded")
    assert list(runs.runs) == ["token/token", "token/token-seed1", "entity+fusion"]
    assert runs.baseline() == "token/token" and runs.knowledge() == "entity+fusion"
    assert explore.comparison(runs).table["token"]["cloze.accuracy"].n == 2


def test_open_runs_of_a_missing_directory_says_what_to_do(tmp_path) -> None:
    from kept import explore
    from kept.errors import KeptError

    with pytest.raises(KeptError, match="kept demo"):
        explore.open_runs(tmp_path / "missing")


@pytest.fixture(scope="module")
def encoded_run(tmp_path_factory) -> Path:
    from kept.config import load_run_config
    from kept.runner import run_pipeline
    from kept.tiny import make_tiny_run

    run_dir = make_tiny_run(tmp_path_factory.mktemp("explore") / "run", n_docs=12)
    run_pipeline(load_run_config(run_dir), run_dir, stages=["encode"], progress=False)
    return run_dir


def test_annotation_views_of_a_tiny_run(encoded_run) -> None:
    from kept import explore

    spans = explore.spans_frame(encoded_run)
    assert len(spans) > 0 and set(spans["source"]) == {"gold"}
    assert all(row.text == row.entity for row in spans.itertuples())  # tiny KG labels == mention text
    detectors = explore.detector_table(encoded_run)
    assert detectors.loc["gold", "spans"] == len(spans) and detectors.loc["gold", "linked_fraction"] == 1.0
    assert 0 < detectors.loc["gold", "char_coverage"] < 1 and detectors.loc["gold", "ambiguous_fraction"] == 0.0
    recall, why = explore.gold_recall_table(encoded_run)
    assert recall is None and "only gold spans" in why
    records = explore.displacy_records(encoded_run, n=2)
    assert len(records) == 2
    first = records[0]
    assert all(first["text"][e["start"] : e["end"]] in e["label"] for e in first["ents"])  # "GOLD:entity → Paris"
    assert set(explore.displacy_options(records)["colors"].values()) == {explore.SOURCE_COLORS["gold"]}


def test_gold_recall_counts_exact_and_overlapping_detector_spans(encoded_run, tmp_path) -> None:
    import shutil

    from kept import explore
    from kept.analysis import load_annotations

    run_dir = tmp_path / "run"
    shutil.copytree(encoded_run, run_dir)
    dataset = load_annotations(run_dir)
    gold_total = sum(len(d["spans"]) for d in dataset)

    def detect(document):  # a "ner" detector: the first gold span exactly, the second one character short
        spans = [dict(s, source="ner", entity_id=-1) for s in document["spans"][:2]]
        if len(spans) == 2:
            spans[1]["end"] -= 1
        return {"spans": spans}

    detected = dataset.map(detect, keep_in_memory=True)
    detected.save_to_disk(str(run_dir / "corpus" / "detected"))
    shutil.rmtree(run_dir / "corpus" / "annotated")
    (run_dir / "corpus" / "detected").rename(run_dir / "corpus" / "annotated")
    recall, why = explore.gold_recall_table(run_dir)
    assert why == ""
    documents = len(dataset)
    assert recall.loc["ner", "recall_exact"] == pytest.approx(documents / gold_total)
    assert recall.loc["ner", "recall_overlap"] == pytest.approx(2 * documents / gold_total)
    assert recall.loc["all detectors (non-gold)", "recall_overlap"] == recall.loc["ner", "recall_overlap"]


def test_gold_recall_without_gold_spans_is_a_note(encoded_run, tmp_path) -> None:
    import shutil

    from kept import explore
    from kept.analysis import load_documents
    from kept.corpus import write_documents

    run_dir = tmp_path / "run"
    shutil.copytree(encoded_run, run_dir)
    write_documents([dict(d, spans=[]) for d in load_documents(run_dir)], run_dir / "corpus" / "documents.jsonl")
    recall, why = explore.gold_recall_table(run_dir)
    assert recall is None and "no gold spans" in why
    assert explore.available(run_dir)["annotations"] and not explore.available(run_dir)["model"]
    assert not any(explore.available(None).values())


def test_masked_batches_mask_whole_entities(encoded_run) -> None:
    from kept import explore

    summary = explore.masking_summary(encoded_run, ["token", "entity"], rows=8)
    # entity masking gives entity units half of the budget (masking.entity_share 0.5), words the rest;
    # token masking picks pieces anywhere
    assert summary.loc["entity", "in_entities"] >= 0.35
    assert summary.loc["entity", "in_entities"] > summary.loc["token", "in_entities"]
    assert 0 < summary.loc["token", "predicted_fraction"] < 0.5
    masked = explore.masked_batch(encoded_run, "entity", rows=2)
    tokens = explore.masked_tokens_frame(masked, row=0)
    chosen = tokens[tokens["action"] != ""]
    assert len(chosen) > 0 and "entity" in set(chosen["unit_kind"])
    # every token of a chosen unit is chosen (whole-unit masking)
    for unit in set(chosen["unit"]):
        assert (tokens[tokens["unit"] == unit]["action"] != "").all()
    record = explore.masked_displacy(masked, row=0)
    assert record["ents"] and any(e["label"].startswith("entity·") for e in record["ents"])
    words = record["text"].split(" ")
    assert words == tokens["token"].tolist()


def test_kg_views_of_a_tiny_run(encoded_run) -> None:
    from kept import explore

    graph, stats = explore.kg_overview(encoded_run)
    assert stats["num_entities"] == graph.num_entities == 22 and stats["num_triples"] == 16
    projection, variance = explore.entity_projection(encoded_run)
    assert len(projection) == 22 and 0 < variance[1] <= variance[0] < 1
    assert abs(projection["x"].mean()) < 1e-9  # centred
    figure = explore.neighbourhood_figure(graph, "France", hops=1)
    assert "France: 1-hop neighbourhood (4 entities, 3 triples)" in figure.axes[0].get_title()
    explore.show(explore.projection_figure(projection, variance))  # outside IPython: renders, no error


# ------------------------------------------------------------------ slow: execute every notebook


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> Path:
    """Two trained and evaluated tiny runs (token without fusion, entity with fusion) and a compare summary."""
    from kept.compare import compare_runs
    from kept.config import load_run_config
    from kept.runner import run_pipeline
    from kept.tiny import make_tiny_run

    root = tmp_path_factory.mktemp("nb") / "runs"
    dirs = {}
    for directory, strategy, fusion in (("token", "token", False), ("entity_fusion", "entity", True)):
        run_dir = make_tiny_run(
            root / directory, name=directory, strategy=strategy, fusion=fusion, steps=6, save_steps=3
        )
        config = load_run_config(run_dir, ["eval.relation.enabled=false", "eval.num_examples=20"])
        run_pipeline(config, run_dir, stages=["encode", "pretrain", "evaluate"], progress=False)
        dirs[f"{strategy}+fusion" if fusion else strategy] = [run_dir]
    # annotation statistics for one run (the data directory of the compare layout); the other has none
    from kept.analysis import load_annotations
    from kept.rundir import atomic_write_json
    from masking import annotation_stats

    atomic_write_json(
        root / "token" / "corpus" / "annotation_stats.json", annotation_stats(load_annotations(root / "token"))
    )
    result = compare_runs(dirs)
    result.runs = {v: [str(Path(r).relative_to(root)) for r in rs] for v, rs in result.runs.items()}
    result.save(root / "compare", figures=False)
    return root


def execute(name: str, run_dir: Path, monkeypatch, jupyter_path: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("KEPT_RUN_DIR", str(run_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> tuple[str, str, int]:
    """(printed text, HTML, number of PNG images) of an executed notebook."""
    text, html, images = [], [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output
            if output.output_type == "stream":
                text.append(output.text)
            data = output.get("data", {})
            html.append(data.get("text/html", ""))
            images += "image/png" in data
    return "".join(text), "".join(html), images


@pytest.mark.slow
def test_annotations_notebook_runs(tiny_runs, monkeypatch, jupyter_path) -> None:
    text, html, images = outputs(execute("01_annotations.ipynb", tiny_runs, monkeypatch, jupyter_path))
    assert "displacy" in html or 'class="entities"' in html  # displaCy renderings
    assert "GOLD:entity → " in html and "entity·[MASK]" in html
    assert "--- summary" in text and "--- by_source" in text  # annotation_stats.json of the data run
    assert "only gold spans" in text
    assert images >= 1


@pytest.mark.slow
def test_annotations_notebook_runs_without_annotation_statistics(tiny_runs, monkeypatch, jupyter_path) -> None:
    text, html, _ = outputs(execute("01_annotations.ipynb", tiny_runs / "entity_fusion", monkeypatch, jupyter_path))
    assert "note: no annotation statistics" in text and 'class="entities"' in html


@pytest.mark.slow
def test_knowledge_graph_notebook_runs(tiny_runs, monkeypatch, jupyter_path) -> None:
    text, html, images = outputs(execute("02_knowledge_graph.ipynb", tiny_runs, monkeypatch, jupyter_path))
    assert "KnowledgeGraph(entities=22, relations=3, triples=16)" in text
    assert "explained variance" in text and "no link-prediction figures" in text
    assert images == 4  # degrees, relations, neighbourhood, projection


@pytest.mark.slow
def test_results_notebook_runs_on_a_compare_directory(tiny_runs, monkeypatch, jupyter_path) -> None:
    text, html, images = outputs(execute("03_results.ipynb", tiny_runs, monkeypatch, jupyter_path))
    assert "compare summary: compare/summary.json" in text
    assert "baseline: token" in text and "knowledge: entity+fusion" in text
    assert "cloze examples in both runs" in text
    assert "relation skipped (disabled in eval config)" in text and "error bars are zero" in text
    assert images == 3  # learning curves, comparison bars, probe per relation


@pytest.mark.slow
def test_results_notebook_runs_on_a_single_run(tiny_runs, monkeypatch, jupyter_path) -> None:
    text, _, images = outputs(execute("03_results.ipynb", tiny_runs / "entity_fusion", monkeypatch, jupyter_path))
    assert "needs two evaluated runs" in text and "compare summary: none" in text
    assert images >= 2


@pytest.mark.slow
def test_recomputed_cloze_examples_are_the_evaluation_items(tiny_runs) -> None:
    from kept import explore

    def key(example: dict) -> tuple:
        return example["row"], example["position"], example["gold"], example["prediction"], example["correct"]

    for name in ("token", "entity_fusion"):
        recorded = explore.cloze_examples(tiny_runs / name)
        assert len(recorded) == 20  # eval.num_examples of the fixture
        again = explore.cloze_examples(tiny_runs / name, recompute=len(recorded))
        assert [key(e) for e in again] == [key(e) for e in recorded]
    both = explore.cloze_comparison(tiny_runs / "token", tiny_runs / "entity_fusion", recompute=30)
    assert len(both) == 30 and both["gold"].map(bool).all()
    wins = explore.cloze_wins(tiny_runs / "token", tiny_runs / "entity_fusion", recompute=30)
    assert len(wins) == int((both["correct_knowledge"] & ~both["correct_baseline"]).sum())


@pytest.mark.slow
def test_notebooks_on_a_directory_with_only_metrics_print_notes(tiny_runs, monkeypatch, jupyter_path, tmp_path) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_runs / "token" / "eval", bare / "eval")
    text, _, _ = outputs(execute("01_annotations.ipynb", bare, monkeypatch, jupyter_path))
    assert "note: no annotated corpus" in text and "note: no encoded data" in text
    text, _, _ = outputs(execute("02_knowledge_graph.ipynb", bare, monkeypatch, jupyter_path))
    assert "note: this run has no knowledge graph" in text and "no link-prediction figures" in text
