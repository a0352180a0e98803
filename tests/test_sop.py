"""SOP end to end: `kept encode` builds sentence-order pairs (encode.sentence_pairs), `kept pretrain`
trains the SOP head on them and refuses an SOP model without them, `kept compare` has an SOP axis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kept.config import load_run_config
from kept.encode import encode_run, load_encoded
from kept.errors import KeptError
from kept.tiny import make_tiny_run, tiny_documents

PAIRS = ["encode.sentence_pairs=true"]
SOP = ["model.overrides.use_sop=true"]


@pytest.fixture(scope="module")
def pair_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_tiny_run(tmp_path_factory.mktemp("sop") / "template", n_docs=120, steps=6, save_steps=6)
    encode_run(run_dir, load_run_config(run_dir, PAIRS))
    return run_dir


@pytest.fixture
def pair_run(pair_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(pair_template, target)
    return target


def _segments(row: dict[str, Any], sep_id: int) -> tuple[slice, slice]:
    """Content positions of the segment written first and second in ``[CLS] A [SEP] B [SEP]``."""
    seps = [i for i, t in enumerate(row["input_ids"]) if t == sep_id]
    assert len(seps) == 2 and seps[1] == len(row["input_ids"]) - 1
    return slice(1, seps[0]), slice(seps[0] + 1, seps[1])


def _check_pair_rows(rows: list[dict[str, Any]], tokenizer: Any, texts: dict[str, str], spans: dict[str, list]) -> None:
    """Each row: [CLS] A [SEP] B [SEP], token types 0 then 1, the two segments consecutive in their
    document (in order for label 0, swapped for label 1), units as in the document's own alignment."""
    from masking import encode_with_units

    for row in rows:
        ids, types = row["input_ids"], row["token_type_ids"]
        assert ids[0] == tokenizer.cls_token_id
        first, second = _segments(row, tokenizer.sep_token_id)
        assert types == [0] * (first.stop + 1) + [1] * (len(ids) - first.stop - 1)
        special = [0, first.stop, second.stop]
        assert all(
            row["unit_ids"][i] == -1 and row["word_ids"][i] == -1 and row["entity_ids"][i] == -1 for i in special
        )
        assert min(row["unit_ids"][1 : first.stop] + row["unit_ids"][second]) >= 0
        # put the pair back in document order and find it in the document, units and all
        a, b = (second, first) if row["sentence_order_label"] else (first, second)
        doc = encode_with_units(tokenizer, [texts[row["doc_id"]]], [spans[row["doc_id"]]], max_length=4096)
        doc_ids = doc["input_ids"][0][1:-1]
        joined = ids[a] + ids[b]
        starts = [k for k in range(len(doc_ids) - len(joined) + 1) if doc_ids[k : k + len(joined)] == joined]
        assert starts, "the two segments are not consecutive text of their document"
        k = starts[0]
        for name in ("unit_kind", "entity_ids"):
            assert row[name][a] + row[name][b] == doc[name][0][1:-1][k : k + len(joined)], name
        for seg, offset in ((a, k), (b, k + (a.stop - a.start))):  # the same unit boundaries inside a segment
            for col in ("unit_ids", "word_ids"):
                mine = np.asarray(row[col][seg])
                theirs = np.asarray(doc[col][0][1:-1][offset : offset + len(mine)])
                assert (np.diff(mine) != 0).tolist() == (np.diff(theirs) != 0).tolist(), col
                # a segment starts on a unit boundary: never inside a word or an entity
                whole = np.asarray(doc[col][0][1:-1])
                assert offset == 0 or whole[offset] != whole[offset - 1], col


def test_encode_builds_balanced_aligned_sentence_pairs(pair_template: Path) -> None:
    from kept.tokenizer import load_run_tokenizer

    tokenizer = load_run_tokenizer(pair_template / "tokenizer")
    stats = json.loads((pair_template / "encoded" / "stats.json").read_text())
    assert stats["sentence_pairs"] is True
    train = load_encoded(pair_template, "train")
    assert {"token_type_ids", "sentence_order_label"} <= set(train.column_names)
    labels = np.asarray(train["sentence_order_label"])
    assert len(labels) >= 80 and set(labels.tolist()) == {0, 1}
    assert 0.35 <= labels.mean() <= 0.65  # swapped with probability 0.5
    assert stats["train"]["swapped_pairs"] == int(labels.sum())
    documents, _ = tiny_documents(120, 0)
    texts = {d["id"]: d["text"] for d in documents}
    spans = {d["id"]: d["spans"] for d in documents}
    _check_pair_rows([train[i] for i in range(len(train))], tokenizer, texts, spans)
    # the mentions stay linked: the pairs carry as many linked mentions as the documents
    assert stats["train"]["linked_mentions"] > 0
    again = encode_run(pair_template, load_run_config(pair_template, PAIRS))  # seeded: the same pairs
    assert again.stats["train"]["swapped_pairs"] == stats["train"]["swapped_pairs"]


