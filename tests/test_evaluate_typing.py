"""Entity typing (kept.evaluate.typing): the OpenEntity/FIGER reader, KG-derived items held out from
pretraining, ERNIE-THU's figures, and a tiny fine-tune through evaluate_run_dir."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from kept.errors import KeptError
from kept.evaluate.config import TypingEvalConfig
from kept.evaluate.typing import (
    TypingItem,
    derive_typing_items,
    file_typing_data,
    kg_entity_types,
    predict_types,
    read_typing_file,
    run_typing_data,
    typing_scores,
)

ERNIE_ITEMS = [  # ERNIE-THU's OpenEntity files: a JSON array, linked mentions in "ents"
    {
        "sent": "He moved to Paris in 1923 .",
        "start": 12,
        "end": 17,
        "labels": ["location", "city"],
        "ents": [["Q90", 12, 17, 0.81], ["Q142", 0, 2, 0.1]],
    },
    {"sent": "Marie Curie won the prize .", "start": 0, "end": 11, "labels": ["person"], "ents": []},
]


def write_array(path: Path, items: list) -> Path:
    path.write_text("[\n" + ",\n".join("  " + json.dumps(item) for item in items) + "\n]\n", encoding="utf-8")
    return path


def write_lines(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


# ------------------------------------------------------------------ reader


def test_reader_takes_the_ernie_array_and_json_lines_alike(tmp_path: Path) -> None:
    index = {"Q90": 7, "Q142": 3}
    from_array = read_typing_file(write_array(tmp_path / "train.json", ERNIE_ITEMS), entity_index=index)
    from_lines = read_typing_file(write_lines(tmp_path / "items.jsonl", ERNIE_ITEMS), entity_index=index)
    assert [(i.sent, i.start, i.end, i.labels, i.entities) for i in from_array] == [
        (i.sent, i.start, i.end, i.labels, i.entities) for i in from_lines
    ]
    paris = from_array[0]
    assert paris.sent[paris.start : paris.end] == "Paris" and paris.labels == ("location", "city")
    assert paris.entities == ((12, 17, 7),)  # Q142's score 0.1 is below ERNIE-THU's threshold 0.3
    assert from_array[0].id == "train.json:2" and from_lines[1].id == "items.jsonl:2"  # file:line ids
    own = read_typing_file(
        write_lines(
            tmp_path / "own.jsonl",
            [{"sent": "Paris .", "start": 0, "end": 5, "labels": ["city"], "entity": "Q90", "id": "a"}],
        ),
        entity_index=index,
    )
    assert own[0].entities == ((0, 5, 7),) and own[0].id == "a"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"sent": "Paris .", "start": 0, "labels": ["city"]}, "missing field(s) end"),
        ({"sent": "Paris .", "start": 3, "end": 40, "labels": ["city"]}, "not a character span"),
        ({"sent": "Paris .", "start": 0, "end": 5, "labels": "city"}, "list of non-empty strings"),
        (["Paris", 0, 5], "expected a JSON object"),
    ],
)
def test_bad_items_name_file_and_line_in_both_formats(tmp_path: Path, bad, message: str) -> None:
    good = ERNIE_ITEMS[1]
    for path, line in (
        (write_array(tmp_path / "a.json", [good, good, bad]), 4),
        (write_lines(tmp_path / "b.jsonl", [good, bad]), 2),
    ):
        with pytest.raises(KeptError, match=re.escape(message)) as error:
            read_typing_file(path)
        assert str(error.value).startswith(f"{path}:{line}: ")


def test_broken_json_names_file_and_line(tmp_path: Path) -> None:
    lines = tmp_path / "c.jsonl"
    lines.write_text(json.dumps(ERNIE_ITEMS[1]) + '\n{"sent": \n', encoding="utf-8")
    with pytest.raises(KeptError, match="not valid JSON") as error:
        read_typing_file(lines)
    assert f"{lines}:2:" in str(error.value)
    array = tmp_path / "d.json"
    array.write_text("[\n" + json.dumps(ERNIE_ITEMS[1]) + "\n" + json.dumps(ERNIE_ITEMS[1]) + "\n]", encoding="utf-8")
    with pytest.raises(KeptError, match="',' is missing") as error:
        read_typing_file(array)
    assert f"{array}:3:" in str(error.value)
    empty = tmp_path / "e.json"
    empty.write_text("[]", encoding="utf-8")
    with pytest.raises(KeptError, match="no typing items"):
        read_typing_file(empty)


def test_an_ernie_directory_gives_its_own_splits(tmp_path: Path) -> None:
    write_array(tmp_path / "train.json", ERNIE_ITEMS * 3)
    write_array(tmp_path / "dev.json", ERNIE_ITEMS[:1])
    write_array(tmp_path / "test.json", ERNIE_ITEMS[1:])
    data = file_typing_data(tmp_path, entity_index=None, config=TypingEvalConfig(min_type_count=1), seed=0)
    assert len(data.train) == 6 and len(data.dev) == 1 and len(data.test) == 1
    assert data.types[0] in ("city", "location", "person") and set(data.types) == {"city", "location", "person"}
    assert file_typing_data(tmp_path / "missing", entity_index=None, config=TypingEvalConfig(), seed=0).startswith(
        "typing data not available"
    )


# ------------------------------------------------------------------ types and figures


def test_types_come_from_an_instance_of_relation_else_from_roles() -> None:
    labels = {"paris": "Paris", "city": "City", "france": "France", "curie": "Marie Curie"}
    triples = [("paris", "P31", "city"), ("curie", "birth_place", "paris"), ("curie", "links_to", "france")]
    typed, source = kg_entity_types(
        labels, {"P31": "instance of", "birth_place": "birth place", "links_to": "links to"}, triples
    )
    assert typed == {"paris": frozenset({"city"})} and "P31" in source
    typed, source = kg_entity_types(
        labels,
        {"birth_place": "birth_place", "leader_name1": "leader_name1", "links_to": "links to"},
        [("curie", "birth_place", "paris"), ("france", "leader_name1", "curie"), ("curie", "links_to", "france")],
    )
    assert typed == {
        "paris": frozenset({"birth place"}),
        "curie": frozenset({"has birth place", "leader name"}),
        "france": frozenset({"has leader name"}),
    }
    assert "roles" in source


def test_derived_items_window_the_mention_and_carry_the_links() -> None:
    text = "Marie Curie was born in Warsaw and worked in Paris for many years ."
    spans = [
        {"start": 0, "end": 11, "entity_id": 1, "source": "gold"},
        {"start": 24, "end": 30, "entity_id": 2, "source": "gold"},
        {"start": 45, "end": 50, "entity_id": 3, "source": "gazetteer"},
    ]
    types = {1: frozenset({"has birth place"}), 2: frozenset({"birth place"}), 3: frozenset({"city"})}
    items = derive_typing_items([{"id": "d0", "text": text, "spans": spans}], types, context_chars=12)
    assert [i.sent[i.start : i.end] for i in items] == ["Marie Curie", "Warsaw"]  # gold links only
    warsaw = items[1]
    assert warsaw.id == "d0:24-30" and warsaw.doc_id == "d0" and warsaw.labels == ("birth place",)
    assert warsaw.sent == "born in Warsaw and worked"  # cut at whitespace, 12 characters each side at most
    assert warsaw.entities == ((8, 14, 2),)
    with_silver = derive_typing_items([{"id": "d0", "text": text, "spans": spans}], types, gold_only=False)
    assert len(with_silver) == 3
    capped = derive_typing_items(
        [{"id": f"d{i}", "text": text, "spans": spans} for i in range(3)], types, max_per_entity=2
    )
    assert sum(i.labels == ("birth place",) for i in capped) == 2


def test_micro_macro_and_strict_figures_on_a_known_case() -> None:
    # gold {0,1} pred {0}; gold {2} pred {2}; gold {1} pred {0,2}
    gold = torch.tensor([[1, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.bool)
    pred = torch.tensor([[1, 0, 0], [0, 0, 1], [1, 0, 1]], dtype=torch.bool)
    scores = typing_scores(gold, pred)
    # pooled: 2 correct of 4 predicted and of 4 gold
    assert scores["micro_precision"] == pytest.approx(0.5) and scores["micro_recall"] == pytest.approx(0.5)
    assert scores["micro_f1"] == pytest.approx(0.5)
    # per item: precision 1, 1, 0 -> 2/3; recall 1/2, 1, 0 -> 1/2; F1 of the averages = 4/7
    assert scores["macro_precision"] == pytest.approx(2 / 3) and scores["macro_recall"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx(4 / 7)
    assert scores["strict_accuracy"] == pytest.approx(1 / 3)
    assert all(math.isnan(v) for v in typing_scores(gold[:0], pred[:0]).values())


def test_prediction_keeps_types_above_the_threshold_and_always_the_top_one() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [-3.0, -1.0, -2.0]])
    assert predict_types(logits).tolist() == [[True, True, False], [False, True, False]]
    assert predict_types(logits, at_least_one=False).tolist() == [[True, True, False], [False, False, False]]
    assert predict_types(logits, threshold=0.9).tolist() == [[True, False, False], [False, True, False]]


# ------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def wiki_run(tmp_path_factory) -> Path:
    """A tiny run on the embedded Wikipedia sample: data, gold annotation, encode (a quarter held out)."""
    pytest.importorskip("gensim")
    from kept.config import RunConfig, save_config
    from kept.runner import run_pipeline

    root = tmp_path_factory.mktemp("typing")
    config = RunConfig.model_validate(
        {
            "name": "wiki",
            "runs_dir": str(root),
            "data": {"source": "wikipedia_sample", "max_documents": 8},
            "annotation": {"detectors": [{"type": "gold", "link": False}]},
            "tokenizer": {"vocab_size": 400, "min_frequency": 2},
            "encode": {"max_length": 64, "validation_fraction": 0.25, "seed": 0},
            "model": {"preset": "tiny", "fusion": False},
        }
    )
    run_dir = root / "wiki"
    run_dir.mkdir()
    save_config(config, run_dir)
    run_pipeline(config, run_dir, stages=["data", "annotate", "encode"], progress=False)
    return run_dir


def test_wikipedia_typing_test_mentions_come_from_held_out_documents(wiki_run: Path) -> None:
    import datasets

    from kept.analysis import load_kg_tables
    from kept.encode import load_annotated, split_documents

    data = run_typing_data(
        wiki_run,
        load_kg_tables(wiki_run),
        validation_fraction=0.25,
        split_seed=0,
        config=TypingEvalConfig(min_type_count=1),
        seed=0,
    )
    assert not isinstance(data, str), data
    train_docs = set(datasets.load_from_disk(str(wiki_run / "encoded" / "train"))["doc_id"])
    validation_docs = set(datasets.load_from_disk(str(wiki_run / "encoded" / "validation"))["doc_id"])
    _, held_out = split_documents(list(load_annotated(wiki_run)["id"]), 0.25, 0)
    assert held_out == validation_docs
    test_docs = {item.doc_id for item in data.test}
    assert data.test and test_docs <= validation_docs and not test_docs & train_docs
    fit_docs = {item.doc_id for item in data.train + data.dev}
    assert data.train and fit_docs <= train_docs and not fit_docs & validation_docs
    assert "roles" in data.info["type_source"]
    assert all(set(item.labels) <= set(data.types) for item in data.train + data.dev + data.test)


def test_an_encoded_split_that_contradicts_the_settings_is_refused(wiki_run: Path, tmp_path: Path) -> None:
    from kept.analysis import load_kg_tables

    with pytest.raises(KeptError, match="encoded training split"):
        # the settings now hold out other documents than the encode step did
        run_typing_data(
            wiki_run,
            load_kg_tables(wiki_run),
            validation_fraction=0.25,
            split_seed=1,
            config=TypingEvalConfig(min_type_count=1),
            seed=0,
        )


def _tiny_model(run_dir: Path, num_entities: int) -> None:
    from transformers import AutoTokenizer

    from fusion import KeptConfig, KeptForPreTraining

    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    torch.manual_seed(0)
    config = KeptConfig.from_preset(
        "tiny",
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_knowledge_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        entity_vocab_size=num_entities,
        entity_dim=16,
        num_entity_attention_heads=2,
        freeze_entity_table=False,
        max_position_embeddings=128,
    )
    KeptForPreTraining(config).save_pretrained(str(run_dir / "model"))


def test_tiny_fine_tune_through_evaluate_run_dir(tmp_path: Path) -> None:
    from kept.config import load_run_config
    from kept.evaluate import evaluate_run_dir
    from kept.runner import run_pipeline
    from kept.tiny import make_tiny_run

    run_dir = make_tiny_run(tmp_path / "tiny", n_docs=16)
    run_pipeline(load_run_config(run_dir), run_dir, stages=["encode"], progress=False)
    num_entities = len((run_dir / "kg" / "entities.tsv").read_text(encoding="utf-8").splitlines()) - 1
    _tiny_model(run_dir, num_entities=num_entities)
    off = {"enabled": False}
    section = {
        "mlm": off,
        "cloze": off,
        "probe": off,
        "relation": off,
        "linkpred": off,
        "device": "cpu",
        "typing": {"enabled": True, "epochs": 2, "batch_size": 8, "min_type_count": 1, "max_length": 32},
    }
    record = evaluate_run_dir(run_dir, section)
    typing = record["metrics"]["typing"]
    assert "skipped" not in typing, typing
    assert 0.0 <= typing["micro_f1"] <= 1.0 and 0.0 <= typing["strict_accuracy"] <= 1.0
    assert typing["entity_input"] is True and typing["num_test"] > 0 and typing["best_epoch"] in (1, 2)
    items = record["items"]["typing"]
    assert "items" not in typing and len(items["ids"]) == len(items["gold"]) == len(items["pred"]) == typing["num_test"]
    assert all(row and max(row) < typing["num_types"] for row in items["pred"])  # the top type at least
    assert typing_scores(
        *(
            torch.zeros(len(rows), typing["num_types"], dtype=torch.bool).index_put_(
                (
                    torch.tensor([i for i, r in enumerate(rows) for _ in r], dtype=torch.long),
                    torch.tensor([t for r in rows for t in r], dtype=torch.long),
                ),
                torch.tensor(True),
            )
            for rows in (items["gold"], items["pred"])
        )
    )["micro_f1"] == pytest.approx(typing["micro_f1"])
    assert "typing" in record["timings_s"]
    again = evaluate_run_dir(run_dir, section)["metrics"]["typing"]
    assert again["micro_f1"] == typing["micro_f1"]  # seeded


def test_typing_is_skipped_with_the_reason_without_data(tmp_path: Path) -> None:
    from kept.evaluate.typing import typing_data

    class Encode:
        validation_fraction, seed = 0.1, 0

    reason = typing_data(tmp_path, TypingEvalConfig(), tables=lambda: {}, encode=Encode(), seed=0)
    assert isinstance(reason, str) and "eval.typing.data" in reason


def test_run_report_has_a_typing_row(tmp_path: Path) -> None:
    from eval_fixtures import fake_run

    from kept.report import report_run_dir

    run_dir = fake_run(tmp_path, "r1", 0.3, 5.0)
    path = run_dir / "eval" / "metrics.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record["metrics"]["typing"] = {
        "micro_f1": 0.625,
        "macro_f1": 0.5,
        "strict_accuracy": 0.25,
        "num_types": 12,
        "num_train": 80,
        "num_dev": 9,
        "num_test": 20,
        "type_source": "roles",
        "data": "derived from the run's entity links",
    }
    path.write_text(json.dumps(record), encoding="utf-8")
    text = report_run_dir(run_dir).read_text(encoding="utf-8")
    assert "| typing.micro_f1 | 0.625 |" in text  # a headline figure
    assert "| derived from the run's entity links | 12 | 80 / 9 / 20 | 0.625 | 0.5 | 0.25 | roles |" in text


def test_features_mark_the_mention_and_keep_it_in_a_short_window() -> None:
    from eval_fixtures import tiny_tokenizer

    from kept.evaluate.relation_data import add_markers
    from kept.evaluate.typing import TypingCollator, encode_typing_items

    tokenizer = tiny_tokenizer()
    add_markers(tokenizer)
    sent = "Marie Curie was born in Warsaw and worked in Paris and in Berlin and in Rome for many years ."
    start = sent.index("Paris")
    item = TypingItem(
        id="x", sent=sent, start=start, end=start + 5, labels=("city",), entities=((start, start + 5, 4), (0, 11, 9))
    )
    full, short = (
        encode_typing_items(tokenizer, [item], ["person", "city"], length, entity_input=True)[0] for length in (64, 8)
    )
    for feature in (full, short):
        tokens = tokenizer.convert_ids_to_tokens(feature["input_ids"])
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens[feature["mention_start"]] == "[E1]"
        marked = [t for t, m in zip(tokens, feature["mention_mask"]) if m]
        assert tokenizer.convert_tokens_to_string(marked) == "paris"
        assert tokens[feature["mention_start"] + len(marked) + 1] == "[/E1]"
        assert feature["labels"] == [0.0, 1.0]
        assert feature["entity_ids"][feature["mention_start"] + 1] == 4  # the mention's KG id on its first piece
    assert len(short["input_ids"]) == 8 and len(full["input_ids"]) < 64
    assert full["entity_ids"][1] == 9 and 9 not in short["entity_ids"]  # Marie Curie fell out of the window
    batch = TypingCollator(pad_id=0)([full, short])
    assert batch["input_ids"].shape == batch["mention_mask"].shape == batch["entity_ids"].shape
    assert batch["labels"].tolist() == [[0.0, 1.0], [0.0, 1.0]] and batch["mention_start"].shape == (2,)


def test_the_head_starts_at_the_training_prior() -> None:
    from fusion import KeptConfig
    from kept.evaluate.typing import KeptForEntityTyping, type_frequency

    items = [
        TypingItem(id=str(i), sent="x", start=0, end=1, labels=labels)
        for i, labels in enumerate([("city",), ("city", "capital"), ("person",), ("city",)])
    ]
    frequency = type_frequency(items, ["city", "capital", "person", "river"])
    assert frequency.tolist() == [0.75, 0.25, 0.25, 0.0]
    config = KeptConfig.from_preset(
        "tiny",
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=1,
        num_knowledge_layers=0,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=4,
    )
    model = KeptForEntityTyping(config)
    model.init_type_prior(frequency)
    assert torch.sigmoid(model.classifier.bias).tolist() == pytest.approx([0.75, 0.25, 0.25, 1e-3], rel=1e-4)
