"""Each metric on a case with a known answer (stub models whose logits the test controls)."""

from __future__ import annotations

import math

import pytest
import torch
from eval_fixtures import SENTENCES, ScoreMLM, StubMLM, encode_rows, tiny_tokenizer

from kept.evaluate.cloze import evaluate_cloze, find_mentions, select_items
from kept.evaluate.common import macro_f1, rank_metrics, ranks_from_scores
from kept.evaluate.mlm import evaluate_mlm
from kept.evaluate.probe import evaluate_probe
from kept.evaluate.probe_facts import ProbeFacts, facts_from_tables, relation_templates, relation_words


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def rows(tokenizer):
    return encode_rows(tokenizer, SENTENCES)


# ------------------------------------------------------------------ ranking arithmetic


def test_realistic_ranks_count_ties_half() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.7, 0.7], [0.3, 0.3, 0.3]])
    ranks = ranks_from_scores(scores, torch.tensor([0, 1, 0]))
    assert ranks.tolist() == [1.0, 1.5, 2.0]


def test_rank_metrics_by_hand() -> None:
    result = rank_metrics([1, 2, 4, 10, 11])
    assert result["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 10 + 1 / 11) / 5)
    assert result["hits_at_1"] == pytest.approx(1 / 5)
    assert result["hits_at_3"] == pytest.approx(2 / 5)
    assert result["hits_at_10"] == pytest.approx(4 / 5)
    assert result["count"] == 5
    assert math.isnan(rank_metrics([])["mrr"])


def test_macro_f1_by_hand() -> None:
    # class 0: tp 2, fp 1, fn 0 -> 0.8; class 1: tp 1, fp 0, fn 1 -> 2/3; class 2: absent -> skipped
    assert macro_f1([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx((0.8 + 2 / 3) / 2)
    assert macro_f1([0, 1], [0, 1], num_labels=3) == pytest.approx(1.0)
    assert macro_f1([1, 1], [0, 0]) == 0.0


def _by_hand_macro_f1(predictions: list[int], labels: list[int], num_labels: int | None = None) -> float:
    """The definition macro_f1 had before it called scikit-learn: per-class 2tp / (2tp + fp + fn),
    classes absent from both gold and predictions left out."""
    classes = sorted(set(predictions) | set(labels)) if num_labels is None else range(num_labels)
    scores = []
    for c in classes:
        tp = sum(p == c and g == c for p, g in zip(predictions, labels))
        fp = sum(p == c and g != c for p, g in zip(predictions, labels))
        fn = sum(p != c and g == c for p, g in zip(predictions, labels))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else math.nan


def test_macro_f1_from_scikit_learn_equals_the_by_hand_definition() -> None:
    import random

    rng = random.Random(0)
    for _ in range(300):
        n, k = rng.randint(1, 30), rng.randint(1, 8)
        gold, pred = [rng.randrange(k) for _ in range(n)], [rng.randrange(k) for _ in range(n)]
        num_labels = rng.choice([None, k, k + 3])  # k + 3: classes absent from both are left out
        # the same figure up to float summation order (numpy's mean vs Python's sum)
        assert macro_f1(pred, gold, num_labels) == pytest.approx(
            _by_hand_macro_f1(pred, gold, num_labels), rel=1e-12, abs=1e-15
        )
    assert math.isnan(macro_f1([], []))
    assert math.isnan(macro_f1([0], [0], num_labels=0))


# ------------------------------------------------------------------ entity cloze


def _oracle(rows, mask_id: int, wrong_after_first: bool = False):
    """Finds the row the masked input came from and predicts its tokens (optionally wrong after the first mask)."""

    def predict(ids: list[int]) -> list[int]:
        for row in rows:
            original = row["input_ids"]
            n = len(original)
            if (
                len(ids) >= n
                and all(a == b or b == mask_id for a, b in zip(original, ids))
                and all(t == 0 for t in ids[n:])
            ):
                out = list(original) + [0] * (len(ids) - n)
                if wrong_after_first:
                    masked = [i for i, t in enumerate(ids) if t == mask_id]
                    for i in masked[1:]:
                        out[i] = mask_id  # never a gold piece
                return out
        raise AssertionError("stub got an input that matches no row")

    return predict


def test_find_mentions_uses_units_and_first_piece_entity(rows) -> None:
    mentions = find_mentions(rows)
    assert mentions, "the tiny corpus has linked mentions"
    for item in mentions:
        row = rows[item.row]
        assert row["entity_ids"][item.positions[0]] == item.entity_id
        assert len({row["unit_ids"][p] for p in item.positions}) == 1
        assert all(row["unit_kind"][p] == 2 for p in item.positions)
    assert any(len(item.positions) > 1 for item in mentions), "some mentions span several pieces"
    assert select_items(mentions, 3, seed=1) == select_items(mentions, 3, seed=1)
    assert len(select_items(mentions, 3, seed=1)) == 3


def test_cloze_oracle_gets_exact_match_one(tokenizer, rows) -> None:
    model = StubMLM(len(tokenizer), _oracle(rows, tokenizer.mask_token_id))
    result = evaluate_cloze(model, tokenizer, rows, context_tokens=64, num_examples=3)
    assert result["num_mentions"] == len(find_mentions(rows)) > 0
    assert result["accuracy"] == 1.0 and result["piece_accuracy"] == 1.0
    assert len(result["examples"]) == 3 and all(e["correct"] for e in result["examples"])
    assert "[MASK]" in result["examples"][0]["context"]
    assert result["examples"][0]["gold"] == result["examples"][0]["prediction"]


def test_cloze_needs_every_piece(tokenizer, rows) -> None:
    multi = [m for m in find_mentions(rows) if len(m.positions) > 1]
    model = StubMLM(len(tokenizer), _oracle(rows, tokenizer.mask_token_id, wrong_after_first=True))
    result = evaluate_cloze(model, tokenizer, rows, context_tokens=64)
    singles = result["num_mentions"] - len(multi)
    assert result["accuracy"] == pytest.approx(singles / result["num_mentions"])
    pieces = sum(len(m.positions) for m in find_mentions(rows))
    assert result["piece_accuracy"] == pytest.approx((singles + len(multi)) / pieces)


def test_cloze_items_are_per_mention_outcomes_with_stable_ids(tokenizer, rows) -> None:
    mentions = find_mentions(rows)
    model = StubMLM(len(tokenizer), _oracle(rows, tokenizer.mask_token_id, wrong_after_first=True))
    result = evaluate_cloze(model, tokenizer, rows, context_tokens=64)
    items = result["items"]
    assert items["ids"] == [f"{m.doc_id}:{m.row}:{m.positions[0]}" for m in mentions]
    assert len(set(items["ids"])) == len(mentions) == result["num_mentions"]
    assert items["correct"] == [int(len(m.positions) == 1) for m in mentions]  # multi-piece mentions fail
    assert sum(items["correct"]) / len(items["correct"]) == pytest.approx(result["accuracy"])
    fewer = evaluate_cloze(model, tokenizer, rows, context_tokens=64, max_mentions=4)
    assert set(fewer["items"]["ids"]) < set(items["ids"])  # the same ids for the same mentions


def test_cloze_wrong_model_gets_zero_and_hides_the_masked_entity(tokenizer, rows) -> None:
    model = StubMLM(len(tokenizer), lambda ids: [tokenizer.pad_token_id] * len(ids), takes_entities=True)
    result = evaluate_cloze(model, tokenizer, rows, max_mentions=5, context_tokens=6, use_entities=True)
    assert result["accuracy"] == 0.0 and result["num_mentions"] == 5
    assert model.seen_entity_ids, "a fusion model gets the context's entity alignments"
    # windows of 6 tokens of context on each side; the masked mention itself carries no entity,
    # while linked context tokens keep theirs
    context_entities = 0
    for input_ids, entity_ids in model.seen_entity_ids:
        assert input_ids.shape[1] <= 8 + 6 + 6 + 2
        assert bool((entity_ids[input_ids == tokenizer.mask_token_id] == -1).all())
        context_entities += int((entity_ids >= 0).sum())
    assert context_entities > 0


# ------------------------------------------------------------------ KG probe


def _facts(tokenizer, extra_triples=()):
    labels = ["Paris", "Berlin", "Rome", "France", "Germany", "Italy"]
    for label in labels:
        assert len(tokenizer.encode(label, add_special_tokens=False)) == 1, label
    triples = [(0, 0, 3), (1, 0, 4), (2, 0, 5), *extra_triples]
    return ProbeFacts(labels, ["capital of"], ["capital_of"], triples, [(0, 0, 3), (1, 0, 4), (2, 0, 5)])


def _scores(tokenizer, values: dict[str, float]) -> torch.Tensor:
    scores = torch.full((len(tokenizer),), -5.0)
    for word, value in values.items():
        scores[tokenizer.convert_tokens_to_ids(word.lower())] = value
    return scores


def test_probe_mrr_by_hand(tokenizer) -> None:
    model = ScoreMLM(_scores(tokenizer, {"France": 3.0, "Germany": 2.0, "Italy": 1.0}))
    result = evaluate_probe(model, tokenizer, _facts(tokenizer), num_examples=3)
    # gold ranks: France 1, Germany 2, Italy 3
    assert result["num_facts"] == 3
    assert result["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert result["hits_at_1"] == pytest.approx(1 / 3)
    assert result["hits_at_3"] == pytest.approx(1.0)
    assert result["per_relation"]["capital_of"]["count"] == 3
    assert [e["rank"] for e in result["examples"]] == [1.0, 2.0, 3.0]
    assert all(e["prediction"] == "France" for e in result["examples"])
    assert result["examples"][0]["prompt"].startswith("Paris capital of [MASK]")


def test_probe_items_hold_each_facts_reciprocal_rank(tokenizer) -> None:
    model = ScoreMLM(_scores(tokenizer, {"France": 3.0, "Germany": 2.0, "Italy": 1.0}))
    result = evaluate_probe(model, tokenizer, _facts(tokenizer))
    assert result["items"] == {
        "ids": ["0|0|3", "1|0|4", "2|0|5"],
        "reciprocal_rank": [1.0, 1 / 2, 1 / 3],
        "hits_at_1": [1, 0, 0],
    }


def test_probe_filtered_drops_other_true_tails(tokenizer) -> None:
    model = ScoreMLM(_scores(tokenizer, {"France": 1.0, "Germany": 3.0, "Italy": 2.0}))
    facts = _facts(tokenizer, extra_triples=[(0, 0, 4)])  # Paris is (also) "capital of" Germany
    filtered = evaluate_probe(model, tokenizer, facts, filtered=True)
    raw = evaluate_probe(model, tokenizer, facts, filtered=False)
    # fact (Paris, France): filtered candidates {France, Italy} -> rank 2; raw {France, Germany, Italy} -> 3
    # (Berlin, Germany) rank 1; (Rome, Italy) rank 2 in both
    assert filtered["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert raw["mrr"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)


def test_probe_ties_rank_half_and_single_candidate_facts_are_skipped(tokenizer) -> None:
    model = ScoreMLM(torch.zeros(len(tokenizer)))
    result = evaluate_probe(model, tokenizer, _facts(tokenizer))
    assert result["mrr"] == pytest.approx(1 / 2)  # three tied candidates: rank 1 + 2/2 = 2
    lonely = ProbeFacts(["Paris", "France"], ["capital of"], ["capital_of"], [(0, 0, 1)], [(0, 0, 1)])
    skipped = evaluate_probe(model, tokenizer, lonely)
    assert skipped["num_facts"] == 0 and skipped["num_skipped"] == 1 and math.isnan(skipped["mrr"])


def test_probe_scores_multi_piece_candidates_with_one_mask_per_piece(tokenizer) -> None:
    seen = []

    class Recorder(ScoreMLM):
        def forward(self, input_ids, attention_mask=None, **kwargs):
            seen.extend(input_ids.tolist())
            return super().forward(input_ids, attention_mask)

    labels = ["Paris", "France", "Marie Curie", "Warsaw"]
    pieces = tokenizer.encode("Marie Curie", add_special_tokens=False)
    assert len(pieces) == 2
    facts = ProbeFacts(labels, ["born in"], ["bornIn"], [(0, 0, 1), (2, 0, 3), (0, 0, 2)], [(3, 0, 2)])
    result = evaluate_probe(Recorder(torch.zeros(len(tokenizer))), tokenizer, facts, filtered=False)
    assert result["num_facts"] == 1
    mask_counts = sorted(row.count(tokenizer.mask_token_id) for row in seen)
    assert mask_counts == [1, 2]  # one forward per candidate length


def test_relation_words() -> None:
    assert relation_words("bornIn") == "born in"
    assert relation_words("capital_of", "capital of") == "capital of"
    assert relation_words("P17", "country") == "country"
    assert relation_words("/people/person/place_of_birth") == "place of birth"


def test_facts_from_tables_holds_out_a_seeded_share() -> None:
    entities = [{"id": i, "name": f"e{i}", "label": f"E {i}"} for i in range(6)]
    relations = [{"id": 0, "name": "r", "label": ""}]
    triples = [(f"e{i}", "r", f"e{(i + 1) % 6}") for i in range(6)] + [("e0", "unknown", "e1")]
    a = facts_from_tables(entities, relations, triples, None, fraction=0.5, seed=3)
    b = facts_from_tables(entities, relations, triples, None, fraction=0.5, seed=3)
    assert a.held_out == b.held_out and len(a.held_out) == 3 and len(a.triples) == 6
    split = facts_from_tables(entities, relations, triples, [("e2", "r", "e5")], fraction=0.5, seed=3)
    assert split.held_out == [(2, 0, 5)] and (2, 0, 5) in split.triples


# ------------------------------------------------------------------ MLM


class FixedCollator:
    """Masks token 1 of every row (a known, fixed choice)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features):
        from kept.evaluate.common import pad

        ids = pad([f["input_ids"] for f in features], self.tokenizer.pad_token_id)
        labels = torch.full_like(ids, -100)
        labels[:, 1] = ids[:, 1]
        masked = ids.clone()
        masked[:, 1] = self.tokenizer.mask_token_id
        return {"input_ids": masked, "attention_mask": (ids != self.tokenizer.pad_token_id).long(), "labels": labels}


def test_mlm_oracle_and_wrong_model(tokenizer, rows) -> None:
    oracle = StubMLM(len(tokenizer), _oracle(rows, tokenizer.mask_token_id))
    good = evaluate_mlm(oracle, tokenizer, rows, collator=FixedCollator(tokenizer), batch_size=3)
    assert good["accuracy"] == 1.0 and good["num_predicted"] == len(rows)
    assert good["loss"] == pytest.approx(0.0, abs=1e-6) and good["perplexity"] == pytest.approx(1.0)
    kinds = [row["unit_kind"][1] for row in rows]  # the masked position of every row
    assert good["predicted_by_kind"] == {"word": kinds.count(0), "phrase": kinds.count(1), "entity": kinds.count(2)}
    assert good["accuracy_by_kind"]["entity"] == 1.0 and good["accuracy_by_kind"]["word"] == 1.0
    assert math.isnan(good["accuracy_by_kind"]["phrase"])
    wrong = StubMLM(len(tokenizer), lambda ids: [tokenizer.pad_token_id] * len(ids))
    bad = evaluate_mlm(wrong, tokenizer, rows, collator=FixedCollator(tokenizer), batch_size=4)
    assert bad["accuracy"] == 0.0 and bad["accuracy_by_kind"]["entity"] == 0.0
    # CE = log(e^30 + V - 1) - 0 when the gold logit is 0 and one wrong logit is 30
    assert bad["loss"] == pytest.approx(math.log(math.exp(30) + len(tokenizer) - 1), rel=1e-5)


def test_masked_logits_projects_only_selected_positions_and_matches_full_logits(tokenizer, rows) -> None:
    from fusion import KeptConfig, KeptForMaskedLM
    from kept.evaluate.common import forward_logits, masked_logits, pad

    torch.manual_seed(0)
    config = KeptConfig.from_preset(
        "tiny",
        vocab_size=len(tokenizer),
        entity_vocab_size=20,
        entity_dim=16,
        num_entity_attention_heads=2,
        freeze_entity_table=False,
    )
    model = KeptForMaskedLM(config).eval()
    input_ids = pad([r["input_ids"] for r in rows[:4]], 0)
    attention = pad([r["attention_mask"] for r in rows[:4]], 0)
    entity_ids = pad([r["entity_ids"] for r in rows[:4]], -1)
    select = torch.zeros_like(input_ids, dtype=torch.bool)
    select[0, 1:3] = True
    select[2, 4] = True
    select[3, 1] = True
    fast = masked_logits(model, input_ids, attention, select, entity_ids)
    full = forward_logits(model, input_ids, attention, entity_ids)[select]
    assert fast.shape == (4, len(tokenizer))
    assert torch.allclose(fast, full, atol=1e-5)
    stub = StubMLM(len(tokenizer), lambda ids: list(ids))  # no separate head: the fallback path
    assert masked_logits(stub, input_ids, attention, select).argmax(-1).tolist() == input_ids[select].tolist()


# ------------------------------------------------------------------ readable probe prompts


def test_opaque_relation_ids_never_reach_a_prompt() -> None:
    assert relation_words("P155") == "" and relation_words("P155", "P155") == ""
    assert relation_words("P155", "follows") == "follows"
    entities = [{"id": i, "name": f"Q{i}", "label": f"E {i}"} for i in range(4)]
    relations = [{"id": 0, "name": "P155", "label": "P155"}]
    triples = [("Q0", "P155", "Q1"), ("Q2", "P155", "Q3")]
    facts = facts_from_tables(entities, relations, triples, [("Q2", "P155", "Q3")], fraction=0.5, seed=0)
    assert facts.templates == ["[X] [Y] ."] and "p155" not in facts.templates[0].lower()
    assert "without a readable label" in facts.note and "P155" in facts.note
    labelled = facts_from_tables(
        entities, relations, triples, None, fraction=0.5, seed=0, relation_labels={"P155": "follows"}
    )
    assert labelled.templates == ["[X] follows [Y] ."] and "readable" not in labelled.note


def test_user_templates_place_head_and_answer_anywhere(tokenizer) -> None:
    seen: list[tuple[list[int], list[int]]] = []

    class Recorder(ScoreMLM):
        def forward(self, input_ids, attention_mask=None, entity_ids=None, **kwargs):
            seen.extend(zip(input_ids.tolist(), entity_ids.tolist()))
            return super().forward(input_ids, attention_mask)

    labels = ["Paris", "Berlin", "Rome", "France", "Germany", "Italy"]
    names = ["capital_of"]
    templates = relation_templates(names, ["capital of"], {"CAPITAL_OF": "the capital of [Y] is [X] ."})
    facts = ProbeFacts(
        labels, ["capital of"], names, [(0, 0, 3), (1, 0, 4), (2, 0, 5)], [(0, 0, 3)], templates=templates
    )
    result = evaluate_probe(Recorder(torch.zeros(len(tokenizer))), tokenizer, facts, use_entities=True, num_examples=1)
    assert result["examples"][0]["prompt"] == "the capital of [MASK] is Paris ."
    ids, entity_ids = seen[0]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:7] == ["[CLS]", "the", "capital", "of", "[MASK]", "is", "paris"]
    # the head mention carries the head entity; the answer's masks carry none
    assert entity_ids[6] == 0 and [e for i, e in enumerate(entity_ids) if i != 6] == [-1] * (len(ids) - 1)


def test_templates_without_both_slots_are_refused() -> None:
    from kept.errors import KeptError
    from kept.evaluate.config import EvalConfig

    with pytest.raises(KeptError, match=r"eval.probe.templates.P17.*\[X\].*\[Y\]"):
        relation_templates(["P17"], ["country"], {"P17": "[X] is in France ."})
    with pytest.raises(ValueError, match=r"must contain \[X\]"):
        EvalConfig.model_validate({"probe": {"templates": {"P17": "[Y] only"}}})


def test_relation_label_files(tmp_path) -> None:
    from kg import KGError
    from kg.sources import read_relation_labels

    tsv = tmp_path / "relations.tsv"
    tsv.write_text("P17\tcountry\nP131\tlocated in\n", encoding="utf-8")
    assert read_relation_labels(tsv) == {"P17": "country", "P131": "located in"}
    pid2name = tmp_path / "pid2name.json"
    pid2name.write_text('{"P17": ["country", "sovereign state"], "P31": "instance of"}', encoding="utf-8")
    assert read_relation_labels(pid2name) == {"P17": "country", "P31": "instance of"}
    bad = tmp_path / "bad.json"
    bad.write_text('{"P17": []}', encoding="utf-8")
    with pytest.raises(KGError, match="bad.json.*P17.*no label"):
        read_relation_labels(bad)
