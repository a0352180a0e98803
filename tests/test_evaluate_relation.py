"""Relation classification pieces: marker encoding with entity ids, the split, fine-tune + scoring."""

from __future__ import annotations

import math

import pytest
import torch
from eval_fixtures import tiny_tokenizer
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from kept.evaluate.relation import finetune_and_score
from kept.evaluate.relation_data import MARKERS, add_markers, encode_examples, split_examples
from kept.fewrel import FewRelEntity, FewRelExample, relation_examples


def example(
    tokens: str, head: tuple[int, ...], tail: tuple[int, ...], relation: str, ids=("Q1", "Q2")
) -> FewRelExample:
    words = tuple(tokens.split())
    return FewRelExample(
        words,
        FewRelEntity(" ".join(words[i] for i in head), ids[0], (head,)),
        FewRelEntity(" ".join(words[i] for i in tail), ids[1], (tail,)),
        relation,
    )


@pytest.fixture(scope="module")
def tokenizer():
    tok = tiny_tokenizer()
    assert add_markers(tok) == 4 and add_markers(tok) == 0
    return tok


def test_markers_and_entity_ids_sit_where_they_should(tokenizer) -> None:
    ex = example("Marie Curie was born in Warsaw .", (0, 1), (5,), "born_in")
    marked, names = relation_examples([ex])
    ids, heads, tails, entities = encode_examples(tokenizer, marked, 64, [(7, 9)])
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    assert tokens[heads[0]] == "[E1]" and tokens[tails[0]] == "[E2]"
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert "[/E1]" in tokens and tokens.index("[/E2]") > tails[0]
    assert entities[0][heads[0] + 1] == 7 and entities[0][tails[0] + 1] == 9
    assert sum(e >= 0 for e in entities[0]) == 2 and len(entities[0]) == len(ids[0])
    _, _, _, none = encode_examples(tokenizer, marked, 64)
    assert set(none[0]) == {-1}


def test_long_sentences_keep_both_markers(tokenizer) -> None:
    filler = " ".join(["the"] * 60)
    ex = example(f"{filler} Paris is the capital of France {filler}", (60,), (65,), "capital_of")
    marked, _ = relation_examples([ex])
    ids, heads, tails, entities = encode_examples(tokenizer, marked, 24, [(1, 2)])
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    assert len(ids[0]) == 24 and len(entities[0]) == 24
    assert tokens[heads[0]] == "[E1]" and tokens[tails[0]] == "[E2]"


def test_split_is_stratified_and_seeded() -> None:
    examples = [example(f"a{i} b c", (0,), (1,), f"r{i % 4}") for i in range(40)]
    train, test, relations = split_examples(examples, max_relations=3, max_per_relation=6, test_fraction=0.5, seed=1)
    assert len(relations) == 3 and len(test) == 9 and len(train) == 9
    assert sorted({e.relation for e in test}) == relations
    assert split_examples(examples, max_relations=3, max_per_relation=6, test_fraction=0.5, seed=1)[1] == test


