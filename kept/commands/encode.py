"""`kept encode RUN_DIR`: train or load the tokenizer and encode the annotated corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from kept.commands.common import CONFIG_OPTION, SET_OPTION, console, flag_overrides, quiet_libraries


def encode_command(
    run_dir: Path = typer.Argument(..., help="Run directory with corpus/annotated (from `kept annotate`)."),
    config: Optional[Path] = CONFIG_OPTION,
    base_model: Optional[str] = typer.Option(
        None, "--base-model", help="tokenizer.base_model: a local model dir or hub name."
    ),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="tokenizer.vocab_size of a trained WordPiece."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="encode.max_length (tokens per sequence)."),
    validation_fraction: Optional[float] = typer.Option(
        None, "--validation-fraction", help="encode.validation_fraction (documents)."
    ),
    packing: Optional[bool] = typer.Option(None, "--packing/--no-packing", help="encode.packing."),
    seed: Optional[int] = typer.Option(None, "--seed", help="encode.seed (document split, sentence pairs)."),
    sentence_pairs: Optional[bool] = typer.Option(
        None,
        "--sentence-pairs/--no-sentence-pairs",
        help="encode.sentence_pairs: ALBERT sentence-order pairs, the data of model.overrides.use_sop.",
    ),
    segmenter: Optional[str] = typer.Option(
        None, "--segmenter", help="encode.segmenter: none | jieba | pkuseg | spacy:<pipeline>."
    ),
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Tokenize corpus/annotated into encoded/train and encoded/validation (and save tokenizer/)."""
    from kept.config import resolve_run_config, save_config
    from kept.encode import encode_run
    from kept.rundir import RunLock

    quiet_libraries()
    overrides: dict[str, Any] = flag_overrides(
        {
            "tokenizer.base_model": base_model,
            "tokenizer.vocab_size": vocab_size,
            "encode.max_length": max_length,
            "encode.validation_fraction": validation_fraction,
            "encode.packing": packing,
            "encode.seed": seed,
            "encode.segmenter": segmenter,
            "encode.sentence_pairs": sentence_pairs,
        },
        set_,
    )
    cfg = resolve_run_config(run_dir, config, overrides)
    with RunLock(run_dir, "kept encode"):
        result = encode_run(run_dir, cfg)
        save_config(cfg, run_dir)  # after encoding: a bad input leaves config.yaml as it was
    train, val = result.stats["train"], result.stats["validation"]
    console.print(
        f"[green]encoded[/] {train['sequences']} train / {val['sequences']} validation sequences, "
        f"{train['linked_mentions']} linked mentions in train -> {run_dir / 'encoded'}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("encode")(encode_command)
