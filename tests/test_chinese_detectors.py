"""Chinese detectors (pos_ner, pos_phrase, NPMI over jieba words), detector plug-ins, the gazetteer's
min_chars by script and the KG probe's templates per language, on real Chinese sentences."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from kg import AliasIndex, KnowledgeGraph
from masking import AnnotationConfig, MaskingError, build_detectors
from masking.annotator import annotate_with_stats
from masking.documents import documents_from_records

jieba = pytest.importorskip("jieba")

TEXTS = [
    "毛泽东于1949年10月1日在北京天安门城楼上宣布中华人民共和国成立。",
    "故宫位于北京市中心，是明清两代的皇家宫殿，旧称紫禁城。北京大学是一所著名的综合性大学。",
    "上海是中国最大的经济中心，简称沪。北京简称京，是中国的首都。",
    "天安门广场位于北京市中心。每天早上，很多游客来到天安门广场观看升旗仪式。",
]
ENTITIES = ["北京", "上海", "中华人民共和国", "毛泽东", "故宫", "天安门广场", "北京大学"]
ALIASES = [["北京市", "京"], ["沪"], ["中国"], [], ["紫禁城", "北京故宫"], [], []]
TRIPLES = [(0, 0, 2), (1, 1, 2), (4, 1, 0), (5, 1, 0), (6, 1, 0), (3, 2, 2)]
RELATIONS = ["首都", "位于", "领导人"]


@pytest.fixture(scope="module")
def graph() -> KnowledgeGraph:
    return KnowledgeGraph(ENTITIES, RELATIONS, TRIPLES, entity_aliases=ALIASES)


@pytest.fixture(scope="module")
def index(graph: KnowledgeGraph) -> AliasIndex:
    return AliasIndex.from_graph(graph)


def found(text: str, spans: list[dict]) -> set[tuple[str, str, int]]:
    """(covered text, label, entity id) of each span; offsets must slice the original text."""
    for span in spans:
        assert 0 <= span["start"] < span["end"] <= len(text)
    return {(text[s["start"] : s["end"]], s["label"], s["entity_id"]) for s in spans}


def test_pos_ner_labels_and_links_entities(index: AliasIndex) -> None:
    [detector] = build_detectors(AnnotationConfig(detectors=[{"type": "pos_ner"}]), index)
    first, second, third = (found(t, s) for t, s in zip(TEXTS, detector.detect(TEXTS[:3])))
    assert {("毛泽东", "PERSON", 3), ("北京", "GPE", 0), ("中华人民共和国", "GPE", 2)} <= first
    assert ("北京市", "GPE", 0) in second and ("北京大学", "ORG", 6) in second  # an alias links to its entity
    assert {("上海", "GPE", 1), ("中国", "GPE", 2)} <= third
    assert all(s["kind"] == "entity" and s["source"] == "pos_ner" for s in detector.detect(TEXTS[:1])[0])

    [people] = build_detectors(
        AnnotationConfig(
            detectors=[
                {
                    "type": "pos_ner",
                    "labels": ["PERSON"],
                    "link": False,
                    "tags": {"nr": "PERSON", "ns": "PLACE"},
                    "name": "zh_people",
                }
            ]
        ),
        index,
    )
    assert found(TEXTS[0], people.detect(TEXTS[:1])[0]) == {("毛泽东", "PERSON", -1)}
    assert people.detect(TEXTS[:1])[0][0]["source"] == "zh_people"


def test_pos_ner_joins_adjacent_words_only_into_a_kg_alias(index: AliasIndex) -> None:
    from masking import PosNERDetector

    text = "我们参观了北京故宫。"
    words = [("我们", "r"), ("参观", "v"), ("了", "ul"), ("北京", "ns"), ("故宫", "ns"), ("。", "x")]
    joined = PosNERDetector(alias_index=index, tagger=lambda _: words).detect([text])[0]
    assert found(text, joined) == {("北京故宫", "GPE", 4)}  # "北京故宫" is an alias of 故宫
    apart = PosNERDetector(alias_index=index, tagger=lambda _: words, merge=False).detect([text])[0]
    assert found(text, apart) == {("北京", "GPE", 0), ("故宫", "GPE", 4)}


def test_pos_phrase_patterns() -> None:
    [phrases] = build_detectors(AnnotationConfig(detectors=[{"type": "pos_phrase"}]))
    spans = phrases.detect(TEXTS[1:3])
    assert {"综合性大学", "北京市中心"} <= {TEXTS[1][s["start"] : s["end"]] for s in spans[0]}
    assert "经济中心" in {TEXTS[2][s["start"] : s["end"]] for s in spans[1]}
    assert all(s["kind"] == "phrase" and s["label"] == "NP" and s["end"] - s["start"] >= 2 for s in spans[0])
    # a narrower pattern: two common nouns only (北京市中心 is ns + n)
    [nouns] = build_detectors(AnnotationConfig(detectors=[{"type": "pos_phrase", "pattern": "<n><n>"}]))
    texts = {TEXTS[2][s["start"] : s["end"]] for s in nouns.detect(TEXTS[2:3])[0]}
    assert "经济中心" in texts and not any("北京" in t for t in texts)
    with pytest.raises(MaskingError, match="pattern"):
        build_detectors(AnnotationConfig(detectors=[{"type": "pos_phrase", "pattern": "n+ (noun)"}]))
    # pos_ner and pos_phrase tag each text once: the second reads the first one's tags
    ner, phrase = build_detectors(
        AnnotationConfig(detectors=[{"type": "pos_ner", "link": False}, {"type": "pos_phrase"}])
    )
    assert ner.tagging is phrase.tagging
    text = "颐和园是北京著名的皇家园林。"
    ner.detect([text])
    assert phrase.tagging.words(text) is ner.tagging.words(text)


def test_npmi_over_jieba_words_instead_of_characters() -> None:
    corpus = TEXTS * 4
    chars, words = build_detectors(
        AnnotationConfig(
            detectors=[
                {"type": "npmi", "min_count": 3, "threshold": 0.3},
                {"type": "npmi", "min_count": 3, "threshold": 0.3, "segmenter": "jieba"},
            ]
        )
    )
    chars.fit(corpus)
    words.fit(corpus)
    assert all(len(w) == 1 for pair in chars.scores for w in pair if not w.isascii())  # CJK: characters only
    assert ("天安门广场", "位于") in words.scores or ("北京市", "中心") in words.scores, sorted(words.scores)[:10]
    cut = set(jieba.lcut(TEXTS[3]))
    spans = words.detect(TEXTS[3:4])[0]
    assert spans
    for span in spans:
        piece = TEXTS[3][span["start"] : span["end"]]
        assert any(piece.startswith(w) for w in cut) and any(piece.endswith(w) for w in cut), piece


def test_gazetteer_min_chars_by_script(index: AliasIndex) -> None:
    text = TEXTS[2]
    [by_script] = build_detectors(AnnotationConfig(detectors=[{"type": "gazetteer"}]), index)
    assert {("沪", 1), ("京", 0)} <= {
        (text[s["start"] : s["end"]], s["entity_id"]) for s in by_script.detect([text])[0]
    }
    [two] = build_detectors(AnnotationConfig(detectors=[{"type": "gazetteer", "min_chars": 2}]), index)
    assert "沪" not in {text[s["start"] : s["end"]] for s in two.detect([text])[0]}
    latin = AliasIndex()
    latin.add("Q", 0)
    latin.add("Queens", 0)
    [gazetteer] = build_detectors(AnnotationConfig(detectors=[{"type": "gazetteer"}]), latin)
    assert [text[s["start"] : s["end"]] for text in ["Q is in Queens"] for s in gazetteer.detect([text])[0]] == [
        "Queens"
    ]


def test_annotation_through_the_python_api(index: AliasIndex, graph: KnowledgeGraph) -> None:
    config = AnnotationConfig(detectors=[{"type": "gazetteer"}, {"type": "pos_ner"}, {"type": "pos_phrase"}])
    docs = documents_from_records([{"id": str(i), "text": t} for i, t in enumerate(TEXTS)])
    annotated, stats = annotate_with_stats(
        docs, config, index, entity_labels=graph.entity_labels, load_from_cache_file=False
    )
    row = annotated[1]
    spans = {(row["text"][s["start"] : s["end"]], s["source"]) for s in row["spans"]}
    assert {("故宫", "gazetteer"), ("紫禁城", "gazetteer"), ("综合性大学", "pos_phrase")} <= spans
    assert stats["spans_by_source"].get("pos_ner", 0) >= 1 and stats["spans_by_source"]["pos_phrase"] >= 2


def _plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(f'''
        from masking.detectors import register_detector

        class PalaceDetector:
            """Every mention of one of the KG's palaces (aliases ending in 宫), linked."""

            def __init__(self, name, alias_index, suffix):
                self.name = name
                self.forms = [(form, ids[0]) for form, ids in alias_index.surface_forms() if form.endswith(suffix)]

            def detect(self, texts):
                out = []
                for text in texts:
                    spans = []
                    for form, entity in self.forms:
                        start = text.find(form)
                        while start >= 0:
                            spans.append({{"start": start, "end": start + len(form), "kind": "entity",
                                          "label": "PALACE", "entity_id": entity}})
                            start = text.find(form, start + 1)
                    out.append(spans)
                return out

        @register_detector("{name}")
        def make_palaces(*, name, alias_index, suffix="宫"):
            return PalaceDetector(name, alias_index, suffix)

        def broken(*, name):
            class Bad:
                def detect(self, texts):
                    return [[{{"start": 0, "end": len(t) + 5, "kind": "entity"}}] for t in texts]
            return Bad()
        '''),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_plugin_detector_registered_from_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: AliasIndex
) -> None:
    _plugin_module(tmp_path, monkeypatch, "zh_palaces")
    # by factory path (imports the module, which also registers the name)
    [detector] = build_detectors(
        AnnotationConfig(detectors=[{"type": "plugin", "name": "palaces", "factory": "zh_palaces:make_palaces"}]), index
    )
    assert found(TEXTS[1], detector.detect(TEXTS[1:2])[0]) == {("故宫", "PALACE", 4)}
    assert detector.detect(TEXTS[1:2])[0][0]["source"] == "palaces"
    # by registered name, from the --detectors list too, with options
    for config in (
        AnnotationConfig(detectors=[{"type": "plugin", "name": "zh_palaces", "options": {"suffix": "城"}}]),
        AnnotationConfig.from_names("zh_palaces,gazetteer"),
    ):
        spans = build_detectors(config, index)[0].detect(TEXTS[1:2])[0]
        assert spans and {s["source"] for s in spans} == {"zh_palaces"}
    with pytest.raises(MaskingError, match=r"registered: .*zh_palaces"):
        build_detectors(AnnotationConfig(detectors=[{"type": "plugin", "name": "no_such_detector"}]))
    with pytest.raises(MaskingError, match="unknown detector name"):
        AnnotationConfig.from_names("no_such_detector")
    with pytest.raises(MaskingError, match="outside the text"):  # a plug-in's spans are checked
        build_detectors(
            AnnotationConfig(detectors=[{"type": "plugin", "name": "bad", "factory": "zh_palaces:broken"}])
        )[0].detect(["北京"])
    with pytest.raises(MaskingError, match="cannot import factory"):
        build_detectors(AnnotationConfig(detectors=[{"type": "plugin", "factory": "zh_nowhere:make"}]))
    # the annotation cache key follows the plug-in's source: an edited plug-in is run again
    from masking.detectors.plugins import code_digest

    config = AnnotationConfig(detectors=[{"type": "plugin", "name": "zh_palaces"}, {"type": "gazetteer"}])
    before = code_digest(config.detectors)
    source = tmp_path / "zh_palaces.py"
    source.write_text(source.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    assert before and code_digest(config.detectors) != before
    assert code_digest(AnnotationConfig(detectors=[{"type": "gazetteer"}]).detectors) == ""


def test_plugin_from_an_installed_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zh_ep_detectors.py").write_text(
        textwrap.dedent("""
        class Capital:
            def __init__(self, name, word):
                self.name, self.word = name, word

            def detect(self, texts):
                return [[{"start": t.find(self.word), "end": t.find(self.word) + len(self.word), "kind": "entity",
                          "label": "CAPITAL"}] if self.word in t else [] for t in texts]

        def make(name, word="北京"):
            return Capital(name, word)
        """),
        encoding="utf-8",
    )
    info = tmp_path / "zh_ep_detectors-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zh-ep-detectors\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[kept.detectors]\nzh_capital = zh_ep_detectors:make\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    from masking.detectors import registered_detectors

    assert "zh_capital" in registered_detectors()
    [detector] = build_detectors(AnnotationConfig.from_names("zh_capital"))
    assert found(TEXTS[2], detector.detect(TEXTS[2:3])[0]) == {("北京", "CAPITAL", -1)}


def test_yaml_annotation_with_chinese_detectors_and_a_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, graph: KnowledgeGraph, index: AliasIndex
) -> None:
    from datasets import load_from_disk
    from typer.testing import CliRunner

    from kept.cli import app

    _plugin_module(tmp_path, monkeypatch, "zh_palaces_yaml")
    run = tmp_path / "run"
    (run / "corpus").mkdir(parents=True)
    graph.save(run / "kg")
    index.save(run / "kg" / "aliases.tsv")
    with (run / "corpus" / "documents.jsonl").open("w", encoding="utf-8") as handle:
        for i, text in enumerate(TEXTS * 3):
            handle.write(json.dumps({"id": str(i), "title": "", "text": text, "spans": []}, ensure_ascii=False) + "\n")
    (tmp_path / "annotation.yaml").write_text(
        textwrap.dedent("""\
        annotation:
          detectors:
            - {type: gazetteer}
            - {type: pos_ner, labels: [PERSON, ORG]}
            - {type: pos_phrase, max_words: 4}
            - {type: npmi, segmenter: jieba, min_count: 3, threshold: 0.3}
            - {type: plugin, name: palaces, factory: "zh_palaces_yaml:make_palaces"}
        """),
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["annotate", str(run), "--config", str(tmp_path / "annotation.yaml")])
    assert result.exit_code == 0, result.output
    rows = load_from_disk(str(run / "corpus" / "annotated"))
    spans = {(r["text"][s["start"] : s["end"]], s["source"], s["entity_id"]) for r in rows for s in r["spans"]}
    assert {("毛泽东", "gazetteer", 3), ("沪", "gazetteer", 1), ("综合性大学", "pos_phrase", -1)} <= spans
    assert ("故宫", "palaces", 4) in spans or ("故宫", "gazetteer", 4) in spans
    stats = json.loads((run / "corpus" / "annotation_stats.json").read_text())
    assert [d["type"] for d in stats["config"]["detectors"]] == ["gazetteer", "pos_ner", "pos_phrase", "npmi", "plugin"]
    assert stats["spans_by_source"].get("npmi", 0) >= 1

    (tmp_path / "bad.yaml").write_text("annotation:\n  detectors: [{type: pos_ner, tags: {nr: PERSON}, colour: red}]\n")
    result = CliRunner().invoke(app, ["annotate", str(run), "--config", str(tmp_path / "bad.yaml")])
    assert isinstance(result.exception, MaskingError) and "colour" in str(result.exception)


def test_probe_templates_per_language() -> None:
    from kept.evaluate.config import ProbeEvalConfig
    from kept.evaluate.probe_facts import facts_from_tables, probe_language

    entities = [{"id": i, "name": name, "label": name} for i, name in enumerate(ENTITIES)]
    relations = [{"id": i, "name": name, "label": name} for i, name in enumerate(RELATIONS)]
    triples = [(ENTITIES[h], RELATIONS[r], ENTITIES[t]) for h, r, t in TRIPLES]
    facts = facts_from_tables(entities, relations, triples, None, fraction=0.5, seed=0)
    assert facts.language == "zh" and facts.templates[1] == "[X]位于[Y]。"
    prompt = facts.templates[1].replace("[X]", "故宫").replace("[Y]", "[MASK]")
    assert prompt == "故宫位于[MASK]。"  # no spaces between Chinese words, the Chinese full stop
    english = facts_from_tables(entities, relations, triples, None, fraction=0.5, seed=0, language="en")
    assert english.templates[1] == "[X] 位于 [Y] ." and english.language == "en"
    given = facts_from_tables(
        entities, relations, triples, None, fraction=0.5, seed=0, default_template="[X]的[R]是[Y]。"
    )
    assert given.templates[0] == "[X]的首都是[Y]。"
    assert probe_language(["Paris", "France", "北京"]) == "en" and probe_language(["北京", "故宫", "Q1"]) == "zh"
    assert ProbeEvalConfig(language="zh").language == "zh" and ProbeEvalConfig().default_template is None
    with pytest.raises(ValueError):
        ProbeEvalConfig(language="fr")


def test_probe_scores_chinese_prompts_with_a_chinese_vocabulary(tmp_path: Path) -> None:
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    from kept.evaluate.probe import evaluate_probe
    from kept.evaluate.probe_facts import facts_from_tables

    characters = sorted({ch for text in [*ENTITIES, *RELATIONS, "。"] for ch in text})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).eval()
    entities = [{"id": i, "name": name, "label": name} for i, name in enumerate(ENTITIES)]
    relations = [{"id": i, "name": name, "label": name} for i, name in enumerate(RELATIONS)]
    triples = [(ENTITIES[h], RELATIONS[r], ENTITIES[t]) for h, r, t in TRIPLES]
    held_out = [("故宫", "位于", "北京"), ("北京大学", "位于", "北京")]
    facts = facts_from_tables(entities, relations, triples, held_out, fraction=0.5, seed=0)
    result = evaluate_probe(model, tokenizer, facts, filtered=False, max_pieces=8, use_entities=False)
    assert result["language"] == "zh" and result["num_facts"] == 2, result
    assert result["examples"][0]["prompt"] == "故宫位于[MASK]。"
    # every prompt piece is a known character: no [UNK] from English-shaped prompts (" ." is not "。")
    assert tokenizer.unk_token_id not in tokenizer.encode("故宫位于[MASK]。", add_special_tokens=False)


@pytest.mark.slow
def test_kept_run_annotates_chinese_with_pos_detectors(tmp_path: Path) -> None:
    """`kept run` (data, annotate, encode) on Chinese documents with the KG gazetteer and the POS detectors."""
    from test_chinese import _run, write_zh_config

    config = write_zh_config(tmp_path)
    text = config.read_text(encoding="utf-8")
    detectors = (
        "annotation: {detectors: [{type: gold}, {type: gazetteer}, {type: pos_ner}, {type: pos_phrase}, "
        "{type: npmi, segmenter: jieba, min_count: 2}]}"
    )
    assert "annotation: {detectors: [{type: gold, link: false}]}" in text
    config.write_text(text.replace("annotation: {detectors: [{type: gold, link: false}]}", detectors), encoding="utf-8")
    run_dir = tmp_path / "run"
    _run(config, run_dir)
    stats = json.loads((run_dir / "corpus" / "annotation_stats.json").read_text(encoding="utf-8"))
    assert stats["spans_by_source"].get("pos_phrase", 0) > 0, stats["spans_by_source"]
    assert stats["spans_by_kind"]["entity"] > 0 and stats["linked_fraction"] > 0.5, stats
    from datasets import load_from_disk

    rows = load_from_disk(str(run_dir / "corpus" / "annotated"))
    for row in rows:
        for span in row["spans"]:
            assert row["text"][span["start"] : span["end"]].strip() == row["text"][span["start"] : span["end"]]
    phrases = {r["text"][s["start"] : s["end"]] for r in rows for s in r["spans"] if s["source"] == "pos_phrase"}
    assert any(len(p) >= 3 for p in phrases), phrases


def test_clear_detector_cache_forgets_the_shared_pos_tags() -> None:
    """The POS taggers keep recent texts' tags per process; clearing the detector cache clears them too
    (else a second annotation of the same texts, e.g. a benchmark's repeat, never tags again)."""
    from masking.batch_annotator import clear_detector_cache
    from masking.detectors.pos import shared_tagging

    tagging = shared_tagging("jieba")
    tagging.words("故宫位于北京。")
    assert "故宫位于北京。" in tagging._recent and shared_tagging("jieba") is tagging
    clear_detector_cache()
    assert shared_tagging("jieba") is not tagging
