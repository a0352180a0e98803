"""`kept pretrain RUN_DIR`: pretrain (or resume) the run's model with the HF Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from kept.commands.common import CONFIG_OPTION, SET_OPTION, console, flag_overrides, quiet_libraries


def pretrain_command(
    run_dir: Path = typer.Argument(..., help="Run directory with tokenizer/ and encoded/ (from `kept encode`)."),
    config: Optional[Path] = CONFIG_OPTION,
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="train.max_steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="train.batch_size (per device)."),
    learning_rate: Optional[float] = typer.Option(None, "--lr", "--learning-rate", help="train.learning_rate."),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", help="train.warmup_steps."),
    seed: Optional[int] = typer.Option(None, "--seed", help="train.seed."),
    eval_steps: Optional[int] = typer.Option(None, "--eval-steps", help="train.eval_steps."),
    save_steps: Optional[int] = typer.Option(None, "--save-steps", help="train.save_steps."),
    bf16: Optional[str] = typer.Option(None, "--bf16", help="train.bf16: auto | true | false."),
    strategy: Optional[str] = typer.Option(
        None, "--strategy", help="masking.strategy: token, whole_word, span, phrase, entity, ernie."
    ),
    fusion: Optional[bool] = typer.Option(None, "--fusion/--no-fusion", help="model.fusion (entity table + dEA)."),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        help="model.preset: tiny | base | large | ernie_thu (ignored with model.init_from: the checkpoint gives the sizes).",
    ),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="model.init_from: a model dir or run:NAME."),
    restart: bool = typer.Option(False, "--restart", help="Delete existing checkpoints and train from the start."),
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Train KeptForPreTraining on encoded/ with the masking collator; resume from checkpoints."""
    quiet_libraries()
    from kept.commands.progress import cli_pretrain_callbacks
    from kept.config import resolve_run_config
    from kept.pretrain import pretrain_run
    from kept.resume import check_resume_compatible
    from kept.rundir import RunLock, is_main_process

    bf16_value: Any = None
    if bf16 is not None:
        lowered = bf16.lower()
        if lowered not in ("auto", "true", "false"):
            from kept.errors import KeptError

            raise KeptError(f"--bf16 {bf16!r} is not auto, true or false", where="--bf16")
        bf16_value = lowered if lowered == "auto" else lowered == "true"
    overrides = flag_overrides(
        {
            "train.max_steps": max_steps,
            "train.batch_size": batch_size,
            "train.learning_rate": learning_rate,
            "train.warmup_steps": warmup_steps,
            "train.seed": seed,
            "train.eval_steps": eval_steps,
            "train.save_steps": save_steps,
            "train.bf16": bf16_value,
            "masking.strategy": strategy,
            "model.fusion": fusion,
            "model.preset": preset,
            "model.init_from": init_from,
        },
        set_,
    )
    cfg = resolve_run_config(run_dir, config, overrides)
    with RunLock(run_dir, "kept pretrain"):
        if not restart:
            check_resume_compatible(cfg, run_dir)  # refuse before anything is written
        _check_init_from(cfg, run_dir)  # likewise: a wrong init_from leaves config.yaml as it was
        result = pretrain_run(run_dir, cfg, restart=restart, progress=False, extra_callbacks=cli_pretrain_callbacks())
    if is_main_process():
        console.print(
            f"[green]pretrained[/] {result.steps} steps: train loss {result.train_loss}, "
            f"eval loss {result.eval_loss} -> {result.model_dir}",
            highlight=False,
        )


def _check_init_from(cfg: Any, run_dir: Path) -> None:
    """init_from must be a checkpoint whose vocabulary is the run's tokenizer (checked before anything is written)."""
    from kept.config import check_checkpoint_dir, resolve_init_from
    from kept.errors import KeptError
    from kept.rundir import run_paths

    init_from = resolve_init_from(cfg.model.init_from, cfg.runs_dir)
    tokenizer_dir = run_paths(run_dir).tokenizer
    if init_from is None or not tokenizer_dir.is_dir():
        return
    vocab_size = check_checkpoint_dir(init_from).get("vocab_size")
    from kept.tokenizer import load_run_tokenizer

    tokens = len(load_run_tokenizer(tokenizer_dir))
    if isinstance(vocab_size, int) and vocab_size != tokens:
        raise KeptError(
            f"init_from checkpoint has a vocabulary of {vocab_size} tokens but the run's tokenizer "
            f"({tokenizer_dir}) has {tokens}",
            where="model.init_from",
            fix="encode the run with the checkpoint's tokenizer (tokenizer.base_model: the checkpoint "
            "dir, then `kept encode RUN_DIR`) or start from a matching checkpoint",
        )


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain_command)
