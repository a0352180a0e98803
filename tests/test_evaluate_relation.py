"""Relation classification pieces: marker encoding with entity ids, the split, fine-tune + scoring."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from eval_fixtures import tiny_tokenizer
from kept.evaluate.relation import MARKERS, add_markers, encode_examples, finetune_and_score, split_examples
from kept.fewrel import FewRelEntity, FewRelExample, relation_examples


def example(tokens: str, head: tuple[int, ...], tail: tuple[int, ...], relation: str, ids=("Q1", "Q2")) -> FewRelExample:
    words = tuple(tokens.split())
    return FewRelExample(words, FewRelEntity(" ".join(words[i] for i in head), ids[0], (head,)),
                         FewRelEntity(" ".join(words[i] for i in tail), ids[1], (tail,)), relation)


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

    def forward(self, input_ids, attention_mask=None, head_start=None, tail_start=None, entity_ids=None, **kwargs):
        self.seen.append(entity_ids)
        logits = torch.zeros(input_ids.shape[0], 2) + self.bias * 0
        if entity_ids is not None:
            heads = entity_ids[torch.arange(input_ids.shape[0]), head_start + 1]
            logits[torch.arange(input_ids.shape[0]), (heads % 2).clamp(min=0)] = 5.0
        return SequenceClassifierOutput(logits=logits)


def test_finetune_scores_with_and_without_entity_input(tokenizer) -> None:
    examples = [example(f"x{i} is y{i} .", (0,), (2,), "even" if i % 2 == 0 else "odd", ids=(f"Q{i}", "Q99"))
                for i in range(20)]
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
