"""Chinese end to end: word units from a segmenter (encode.segmenter), the [UNK]-rate check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kept.cli import app

runner = CliRunner()

# real Chinese sentences about real places (one document each) and facts about them
ZH_DOCUMENTS = [
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。故宫位于北京的中心，是明清两代的皇家宫殿。",
    "天安门广场在故宫的南面，是世界上最大的城市广场之一。每天早上，很多游客来到天安门广场观看升旗仪式。",
    "故宫又称紫禁城，始建于明朝永乐年间。故宫博物院收藏了大量珍贵的文物。",
    "中华人民共和国成立于一九四九年十月一日。开国大典在天安门广场举行。",
    "长城是中国古代的军事防御工程。八达岭长城位于北京市延庆区。",
    "上海是中国最大的经济中心城市。黄浦江流经上海市区。",
    "颐和园是北京著名的皇家园林，位于北京西北郊。昆明湖是颐和园的主要湖泊。",
    "长江是中国最长的河流，流经上海后注入东海。北京和上海之间有高速铁路。",
]
ZH_TRIPLES = [
    ("北京", "首都", "中华人民共和国"),
    ("故宫", "位于", "北京"),
    ("天安门广场", "位于", "北京"),
    ("颐和园", "位于", "北京"),
    ("长城", "位于", "中华人民共和国"),
    ("上海", "位于", "中华人民共和国"),
    ("黄浦江", "流经", "上海"),
    ("长江", "流经", "上海"),
    ("昆明湖", "位于", "颐和园"),
]
MULTI_CHAR_WORDS = {"北京", "故宫", "天安门广场", "中华人民共和国"}


def _gold_spans(text: str, names: list[str]) -> list[dict]:
    """Every mention of a KG entity, longest name first, no overlaps."""
    taken = [False] * len(text)
    spans = []
    for name in sorted(names, key=len, reverse=True):
        start = text.find(name)
        while start >= 0:
            if not any(taken[start : start + len(name)]):
                taken[start : start + len(name)] = [True] * len(name)
                spans.append(
                    {
                        "start": start,
                        "end": start + len(name),
                        "kind": "entity",
                        "label": "",
                        "entity_id": -1,
                        "source": "gold",
                    }
                )
            start = text.find(name, start + len(name))
    return sorted(spans, key=lambda s: s["start"])


def write_zh_config(tmp_path: Path, encode: str = "segmenter: jieba", strategy: str = "whole_word") -> Path:
    source = tmp_path / "source"
    source.mkdir(parents=True, exist_ok=True)
    names = sorted({h for h, _, _ in ZH_TRIPLES} | {t for _, _, t in ZH_TRIPLES})
    with open(source / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for i, text in enumerate(ZH_DOCUMENTS):
            handle.write(
                json.dumps(
                    {"id": f"zh{i}", "title": f"文档{i}", "text": text, "spans": _gold_spans(text, names)},
                    ensure_ascii=False,
                )
                + "\n"
            )
    (source / "triples.tsv").write_text(
        "head\trelation\ttail\n" + "".join(f"{h}\t{r}\t{t}\n" for h, r, t in ZH_TRIPLES), encoding="utf-8"
    )
    config = tmp_path / "zh.yaml"
    config.write_text(
        f"""\