class CheatingClassifier(nn.Module):
    """Predicts the relation from the head entity id it is given (so it needs the entity input)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(
        self, input_ids, attention_mask=None, head_start=None, tail_start=None, entity_ids=None, labels=None, **kwargs
    ):
        self.seen.append(entity_ids)
        logits = torch.zeros(input_ids.shape[0], 2) + self.bias * 0
        if entity_ids is not None:
            heads = entity_ids[torch.arange(input_ids.shape[0]), head_start + 1]
            logits[torch.arange(input_ids.shape[0]), (heads % 2).clamp(min=0)] = 5.0
        return SequenceClassifierOutput(loss=loss_of(logits, labels), logits=logits)


def loss_of(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    return None if labels is None else nn.functional.cross_entropy(logits, labels)


def test_finetune_scores_with_and_without_entity_input(tokenizer) -> None:
    examples = [
        example(f"x{i} is y{i} .", (0,), (2,), "even" if i % 2 == 0 else "odd", ids=(f"Q{i}", "Q99")) for i in range(20)
    ]
    train, test, relations = split_examples(examples, max_relations=2, max_per_relation=10, test_fraction=0.4, seed=0)
    index = {f"Q{i}": i for i in range(20)}  # KG id parity == relation
    model = CheatingClassifier()
    with_entities = finetune_and_score(model, tokenizer, train, test, relations, epochs=1, entity_index=index)
    assert with_entities["accuracy"] == 1.0 and with_entities["macro_f1"] == 1.0
    assert with_entities["entity_input"] and with_entities["linked_fraction"] == pytest.approx(0.5)
    assert model.seen[-1] is not None
    blind = finetune_and_score(CheatingClassifier(), tokenizer, train, test, relations, epochs=1)
    assert blind["accuracy"] == pytest.approx(0.5) and blind["chance"] == 0.5 and not blind["entity_input"]


def test_markers_are_single_special_tokens(tokenizer) -> None:
    for marker in MARKERS:
        assert tokenizer.convert_tokens_to_ids(marker) != tokenizer.unk_token_id
        assert tokenizer.tokenize(f"a {marker} b") == ["a", marker, "b"]


# ---------------------------------------------------------------- Trainer fine-tune, dev split, model loading


def labelled(count: int, relations: int = 2) -> list[FewRelExample]:
    """Sentences 'xI is yI .' with head id QI; relation rI%relations; each with a distinct source id."""
    return [
        FewRelExample(
            (f"x{i}", "is", f"y{i}", "."),
            FewRelEntity(f"x{i}", f"Q{i}", ((0,),)),
            FewRelEntity(f"y{i}", "Q999", ((2,),)),
            f"r{i % relations}",
            f"set.json:r{i % relations}[{i}]",
        )
        for i in range(count)
    ]


def test_dev_split_is_carved_from_train_stratified_seeded_and_disjoint_from_test() -> None:
    from kept.evaluate.relation_data import split_dev

    examples = labelled(60, relations=3)
    train, test, relations = split_examples(examples, max_relations=3, max_per_relation=20, test_fraction=0.3, seed=4)
    fit, dev = split_dev(train, 0.25, seed=4)
    ids = {name: {e.item_id for e in part} for name, part in (("fit", fit), ("dev", dev), ("test", test))}
    assert not ids["dev"] & ids["test"] and not ids["dev"] & ids["fit"] and not ids["fit"] & ids["test"]
    assert ids["fit"] | ids["dev"] == {e.item_id for e in train}
    assert sorted(e.relation for e in dev) == sorted(relations * 4)  # round(14 * 0.25) = 4 per relation
    assert split_dev(train, 0.25, seed=4) == (fit, dev)
    assert split_dev(train, 0.25, seed=5)[1] != dev
    assert split_dev(train, 0.0, seed=4) == (list(train), [])
    assert [e for e in train if e in fit] == fit  # training order kept


def test_item_ids_are_stable() -> None:
    first, second = labelled(2)
    assert first.item_id == "set.json:r0[0]" and first.item_id != second.item_id
    anonymous = example("Marie Curie was born in Warsaw .", (0, 1), (5,), "born_in")
    assert anonymous.item_id == example("Marie Curie was born in Warsaw .", (0, 1), (5,), "born_in").item_id
    assert anonymous.item_id.startswith("sha1:")
    assert anonymous.item_id != example("Marie Curie was born in Warsaw .", (0, 1), (4,), "born_in").item_id


class SpoilingClassifier(nn.Module):
    """Right (from the head entity id's parity) until it has seen ``spoil_after`` training batches, then
    wrong: only restoring the best dev epoch's weights (the ``batches`` buffer) keeps it right."""

    def __init__(self, spoil_after: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(2))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))
        self.spoil_after = spoil_after

    def forward(
        self, input_ids, attention_mask=None, head_start=None, tail_start=None, entity_ids=None, labels=None, **kwargs
    ):
        if self.training:
            self.batches += 1
        rows = torch.arange(input_ids.shape[0])
        parity = (entity_ids[rows, head_start + 1] % 2).clamp(min=0)  # [B] the relation
        if int(self.batches) > self.spoil_after:
            parity = 1 - parity
        logits = torch.zeros(input_ids.shape[0], 2) + self.bias * 0  # [B, 2]
        logits[rows, parity] = 5.0
        return SequenceClassifierOutput(loss=loss_of(logits, labels), logits=logits)


