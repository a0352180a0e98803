"""Teacher vs student after a distillation: quality and inference speed, measured the same way for both.

* MLM: :func:`kept.evaluate.mlm.evaluate_mlm` on the same validation rows with the same seed, once with the run's
  masking strategy and once with plain token masking (the teacher gets its entity inputs, the student none);
* relation classification: :func:`kept.evaluate.relation.evaluate_relation` (a fine-tune from each model
  directory on the same FewRel split and seeds) when FewRel data is configured, else the reason it was skipped;
* speed: sequences per second of a forward pass over the same batches (validation rows padded to the run's
  ``encode.max_length``), in this process, on the same device, the models taking turns batch by batch
  (median time per batch, after a warm-up pass), with the MLM logits and with the encoder alone.

``distill_metrics.json`` holds ``{"teacher": {...}, "student": {...}, "speed": {...}}``; the CLI prints it as
a small table (:func:`kept.commands.tables.distill_table`, rows from ``TABLE_ROWS``).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch

METRICS_FILE = "distill_metrics.json"
#: (row label, key in a model's record, format)
TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("parameters (M)", "parameters_m", "{:.2f}"),
    ("layers x width", "shape", "{}"),
    ("MLM accuracy (run strategy)", "mlm_accuracy", "{:.4f}"),
    ("MLM accuracy (token)", "mlm_token_accuracy", "{:.4f}"),
    ("relation macro-F1", "relation_macro_f1", "{:.4f}"),
    ("sequences/s (MLM logits)", "sequences_per_s", "{:.1f}"),
    ("sequences/s (encoder only)", "encoder_sequences_per_s", "{:.1f}"),
)


@torch.no_grad()
def sequences_per_second(
    models: dict[str, tuple[torch.nn.Module, bool]], batches: Sequence[dict[str, torch.Tensor]], device: torch.device
) -> dict[str, float]:
    """Sequences per second of each model (name -> (module, feeds entities)) on the same ``batches``.

    The models take turns batch by batch (interleaved, so a load change on a shared machine hits them alike);
    each gets a warm-up pass first; the figure is the batch size over the median time of one batch. All run
    with the sdpa attention (BERT and KEPT layers read ``config._attn_implementation`` at every call; the eager
    one that attention transfer needed would slow both)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with contextlib.ExitStack() as stack:
        for module, _ in models.values():
            module.to(device).eval()
            stack.enter_context(_attention(module, "sdpa"))
        for _name, (module, entities) in models.items():
            _forward(module, batches[0], device, entities)  # warm-up
        for batch in batches:
            for name, (module, entities) in models.items():
                start = time.perf_counter()
                _forward(module, batch, device, entities)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[name].append(time.perf_counter() - start)
    size = int(batches[0]["input_ids"].shape[0])
    return {name: size / max(statistics.median(values), 1e-9) for name, values in times.items()}


@contextlib.contextmanager
def _attention(model: torch.nn.Module, implementation: str) -> Iterator[None]:
    config: Any = model.config  # a transformers config: attributes by model type
    before = getattr(config, "_attn_implementation", None)
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = before


def _forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device, entities: bool) -> None:
    kwargs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
    if entities:
        kwargs["entity_ids"] = batch["entity_ids"].to(device)
    model(**kwargs)