name: zh
data: {{source: files, corpus: {source / "corpus.jsonl"}, kg_triples: {source / "triples.tsv"}}}
annotation: {{detectors: [{{type: gold, link: false}}]}}
tokenizer: {{vocab_size: 200, min_frequency: 1}}
encode: {{max_length: 64, validation_fraction: 0.25, seed: 0, {encode}}}
masking: {{strategy: {strategy}, seed: 0}}
model: {{preset: tiny, fusion: false}}
""",
        encoding="utf-8",
    )
    return config


def _run(config: Path, run_dir: Path, stages: str = "data,annotate,encode") -> None:
    result = runner.invoke(app, ["run", str(config), "--out", str(run_dir), "--stages", stages])
    assert result.exit_code == 0, result.output


def _load(run_dir: Path) -> tuple[object, object]:
    import datasets

    from kept.tokenizer import load_run_tokenizer

    return load_run_tokenizer(run_dir / "tokenizer"), datasets.load_from_disk(str(run_dir / "encoded" / "train"))


def _words(tokenizer: object, row: dict) -> dict[int, str]:
    """word id -> the characters of its tokens."""
    words: dict[int, str] = {}
    for token, word in zip(tokenizer.convert_ids_to_tokens(row["input_ids"]), row["word_ids"]):  # type: ignore[attr-defined]
        if word >= 0:
            words[word] = words.get(word, "") + token.removeprefix("##")
    return words


def _masked_words(tokenizer: object, train: object, strategy: str) -> list[str]:
    """Collate the whole split; check every word is masked whole or not at all; return the masked words."""
    from masking import KnowledgeMaskingCollator

    collator = KnowledgeMaskingCollator(
        tokenizer,
        strategy=strategy,
        mlm_probability=0.3,
        dea=False,
        mask_replace_prob=1.0,
        random_replace_prob=0.0,
        seed=0,
    )
    if strategy == "ernie":
        collator.set_progress(0.0)
        assert collator.current_stage() == "whole_word"
    rows = [train[i] for i in range(len(train))]  # type: ignore[arg-type]
    batch = collator(
        [
            {k: r[k] for k in ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids")}
            for r in rows
        ]
    )
    masked_words: list[str] = []
    for i, row in enumerate(rows):
        words = _words(tokenizer, row)
        n = len(row["input_ids"])
        masked = (batch["labels"][i, :n] != -100).tolist()
        by_word: dict[int, set[bool]] = {}
        for flag, word in zip(masked, row["word_ids"]):
            if word >= 0:
                by_word.setdefault(word, set()).add(flag)
        for word, flags in by_word.items():
            assert len(flags) == 1, f"word {words[word]!r} partly masked"
            if flags == {True}:
                masked_words.append(words[word])
    return masked_words


def test_kept_run_on_chinese_text_masks_whole_jieba_words(tmp_path: Path) -> None:
    pytest.importorskip("jieba")
    run_dir = tmp_path / "run"
    _run(write_zh_config(tmp_path), run_dir)
    stats = json.loads((run_dir / "encoded" / "stats.json").read_text())
    assert stats["segmenter"] == "jieba" and stats["unk_rate"] == 0.0
    tokenizer, train = _load(run_dir)
    all_words = {w for i in range(len(train)) for w in _words(tokenizer, train[i]).values()}
    assert MULTI_CHAR_WORDS & all_words, all_words  # words of the segmenter, not single characters
    for strategy in ("whole_word", "ernie"):
        masked = _masked_words(tokenizer, train, strategy)
        assert masked and any(len(w) >= 2 for w in masked), (strategy, masked)
        assert sum(map(len, masked)) / len(masked) > 1.5, (strategy, masked)


def test_segmenter_none_keeps_characters_and_a_callable_comes_through_the_api(tmp_path: Path) -> None:
    jieba = pytest.importorskip("jieba")
    from kept.config import load_run_config
    from kept.encode import encode_run

    run_dir = tmp_path / "run"
    _run(write_zh_config(tmp_path, encode="segmenter: none"), run_dir)
    tokenizer, train = _load(run_dir)
    assert all(len(w) == 1 for i in range(len(train)) for w in _words(tokenizer, train[i]).values())
    encode_run(run_dir, load_run_config(run_dir), segmenter=jieba.lcut)  # a callable overrides the config
    tokenizer, train = _load(run_dir)
    words = {w for i in range(len(train)) for w in _words(tokenizer, train[i]).values()}
    assert MULTI_CHAR_WORDS & words
    assert json.loads((run_dir / "encoded" / "stats.json").read_text())["segmenter"] == "callable:jieba.Tokenizer.lcut"


def test_unk_rate_above_the_limit_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kept.cli import main
    from kept.tiny import tiny_documents
    from kept.tokenizer import save_tokenizer, train_wordpiece

    english = tmp_path / "english-tokenizer"  # a vocabulary without Chinese characters
    save_tokenizer(train_wordpiece([d["text"] for d in tiny_documents(8)[0]], vocab_size=120, min_frequency=1), english)
    run_dir = tmp_path / "run"
    config = write_zh_config(tmp_path, encode="segmenter: none")
    _run(config, run_dir, stages="data,annotate")
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", str(run_dir), "--config", str(config), "--base-model", str(english)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    message = [line for line in err.splitlines() if "[UNK]" in line and "max_unk_rate" in line]
    assert len(message) == 1 and "100.0% of the corpus tokens are [UNK]" in message[0], err
    assert "train a tokenizer on this corpus" in message[0] and "base model whose vocabulary covers" in message[0]
    assert "Traceback" not in err and not (run_dir / "encoded").exists()
    accepted = runner.invoke(
        app,
        [
            "encode",
            str(run_dir),
            "--config",
            str(config),
            "--base-model",
            str(english),
            "--segmenter",
            "jieba",
            "--set",
            "encode.max_unk_rate=null",
        ],
    )
    assert accepted.exit_code == 0, accepted.output
    assert "[UNK] rate: 100.00%" in accepted.output
    stats = json.loads((run_dir / "encoded" / "stats.json").read_text())
    assert stats["unk_rate"] == 1.0 and stats["segmenter"] == "jieba"


def test_segmenter_names_and_a_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kept.config import load_config
    from kept.errors import KeptError
    from masking import MaskingError
    from masking.segmenters import build_segmenter

    assert build_segmenter(None) is None and build_segmenter("none") is None
    config = write_zh_config(tmp_path, encode="segmenter: jeiba")
    with pytest.raises(KeptError, match=r"zh\.yaml:5.*unknown segmenter 'jeiba'.*jieba \| pkuseg"):
        load_config(config)
    monkeypatch.setitem(sys.modules, "jieba", None)  # as if jieba were not installed
    with pytest.raises(MaskingError, match=r"encode\.segmenter: .*'jieba'.*not installed.*pip install jieba"):
        build_segmenter("jieba")
    monkeypatch.setitem(sys.modules, "spacy_pkuseg", None)
    with pytest.raises(MaskingError, match=r"pip install spacy-pkuseg"):
        build_segmenter("pkuseg")


def test_windows_on_chinese_text_keep_every_entity_whole(tmp_path: Path) -> None:
    """Through YAML (segmenter: jieba, max_length 16): no window ends inside an entity (紫|禁城 did)."""
    pytest.importorskip("jieba")
    run_dir = tmp_path / "run"
    config = write_zh_config(tmp_path).read_text(encoding="utf-8").replace("max_length: 64", "max_length: 16")
    (tmp_path / "zh16.yaml").write_text(config, encoding="utf-8")
    _run(tmp_path / "zh16.yaml", run_dir)
    tokenizer, train = _load(run_dir)
    names = {h for h, _, _ in ZH_TRIPLES} | {t for _, _, t in ZH_TRIPLES} | {"紫禁城"}
    assert len(train) > len(ZH_DOCUMENTS)  # documents continue in further windows
    seen = set()
    for i in range(len(train)):
        row = train[i]
        units: dict[int, str] = {}
        for token, unit, kind in zip(
            tokenizer.convert_ids_to_tokens(row["input_ids"]),
            row["unit_ids"],  # type: ignore[attr-defined]
            row["unit_kind"],
        ):
            if kind == 2:
                units[unit] = units.get(unit, "") + token
        assert set(units.values()) <= names, units  # every entity of a window is a whole name
        seen |= set(units.values())
    assert {"天安门广场", "中华人民共和国"} <= seen


def test_token_coverage_counts_the_segmenters_words(tmp_path: Path) -> None:
    """annotation_stats.json token_coverage <= 1 on Chinese (the words are jieba's, not \\w+ runs)."""
    jieba = pytest.importorskip("jieba")
    run_dir = tmp_path / "run"
    _run(write_zh_config(tmp_path), run_dir, stages="data,annotate")
    stats = json.loads((run_dir / "corpus" / "annotation_stats.json").read_text())
    jieba_words = sum(1 for text in ZH_DOCUMENTS for w in jieba.lcut(text) if w.strip() and w not in "，。")
    assert stats["words"] == jieba_words
    assert 0 < stats["token_coverage"] <= 1


def test_trained_wordpiece_covers_every_character_seen_once() -> None:
    from kept.tokenizer import train_wordpiece

    rare = ["鼹鼠在紫禁城里。", "Zqxv naïve þorn."]  # characters seen once, alone or inside a word
    tokenizer = train_wordpiece(ZH_DOCUMENTS + rare, vocab_size=1500, min_frequency=2)
    for text in rare:
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
        assert "[UNK]" not in tokens, tokens
    assert {"鼹", "þ"} <= set(tokenizer.get_vocab()) or "##þ" in tokenizer.get_vocab()


def test_sanguo_sample_runs_through_yaml_with_jieba(tmp_path: Path) -> None:
    """The shipped Chinese sample (data.source: sanguo_sample): real paragraphs, gold mentions, a KG with
    type and co-occurrence triples; annotated by the gazetteer and encoded with jieba words."""
    pytest.importorskip("jieba")
    from kg import KnowledgeGraph

    config = tmp_path / "sanguo.yaml"
    config.write_text(
        """\
name: sanguo
data: {source: sanguo_sample, max_documents: 24}
annotation: {detectors: [{type: gazetteer}, {type: gold}]}
tokenizer: {vocab_size: 2000, min_frequency: 2}
encode: {max_length: 64, validation_fraction: 0.25, seed: 0, segmenter: jieba}
masking: {strategy: ernie, seed: 0}
model: {preset: tiny, fusion: true}
""",
        encoding="utf-8",
    )
    run_dir = tmp_path / "run"
    _run(config, run_dir)
    documents = [json.loads(line) for line in (run_dir / "corpus" / "documents.jsonl").read_text().splitlines()]
    assert len(documents) == 24 and documents[0]["id"] == "ch01-p000"
    assert any("刘备" in d["text"] or "玄德" in d["text"] for d in documents)
    graph = KnowledgeGraph.load(run_dir / "kg")
    assert set(graph.relations) == {"类型", "同段"} and graph.num_triples > 100
    stats = json.loads((run_dir / "corpus" / "annotation_stats.json").read_text())
    assert stats["linked_entity_spans"] > 50 and 0 < stats["token_coverage"] <= 1
    encoded = json.loads((run_dir / "encoded" / "stats.json").read_text())
    assert encoded["unk_rate"] == 0.0 and encoded["train"]["linked_mentions"] > 50


@pytest.mark.slow
def test_kept_demo_lang_zh_runs_the_whole_pipeline(tmp_path: Path) -> None:
    """`kept demo --lang zh --model tiny` (kept/demos/zh-tiny.yaml): the Chinese sample, jieba words, POS
    detectors + gazetteer + gold, whole_word vs ernie+fusion on the same budget (about a minute on a CPU)."""
    pytest.importorskip("jieba")
    out = tmp_path / "demo"
    result = runner.invoke(
        app,
        [
            "demo",
            "--lang",
            "zh",
            "--model",
            "tiny",
            "--out",
            str(out),
            "--documents",
            "12",
            "--steps",
            "4",
            "--kg-epochs",
            "1",
            "--no-relation",
        ],
    )
    assert result.exit_code == 0, result.output
    annotation = json.loads((out / "prepared" / "corpus" / "annotation_stats.json").read_text())
    assert annotation["spans_by_source"].get("pos_ner", 0) > 0 and 0 < annotation["token_coverage"] <= 1
    encoded = json.loads((out / "prepared" / "encoded" / "stats.json").read_text())
    assert encoded["segmenter"] == "jieba" and encoded["unk_rate"] == 0.0
    summary = json.loads((out / "compare" / "summary.json").read_text())
    assert set(summary["runs"]) == {"whole_word", "ernie+fusion"}
    for run in ("whole_word-seed0", "ernie_fusion-seed0"):
        assert (out / "runs" / run / "eval" / "metrics.json").exists(), run


def test_ernie_moves_from_jieba_words_to_phrases_to_entities(tmp_path: Path) -> None:
    """Staged ERNIE on Chinese from YAML: the first third masks jieba words, the second pos_phrase phrases,
    the last the gold entities; each stage's masked tokens lean to its own unit kind (0 word, 1 phrase,
    2 entity) more than the other stages' do."""
    pytest.importorskip("jieba")
    config = write_zh_config(tmp_path, strategy="ernie")
    text = config.read_text(encoding="utf-8").replace(
        "annotation: {detectors: [{type: gold, link: false}]}",
        "annotation: {detectors: [{type: gold, link: false}, {type: pos_phrase}]}",
    )
    config.write_text(text, encoding="utf-8")
    run_dir = tmp_path / "run"
    _run(config, run_dir)
    tokenizer, train = _load(run_dir)
    rows = [train[i] for i in range(len(train))]  # type: ignore[arg-type]
    kinds = [k for row in rows for k in row["unit_kind"]]
    assert 1 in kinds and 2 in kinds, "the corpus needs phrase and entity units"
    from masking import KnowledgeMaskingCollator

    columns = ("input_ids", "attention_mask", "unit_ids", "unit_kind", "entity_ids", "word_ids")
    share: dict[str, dict[int, float]] = {}
    for progress, stage in ((0.1, "whole_word"), (0.5, "phrase"), (0.9, "entity")):
        collator = KnowledgeMaskingCollator(
            tokenizer,
            strategy="ernie",
            mlm_probability=0.3,
            dea=False,
            mask_replace_prob=1.0,
            random_replace_prob=0.0,
            seed=0,
        )
        collator.set_progress(progress)
        assert collator.current_stage() == stage
        counts = {0: 0, 1: 0, 2: 0}
        for _ in range(4):  # a few draws of the whole split
            batch = collator([{k: r[k] for k in columns} for r in rows])
            for i, row in enumerate(rows):
                n = len(row["input_ids"])
                for flag, kind in zip((batch["labels"][i, :n] != -100).tolist(), row["unit_kind"]):
                    if flag and kind in counts:
                        counts[kind] += 1
        total = sum(counts.values())
        assert total > 0, stage
        share[stage] = {kind: count / total for kind, count in counts.items()}
    assert share["phrase"][1] > share["whole_word"][1] and share["phrase"][1] > share["entity"][1], share
    assert share["entity"][2] > share["whole_word"][2] and share["entity"][2] > share["phrase"][2], share