def test_base_model_tokenizer_gives_segment_ids(minilm_dir: Path) -> None:
    from kept.tokenizer import load_pretrained_tokenizer
    from masking.pairs import encode_sentence_pairs

    tokenizer = load_pretrained_tokenizer(str(minilm_dir))
    documents, _ = tiny_documents(40, 1)
    out = encode_sentence_pairs(
        tokenizer,
        [d["text"] for d in documents],
        [d["spans"] for d in documents],
        max_length=32,
        seed=3,
        doc_ids=[d["id"] for d in documents],
    )
    rows = [{name: out[name][i] for name in out} for i in range(len(out["input_ids"]))]
    assert len(rows) >= 30 and {r["sentence_order_label"] for r in rows} == {0, 1}
    assert all(len(r["input_ids"]) <= 32 for r in rows)
    for row in rows:  # the tokenizer's own pair encoding gives the same ids and segment ids
        first, second = _segments(row, tokenizer.sep_token_id)
        own = tokenizer(tokenizer.decode(row["input_ids"][first]), tokenizer.decode(row["input_ids"][second]))
        assert own["input_ids"] == row["input_ids"] and own["token_type_ids"] == row["token_type_ids"]
    _check_pair_rows(rows, tokenizer, {d["id"]: d["text"] for d in documents}, {d["id"]: d["spans"] for d in documents})


def test_pretrain_with_sop_trains_the_sop_head(pair_run: Path) -> None:
    import torch
    from transformers import TrainerCallback

    from fusion import KeptForPreTraining
    from kept.pretrain import pretrain_run

    initial: dict[str, torch.Tensor] = {}

    class KeepInitialHead(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
            initial["weight"] = model.sop_classifier.weight.detach().clone()

    config = load_run_config(pair_run, PAIRS + SOP)
    pretrain_run(pair_run, config, progress=False, extra_callbacks=[KeepInitialHead()])
    history = json.loads((pair_run / "logs" / "train_history.json").read_text())["log_history"]
    train = [e for e in history if "loss" in e]
    assert len(train) == 6 and all(e["sop_loss"] > 0.1 and 0 <= e["sop_accuracy"] <= 1 for e in train)
    assert any("eval_sop_loss" in e and "eval_sop_accuracy" in e for e in history)
    model = KeptForPreTraining.from_pretrained(str(pair_run / "model"))
    assert model.config.use_sop and model.sop_classifier is not None
    assert not torch.allclose(model.sop_classifier.weight, initial["weight"])  # the SOP loss reached the head


def test_pretrain_refuses_sop_without_pairs(tmp_path: Path) -> None:
    from kept.pretrain import pretrain_run

    run_dir = make_tiny_run(tmp_path / "run", steps=2)
    encode_run(run_dir, load_run_config(run_dir))  # no sentence pairs
    config_before = (run_dir / "config.yaml").read_text()
    with pytest.raises(KeptError, match="no sentence pairs") as info:
        pretrain_run(run_dir, load_run_config(run_dir, SOP), progress=False)
    message = str(info.value)
    assert "\n" not in message and "encode.sentence_pairs: true" in message and "encoded" in message
    assert (run_dir / "config.yaml").read_text() == config_before
    assert not list((run_dir / "checkpoints").glob("checkpoint-*"))
    with pytest.raises(KeptError, match="encode.sentence_pairs"):  # pairs are never packed
        load_run_config(run_dir, PAIRS + ["encode.packing=true"])


def test_compare_sop_axis_and_set(tmp_path: Path) -> None:
    from kept.compare import load_compare_config

    path = tmp_path / "compare.yaml"
    path.write_text(
        "name: sop\nruns_dir: runs\ntrain: {max_steps: 2}\n"
        "compare: {strategies: [token], fusion: [false], seeds: [0], sop: [false, true]}\n"
    )
    plan = load_compare_config(path)
    assert list(plan.runs) == ["token", "token+sop"]
    assert plan.base.encode.sentence_pairs  # the shared data: the same pairs for both variants
    ((_, off),) = plan.runs["token"]
    ((_, on),) = plan.runs["token+sop"]
    assert off.model.overrides["use_sop"] is False and on.model.overrides["use_sop"] is True
    assert off.encode.sentence_pairs and on.encode.sentence_pairs
    # without the axis, --set turns SOP on for every variant
    path.write_text("name: sop\nruns_dir: runs\ncompare: {strategies: [token, entity], fusion: [false]}\n")
    plan = load_compare_config(path, PAIRS + SOP)
    assert list(plan.runs) == ["token", "entity"]
    assert all(c.model.overrides["use_sop"] and c.encode.sentence_pairs for runs in plan.runs.values() for _, c in runs)


def test_kept_encode_sentence_pairs_flag(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kept.cli import app

    run_dir = make_tiny_run(tmp_path / "run", n_docs=12)
    result = CliRunner().invoke(app, ["encode", str(run_dir), "--sentence-pairs"])
    assert result.exit_code == 0, result.output
    assert load_run_config(run_dir).encode.sentence_pairs  # saved in config.yaml with the run
    assert "sentence_order_label" in load_encoded(run_dir, "train").column_names
