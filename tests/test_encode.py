"""`kept encode`: tokenizer training/loading, document-level split, encoded columns, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kept.config import load_run_config
from kept.encode import encode_run, load_encoded, split_documents
from kept.errors import KeptError
from kept.tiny import make_tiny_run


@pytest.fixture(scope="module")
def encoded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_tiny_run(tmp_path_factory.mktemp("enc") / "run")
    encode_run(run_dir, load_run_config(run_dir))
    return run_dir


def test_encode_writes_tokenizer_and_both_splits(encoded_run: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoded_run / "tokenizer"))
    assert tokenizer.is_fast and tokenizer.mask_token == "[MASK]"
    assert tokenizer.tokenize("Paris IS") == ["paris", "is"]  # lowercase WordPiece
    train, validation = load_encoded(encoded_run, "train"), load_encoded(encoded_run, "validation")
    for split in (train, validation):
        assert {"input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "doc_id"} <= set(
            split.column_names
        )
        for row in split:
            assert len(row["input_ids"]) <= 32
            assert len(row["unit_ids"]) == len(row["input_ids"]) == len(row["entity_ids"])
            assert row["input_ids"][0] == tokenizer.cls_token_id
    # gold spans became entity units with KG ids on their first token
    assert any(2 in row for row in train["unit_kind"])
    assert any(e >= 0 for row in train["entity_ids"] for e in row)
    # document-level split: no document in both
    assert not set(train["doc_id"]) & set(validation["doc_id"])
    assert len(set(validation["doc_id"])) == round(0.2 * 24)
    assert not list(encoded_run.glob("*.tmp-*")) and not list(encoded_run.glob("*.old-*"))


def test_encode_is_deterministic_given_the_tokenizer(encoded_run: Path, tmp_path: Path) -> None:
    # (WordPiece *training* in tokenizers is not deterministic on frequency ties: huggingface/tokenizers#1794;
    # a run trains its tokenizer once and keeps it in RUN_DIR/tokenizer)
    copy = tmp_path / "copy"
    shutil.copytree(encoded_run, copy)
    encode_run(copy, load_run_config(copy, [f"tokenizer.base_model={encoded_run / 'tokenizer'}"]))
    for split in ("train", "validation"):
        assert list(load_encoded(copy, split)["input_ids"]) == list(load_encoded(encoded_run, split)["input_ids"])


def test_split_documents_is_seeded_and_document_level() -> None:
    ids = [f"d{i}" for i in range(20)] + ["d1", "d2"]
    train, val = split_documents(ids, 0.25, seed=3)
    assert train | val == {f"d{i}" for i in range(20)} and not train & val and len(val) == 5
    assert split_documents(ids, 0.25, seed=3) == (train, val)
    assert split_documents(ids, 0.25, seed=4) != (train, val)
    assert len(split_documents(["a", "b"], 0.01, 0)[1]) == 1  # at least one validation document
    assert split_documents(["a"], 0.5, 0) == ({"a"}, set())
    assert split_documents(ids, 0.0, 0)[1] == set()


def test_packing_fills_sequences(encoded_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "packed"
    shutil.copytree(encoded_run, copy)
    config = load_run_config(copy, ["encode.packing=true"])
    result = encode_run(copy, config)
    assert result.stats["train"]["sequences"] < load_encoded(encoded_run, "train").num_rows
    unpacked = load_encoded(encoded_run, "train")
    assert result.stats["train"]["mean_length"] > sum(map(len, unpacked["input_ids"])) / unpacked.num_rows
    assert all(len(row) <= 32 for row in load_encoded(copy, "train")["input_ids"])


def test_base_model_tokenizer_from_local_dir(encoded_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "based"
    shutil.copytree(encoded_run, copy)
    config = load_run_config(copy, [f"tokenizer.base_model={encoded_run / 'tokenizer'}"])
    assert encode_run(copy, config).tokenizer_source.startswith("base_model:")


def test_missing_inputs_are_clear_errors(encoded_run: Path, tmp_path: Path) -> None:
    with pytest.raises(KeptError, match="annotated corpus"):
        encode_run(tmp_path / "empty", load_run_config(tmp_path / "empty"))
    copy = tmp_path / "bad"
    shutil.copytree(encoded_run, copy)
    with pytest.raises(KeptError, match="does not exist"):
        encode_run(copy, load_run_config(copy, [f"tokenizer.base_model={tmp_path / 'no-such-model'}"]))
    with pytest.raises(KeptError, match="encoded validation"):
        load_encoded(tmp_path / "empty", "validation")