def test_the_best_dev_epoch_is_scored(tokenizer, tmp_path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    examples = labelled(40)
    train, test, relations = split_examples(examples, max_relations=2, max_per_relation=20, test_fraction=0.3, seed=0)
    index = {f"Q{i}": i for i in range(40)}
    common = dict(epochs=3, batch_size=64, learning_rate=1e-3, entity_index=index)  # one batch per epoch
    best = finetune_and_score(SpoilingClassifier(spoil_after=1), tokenizer, train, test, relations, **common)
    assert best["best_epoch"] == 1 and best["dev_macro_f1"] == 1.0
    assert [round(f1, 3) for f1 in best["dev_history"]] == [1.0, 0.0, 0.0]
    assert best["accuracy"] == 1.0 and best["num_dev"] == 4 and best["num_train"] + best["num_dev"] == len(train)
    last = finetune_and_score(
        SpoilingClassifier(spoil_after=1), tokenizer, train, test, relations, dev_fraction=0.0, **common
    )
    assert last["best_epoch"] is None and last["accuracy"] == 0.0 and last["num_dev"] == 0
    assert list(tmp_path.iterdir()) == [], "checkpoints are removed"


def test_trainer_fine_tunes_a_tiny_kept_model_with_aligned_items(tokenizer) -> None:
    from fusion import KeptConfig, KeptForRelationClassification

    examples = labelled(24)
    train, test, relations = split_examples(examples, max_relations=2, max_per_relation=12, test_fraction=0.25, seed=0)
    config = KeptConfig.from_preset("tiny", vocab_size=len(tokenizer), num_labels=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = KeptForRelationClassification(config)
    before = model.classifier.weight.detach().clone()
    result = finetune_and_score(model, tokenizer, train, test, relations, epochs=2, batch_size=8, seed=3)
    assert not torch.equal(before, model.classifier.weight.detach()), "the model was trained"
    assert result["size_class"] == "tiny" and result["learning_rate"] == 5e-4 and result["derived"] == ["learning_rate"]
    assert result["epochs"] == 2 and len(result["dev_history"]) == 2 and math.isfinite(result["final_train_loss"])
    items = result["items"]
    assert items["ids"] == [e.item_id for e in test] and len(items["gold"]) == len(items["pred"]) == len(test)
    assert items["gold"] == [relations.index(e.relation) for e in test]
    assert result["accuracy"] == pytest.approx(sum(p == g for p, g in zip(items["pred"], items["gold"])) / len(test))
    again = finetune_and_score(
        KeptForRelationClassification(config).eval(), tokenizer, train, test, relations, epochs=2, batch_size=8, seed=3
    )
    assert again["items"]["ids"] == items["ids"]


def test_learning_rate_and_epochs_follow_the_model_size() -> None:
    from types import SimpleNamespace

    from kept.evaluate.relation import finetune_defaults

    def sized(hidden: int) -> nn.Module:
        module = nn.Linear(1, 1)
        module.config = SimpleNamespace(hidden_size=hidden)
        return module

    assert (finetune_defaults(sized(64)).learning_rate, finetune_defaults(sized(64)).epochs) == (5e-4, 3)  # tiny
    assert (finetune_defaults(sized(384)).learning_rate, finetune_defaults(sized(384)).epochs) == (1e-4, 5)  # MiniLM
    assert (finetune_defaults(sized(768)).learning_rate, finetune_defaults(sized(768)).epochs) == (5e-5, 4)  # base
    assert finetune_defaults(nn.Linear(2, 2)).name == "tiny"  # no config: by parameter count


def test_a_plain_bert_directory_is_the_plain_encoder(minilm_dir) -> None:
    from transformers import AutoTokenizer, BertModel

    from kept.evaluate.relation_model import load_relation_model

    model, info = load_relation_model(minilm_dir, num_labels=3)
    assert info["init"] == "bert" and info["t_layers"] == 6 and info["k_layers"] == 0
    assert info["loaded_tensors"] == 101 and info["new_tensors"] == 2  # 5 embedding + 6 x 16 layer tensors
    assert info["new_tensor_names"] == ["classifier.bias", "classifier.weight"]
    assert len(model.kept.knowledge_encoder.layer) == 0
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    batch = tokenizer(["Marie Curie was born in Warsaw ."], return_tensors="pt")
    with torch.no_grad():
        ours = model.eval().kept(**batch).last_hidden_state
        theirs = BertModel.from_pretrained(minilm_dir).eval()(**batch).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_a_kept_directory_reports_what_it_loaded(tmp_path) -> None:
    from eval_fixtures import build_run_dir

    from kept.evaluate.relation_model import load_relation_model

    run_dir = build_run_dir(tmp_path)
    model, info = load_relation_model(run_dir / "model", num_labels=4)
    assert info["init"] == "kept" and info["k_layers"] == 2 and info["new_tensors"] == 2
    assert info["loaded_tensors"] == sum(1 for _ in model.named_parameters()) - 2
    (tmp_path / "roberta").mkdir()
    (tmp_path / "roberta" / "config.json").write_text('{"model_type": "roberta"}')
    from kept.errors import KeptError

    with pytest.raises(KeptError, match="'roberta'"):
        load_relation_model(tmp_path / "roberta", num_labels=2)


def test_evaluate_relation_from_minilm(minilm_dir, fewrel_dir) -> None:
    from kept.evaluate.relation import evaluate_relation

    result = evaluate_relation(
        minilm_dir,
        minilm_dir,
        fewrel_dir / "val_nyt.json",
        max_relations=2,
        max_per_relation=8,
        epochs=1,
        batch_size=8,
        max_length=48,
        entity_index={"Q1": 0},
    )
    assert result["init"] == "bert" and result["loaded_tensors"] == 101 and result["new_tensors"] == 2
    assert result["k_layers"] == 0 and not result["entity_input"] and "entity table" in result["note"]
    assert result["size_class"] == "small" and result["learning_rate"] == 1e-4
    assert len(result["items"]["ids"]) == result["num_test"] == len(result["items"]["pred"])
    assert all(i.startswith("val_nyt.json:") for i in result["items"]["ids"])
    assert 0.0 <= result["macro_f1"] <= 1.0