def speed_batches(
    rows: Sequence[dict[str, Any]], batch_size: int, count: int, length: int, pad_id: int
) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of ``batch_size`` validation rows (cycled), padded to ``length`` tokens."""
    from kept.evaluate.common import pad

    batches = []
    for b in range(count):
        chunk = [rows[(b * batch_size + i) % len(rows)] for i in range(batch_size)]
        batches.append(
            {
                "input_ids": pad([r["input_ids"] for r in chunk], pad_id, length),
                "attention_mask": pad([r["attention_mask"] for r in chunk], 0, length),
                "entity_ids": pad([r["entity_ids"] for r in chunk], -1, length),
            }
        )
    return batches


def model_record(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    fusion: bool,
    strategy: str,
    mlm_probability: float,
    masking: dict[str, Any],
    seed: int,
    batch_size: int,
    relation: Callable[[], dict[str, Any]] | None,
) -> dict[str, Any]:
    """Quality figures of one model (the speed is measured separately, for both in turn)."""
    from kept.evaluate import mlm

    config: Any = model.config  # a transformers config: attributes by model type
    layers = int(config.num_hidden_layers) + int(getattr(config, "num_knowledge_layers", 0) or 0)
    figures = mlm.evaluate_mlm_both(
        model,
        tokenizer,
        rows,
        strategy=strategy,
        mlm_probability=mlm_probability,
        masking=masking,
        seed=seed,
        batch_size=batch_size,
        use_entities=fusion,
    )
    own, token = figures["strategy"], figures["token"]
    record: dict[str, Any] = {
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "shape": f"{layers} x {config.hidden_size}",
        "fusion": fusion,
        "mlm_accuracy": own["accuracy"],
        "mlm_loss": own["loss"],
        "mlm_token_accuracy": token["accuracy"],
        "mlm_token_loss": token["loss"],
        "mlm_num_predicted": own["num_predicted"],
    }
    result = relation() if relation is not None else {"skipped": "disabled (distill.report_relation: false)"}
    record["relation_macro_f1"] = result.get("macro_f1")
    record["relation"] = {k: v for k, v in result.items() if k in ("macro_f1", "accuracy", "num_test", "skipped")}
    return record


def _encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The encoder of a transformers model (``base_model``: its body without the task head)."""
    return cast(torch.nn.Module, model.base_model)


def compare_models(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    fusion: bool,
    strategy: str,
    mlm_probability: float,
    masking: dict[str, Any],
    seed: int,
    batch_size: int,
    max_length: int,
    speed_batch_count: int,
    device: torch.device,
    relation: Callable[[str], Callable[[], dict[str, Any]] | None],
) -> dict[str, Any]:
    """The record of ``distill_metrics.json``; ``relation(which)`` gives the fine-tune of "teacher"/"student"."""
    records = {}
    for name, model, entities in (("teacher", teacher, fusion), ("student", student, False)):
        model.to(device).eval()
        records[name] = model_record(
            model,
            tokenizer,
            rows,
            fusion=entities,
            strategy=strategy,
            mlm_probability=mlm_probability,
            masking=masking,
            seed=seed,
            batch_size=batch_size,
            relation=relation(name),
        )
    batches = speed_batches(rows, batch_size, speed_batch_count, max_length, tokenizer.pad_token_id or 0)
    # with the MLM logits (fill-mask), and the encoder alone (hidden states, as a classifier or an embedder
    # uses it: no vocabulary projection)
    speed = sequences_per_second(
        {
            "teacher": (teacher, fusion),
            "student": (student, False),
            "teacher_encoder": (_encoder(teacher), fusion),
            "student_encoder": (_encoder(student), False),
        },
        batches,
        device,
    )
    for name in ("teacher", "student"):
        records[name]["sequences_per_s"] = speed[name]
        records[name]["encoder_sequences_per_s"] = speed[f"{name}_encoder"]
    speedup = records["student"]["sequences_per_s"] / max(records["teacher"]["sequences_per_s"], 1e-9)
    encoder_speedup = records["student"]["encoder_sequences_per_s"] / max(
        records["teacher"]["encoder_sequences_per_s"], 1e-9
    )
    return {
        **records,
        "speed": {
            "device": str(device),
            "batch_size": batch_size,
            "sequence_length": max_length,
            "batches": speed_batch_count,
            "speedup": speedup,
            "encoder_speedup": encoder_speedup,
            "threads": torch.get_num_threads(),
        },
        "mlm": {"strategy": strategy, "sequences": len(rows), "seed": seed},
    }


def relation_runner(
    model_dir: Path,
    tokenizer_dir: Path,
    eval_config: Any,
    data: Any,
    seed: int,
    finetune_seed: int,
    device: torch.device,
    entity_index: Any,
) -> Callable[[], dict[str, Any]]:
    """A deferred relation fine-tune of ``model_dir`` with the run's ``eval.relation`` settings."""
    from kept.evaluate import relation

    r = eval_config.relation

    def run() -> dict[str, Any]:
        return relation.evaluate_relation(
            model_dir,
            tokenizer_dir,
            data,
            **r.model_dump(exclude={"enabled", "data"}),
            seed=seed,
            finetune_seed=finetune_seed,
            device=device,
            entity_index=entity_index,
        )

    return run


__all__ = ["METRICS_FILE", "compare_models", "relation_runner", "sequences_per_second"]
