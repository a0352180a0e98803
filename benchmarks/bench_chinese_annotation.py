"""Chinese annotation + encoding throughput vs bare jieba on the same text, in the same process.

    .venv/bin/python benchmarks/bench_chinese_annotation.py [--documents 252] [--repeat 3]

Text: the shipped Chinese sample (data.source sanguo_sample, kg/sanguo.py: 三国演义 ch. 1-20 paragraphs)
and its KG's alias index. Timed (best of ``--repeat``, after one warm-up run that loads jieba's dictionaries):

  1. bare jieba: ``jieba.lcut`` over every text (the words of ``encode.segmenter: jieba``) and
     ``jieba.posseg.lcut`` (the POS tags the pos_ner/pos_phrase detectors read), the work the pipeline
     cannot avoid;
  2. annotation: ``masking.annotate_with_stats`` with pos_ner + pos_phrase + gazetteer + gold
     (datasets map, detectors built afresh, linking, overlaps, statistics with jieba words; no cache);
  3. encoding: ``masking.encode_with_units`` with the segmenter jieba (128-token windows on unit
     boundaries) and a WordPiece trained on the texts (training not timed).

Prints the times and the ratios (pipeline / bare; the goal: overhead <= 20%, ratio <= 1.2), then one
JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=None, help="paragraphs of the sample (default: all 252)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import datasets
    import jieba
    import jieba.posseg

    from kept.tokenizer import train_wordpiece
    from kg.sanguo import load_sanguo_sample
    from masking import encode_with_units
    from masking.annotator import annotate_with_stats
    from masking.batch_annotator import clear_detector_cache
    from masking.detectors.config import AnnotationConfig
    from masking.segmenters import build_segmenter

    datasets.disable_progress_bars()
    datasets.disable_caching()
    sample = load_sanguo_sample(max_documents=args.documents)
    texts = [d["text"] for d in sample.documents]
    rows = {"id": [d["id"] for d in sample.documents], "text": texts, "spans": [d["spans"] for d in sample.documents]}
    dataset = datasets.Dataset.from_dict(rows)
    chars = sum(map(len, texts))
    config = AnnotationConfig(
        detectors=[{"type": "pos_ner"}, {"type": "pos_phrase"}, {"type": "gazetteer"}, {"type": "gold"}],
        segmenter="jieba",
    )
    segmenter = build_segmenter("jieba")
    tokenizer = train_wordpiece(texts, vocab_size=8000, min_frequency=2)
    labels = sample.graph.entity_labels

    def bare_cut() -> None:
        for text in texts:
            jieba.lcut(text)

    def bare_posseg() -> None:
        for text in texts:
            jieba.posseg.lcut(text)

    annotated: list = []

    def annotation() -> None:
        clear_detector_cache()  # the POS detectors keep the tags of recent texts: every run tags afresh
        out, _ = annotate_with_stats(
            dataset, config, sample.alias_index, entity_labels=labels, load_from_cache_file=False
        )
        annotated[:] = [out]

    def encoding() -> None:
        out = annotated[0]
        encode_with_units(tokenizer, out["text"], out["spans"], max_length=128, segmenter=segmenter)

    for fn in (bare_cut, bare_posseg, annotation, encoding):  # warm-up: jieba's dictionaries, detectors
        fn()
    t_cut = best_of(args.repeat, bare_cut)
    t_pos = best_of(args.repeat, bare_posseg)
    t_ann = best_of(args.repeat, annotation)
    t_enc = best_of(args.repeat, encoding)
    bare = t_cut + t_pos
    result = {
        "documents": len(texts),
        "characters": chars,
        "jieba_lcut_s": round(t_cut, 4),
        "jieba_posseg_s": round(t_pos, 4),
        "annotate_s": round(t_ann, 4),
        "encode_s": round(t_enc, 4),
        "ratio_annotate_to_posseg": round(t_ann / t_pos, 3),
        "ratio_encode_to_lcut": round(t_enc / t_cut, 3),
        "ratio_pipeline_to_bare_jieba": round((t_ann + t_enc) / bare, 3),
        "chars_per_s_pipeline": round(chars / (t_ann + t_enc)),
        "chars_per_s_bare_jieba": round(chars / bare),
    }
    print(f"{len(texts)} paragraphs, {chars} characters; best of {args.repeat}")
    print(f"  bare jieba.lcut           {t_cut:8.3f} s")
    print(f"  bare jieba.posseg.lcut    {t_pos:8.3f} s")
    print(f"  annotate (pos+gaz+gold)   {t_ann:8.3f} s   x{t_ann / t_pos:.2f} of posseg")
    print(f"  encode (jieba words)      {t_enc:8.3f} s   x{t_enc / t_cut:.2f} of lcut")
    print(f"  pipeline / bare jieba     x{(t_ann + t_enc) / bare:.2f} (goal <= 1.20)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
