"""WKLM replaced-entity detection: the swap (span offsets, entity ids, unit columns), the same-type draw, the
collator's labels, the head, and a tiny run from YAML with red_loss/red_accuracy in the history and compare."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from kept.config import load_run_config
from kept.encode import encode_run
from kept.tiny import make_tiny_run
from masking.replaced_entity import EntityPool, ReplacedEntityCollator, linked_mentions, swap_mentions

# [CLS] w  M1 M1  w  M2  [SEP]   (M1: entity 3 on its first piece; M2: entity 5, a phrase-free one-piece mention)
FEATURE = {
    "input_ids": [1, 20, 30, 31, 21, 40, 2],
    "attention_mask": [1] * 7,
    "unit_ids": [-1, 0, 1, 1, 2, 3, -1],
    "unit_kind": [0, 0, 2, 2, 0, 2, 0],
    "entity_ids": [-1, -1, 3, -1, -1, 5, -1],
    "word_ids": [-1, 0, 1, 2, 3, 4, -1],
    "doc_id": "d",
}


def _pool(types: list[int] | None = None) -> EntityPool:
    tokens = [[50], [51, 52, 53], [54], [30, 31], [55], [40], [56, 57]]
    return EntityPool(tokens=tokens, types=np.asarray(types or [-1] * len(tokens)), source="test")


def test_linked_mentions_are_entity_units_with_an_id() -> None:
    assert linked_mentions(FEATURE) == [(2, 4, 3), (5, 6, 5)]


def test_swap_rewrites_tokens_ids_and_offsets() -> None:
    new, spans = swap_mentions(FEATURE, [(5, 6, 6), (2, 4, 1)], _pool())
    # M1 (2 pieces) -> entity 1 (3 pieces); M2 (1 piece) -> entity 6 (2 pieces)
    assert new["input_ids"] == [1, 20, 51, 52, 53, 21, 56, 57, 2]
    assert spans == [(2, 5), (6, 8)]
    assert new["entity_ids"] == [-1, -1, 1, -1, -1, -1, 6, -1, -1]  # the new entity's id, where the old one stood
    assert new["unit_ids"] == [-1, 0, 1, 1, 1, 2, 3, 3, -1] and new["unit_kind"] == [0, 0, 2, 2, 2, 0, 2, 2, 0]
    assert new["attention_mask"] == [1] * 9 and new["word_ids"][2:5] == [1, 1, 1] and new["doc_id"] == "d"
    assert swap_mentions(FEATURE, [], _pool())[0] == FEATURE


def test_draw_keeps_the_type_and_falls_back_to_any() -> None:
    pool = _pool(types=[0, 1, 1, 1, -1, 2, 0])
    assert {pool.draw(1, u) for u in np.linspace(0, 0.99, 20)} == {2, 3}  # same type, never itself
    assert pool.draw(5, 0.5) not in (5, -1)  # type 2 has no other member: any entity
    assert {pool.draw(4, u) for u in np.linspace(0, 0.99, 50)} == {0, 1, 2, 3, 5, 6}


def test_collator_labels_replaced_mentions_and_keeps_them_unmasked() -> None:
    from transformers import BertTokenizerFast

    from masking import KnowledgeMaskingCollator

    vocab = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"] + [f"t{i}" for i in range(60)]
    path = Path(__file__).parent / "_red_vocab.txt"
    try:
        path.write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(path))
    finally:
        path.unlink(missing_ok=True)
    inner = KnowledgeMaskingCollator(tokenizer, strategy="entity", mlm_probability=0.5, dea=True, seed=0)
    collator = ReplacedEntityCollator(inner, _pool(), probability=1.0, max_length=32)
    batch = collator([FEATURE, FEATURE])
    # probability 1: every mention swapped (label 1), unless the MLM chose it (no label, see the leak test)
    assert set(batch["mention_labels"].flatten().tolist()) <= {1, -100} and (batch["mention_labels"] == 1).any()
    for b in range(2):
        (s1, e1), (s2, e2) = batch["mention_spans"][b].tolist()
        assert s1 == 2 and s2 == e1 + 1  # the word between the mentions keeps its place after the first swap
        for s, e, old in ((s1, e1, 3), (s2, e2, 5)):
            new = int(batch["entity_labels"][b, s])  # dEA's target at the mention: the new entity
            assert new != old and batch["input_ids"][b, s:e].tolist() == _pool().tokens[new]
            assert (batch["labels"][b, s:e] == -100).all()  # no MLM target on a swapped mention
    kept = ReplacedEntityCollator(inner, _pool(), probability=0.0, max_length=7)([FEATURE])
    assert set(kept["mention_labels"].flatten().tolist()) <= {0, -100}
    assert kept["input_ids"].shape[1] == 7


def test_a_hidden_entity_id_does_not_tell_which_mentions_were_swapped() -> None:
    """With masking.dea_hide_masked a masked mention loses its entity id; swapped mentions restored after the
    MLM must not lose it more often than kept ones among the mentions that carry a RED label (a leak: the
    review measured 57 % vs 16 % missing before the fix)."""
    from transformers import BertTokenizerFast

    from masking import KnowledgeMaskingCollator

    vocab = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"] + [f"t{i}" for i in range(60)]
    path = Path(__file__).parent / "_red_vocab_leak.txt"
    try:
        path.write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(path))
    finally:
        path.unlink(missing_ok=True)
    inner = KnowledgeMaskingCollator(
        tokenizer, strategy="entity", mlm_probability=0.15, dea=True, dea_hide_masked=True, seed=0
    )
    collator = ReplacedEntityCollator(inner, _pool(), probability=0.5, max_length=32)
    missing = {0: [0, 0], 1: [0, 0]}  # label -> [mentions without an entity id, labelled mentions]
    for _ in range(300):
        batch = collator([FEATURE, FEATURE])
        for b in range(2):
            for (s, _e), label in zip(batch["mention_spans"][b].tolist(), batch["mention_labels"][b].tolist()):
                if label in (0, 1):
                    missing[label][0] += int(batch["entity_ids"][b, s] < 0)
                    missing[label][1] += 1
    rates = {label: hidden / max(total, 1) for label, (hidden, total) in missing.items()}
    assert missing[0][1] > 50 and missing[1][1] > 50, missing
    assert abs(rates[1] - rates[0]) < 0.08, rates


def test_head_loss_and_accuracy() -> None:
    from fusion.wklm import KeptReplacedEntityHead, pool_mentions, replaced_entity_loss

    sequence = torch.arange(2 * 5 * 4, dtype=torch.float).reshape(2, 5, 4)
    spans = torch.tensor([[[1, 3], [0, 0]], [[2, 5], [4, 5]]])
    pooled = pool_mentions(sequence, spans)
    assert torch.allclose(pooled[0, 0], sequence[0, 1:3].mean(0)) and torch.allclose(pooled[0, 1], torch.zeros(4))
    head = KeptReplacedEntityHead(4)
    loss, accuracy, logits = replaced_entity_loss(head, sequence, spans, torch.tensor([[1, -100], [0, 1]]))
    assert logits.shape == (2, 2) and loss > 0 and 0 <= accuracy <= 1
    none, acc, _ = replaced_entity_loss(head, sequence, spans, torch.full((2, 2), -100))
    assert float(none.detach()) == 0 and acc is None


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_red_run_from_yaml(tmp_path: Path, objective: str, caplog: pytest.LogCaptureFixture) -> None:
    from fusion import KeptForPreTraining
    from kept.compare import compare_runs
    from kept.evaluate import evaluate_run_dir
    from kept.pretrain import pretrain_run

    run_dir = make_tiny_run(tmp_path / "run", n_docs=40, steps=3, save_steps=3)
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(
        text.replace(
            "masking: {strategy: entity, seed: 0}",
            "masking: {strategy: entity, seed: 0, replaced_entity_probability: 0.5}",
        ).replace("  fusion: true\n", f"  fusion: true\n  objective: {objective}\n  red_weight: 2.0\n")
    )
    config = load_run_config(run_dir)
    assert config.masking.replaced_entity_probability == 0.5 and config.model.red_weight == 2.0
    encode_run(run_dir, config)
    caplog.set_level(logging.INFO, logger="kept")
    pretrain_run(run_dir, config, progress=False)
    said = [m for m in caplog.messages if m.startswith("replaced-entity detection: 50% of the linked mentions")]
    assert len(said) == 1  # one pool and one line for the training and the evaluation collator
    history = json.loads((run_dir / "logs" / "train_history.json").read_text())["log_history"]
    train = [e for e in history if "loss" in e]
    assert len(train) == 3 and all(e["red_loss"] > 0 and 0 <= e["red_accuracy"] <= 1 for e in train)
    assert any("eval_red_accuracy" in e for e in history)
    model = KeptForPreTraining.from_pretrained(str(run_dir / "model"))
    assert model.red_head is not None and model.config.red_weight == 2.0
    result = evaluate_run_dir(
        run_dir,
        {
            "relation": {"enabled": False},
            "probe": {"enabled": False},
            "cloze": {"enabled": False},
            "batch_size": 8,
            "num_examples": 2,
        },
    )
    assert "red_accuracy" in result["metrics"]["objectives"]
    assert "objectives.red_accuracy" in compare_runs({objective: [run_dir]}).to_markdown()
