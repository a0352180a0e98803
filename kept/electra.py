"""The run side of ELECTRA (``model.objective: electra``; the model is :mod:`fusion.electra`).

* :func:`wrap_objective` — the built KEPT model (preset, init_from or BERT) becomes the discriminator of a
  :class:`fusion.electra.KeptElectraForPreTraining`; its parameter origins carry over under the
  ``discriminator.`` prefix, the generator and the RTD head are new (drawn from ``train.seed``).
* :func:`model_to_save` — what ``model/`` holds: the discriminator, a ``KeptForPreTraining`` that
  ``kept evaluate``/``kept export``/fine-tuning load as usual. Its MLM head was never trained, so the run
  records ``random_mlm_head`` (``kept evaluate`` then skips the MLM-head figures: MLM, cloze, probe, which
  would measure an untrained projection) and keeps the fine-tuned ones (relation classification).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from kept.optim import ParameterOrigins

logger = logging.getLogger(__name__)

PREFIX = "discriminator."


def electra_on(config: Any) -> bool:
    """Whether the run configuration (a RunConfig) trains with replaced-token detection."""
    return config.model.objective == "electra"


def wrap_objective(model: Any, origins: ParameterOrigins, config: Any, seed: int) -> tuple[Any, ParameterOrigins]:
    """(model, origins) unchanged for MLM; for ELECTRA the generator/discriminator pair and its origins."""
    if not electra_on(config):
        return model, origins
    import torch

    from fusion.electra import KeptElectraForPreTraining

    torch.manual_seed(seed + 1)  # the generator's own draw, the same whatever the discriminator's source
    pair = KeptElectraForPreTraining(
        model.config,
        generator_fraction=config.model.generator_fraction,
        rtd_weight=config.model.rtd_weight,
        discriminator=model,
    )
    params = dict(pair.named_parameters())
    loaded = {PREFIX + n for n in origins.loaded}
    sizes = {n: int(p.numel()) for n, p in params.items()}
    wrapped = replace(
        origins,
        new=sorted(n for n in params if n not in loaded),
        loaded=sorted(n for n in params if n in loaded),
        sizes=sizes,
        tied=[PREFIX + n for n in origins.tied],
    )
    generator = sum(p.numel() for n, p in params.items() if not n.startswith(PREFIX))
    logger.info(
        f"ELECTRA: generator {pair.generator.config.hidden_size} wide x {pair.generator.config.num_hidden_layers} "
        f"layers + RTD head ({generator / 1e6:.2f}M parameters), loss = generator MLM + "
        f"{config.model.rtd_weight:g} x RTD; model/ will be the discriminator"
    )
    return pair, wrapped


def model_to_save(model: Any) -> Any:
    """The model ``model/`` holds: the discriminator of an ELECTRA pair, else the model itself."""
    return getattr(model, "discriminator", model)


def save_final(trainer: Any, model: Any, directory: str, is_main: bool) -> None:
    """Save the trained model to ``directory``: the Trainer's save for MLM, the discriminator for ELECTRA
    (on the main process; a sharded FSDP/DeepSpeed ELECTRA run is not gathered here)."""
    saved = model_to_save(model)
    if saved is model:
        trainer.save_model(directory)
    elif is_main:
        saved.save_pretrained(directory)


def pretrain_metrics(config: Any) -> dict[str, Any]:
    """What ``kept_pretrain.json``/``pretrain_metrics.json`` record about the objective: ``objective``, and
    for ELECTRA ``random_mlm_head`` (the discriminator's MLM head has never been trained)."""
    if not electra_on(config):
        return {"objective": config.model.objective}
    return {
        "objective": "electra",
        "random_mlm_head": True,
        "note": "ELECTRA discriminator: its MLM head was never trained (MLM, cloze and probe are skipped)",
    }


#: The figures of the ELECTRA / WKLM objectives that ``kept evaluate`` copies from the training history into
#: ``metrics.json`` (``objectives``), so that ``kept compare`` shows them.
OBJECTIVE_FIGURES: tuple[str, ...] = ("generator_mlm_loss", "rtd_loss", "rtd_accuracy", "red_loss", "red_accuracy")


def objective_figures(run_dir: Any) -> dict[str, float]:
    """The final evaluation's value of each :data:`OBJECTIVE_FIGURES` figure in ``logs/train_history.json``
    (``final_eval_rtd_accuracy`` when the end-of-training evaluation ran on a sample, else the last
    ``eval_rtd_accuracy`` ...; the last training log's where no evaluation has it); {} for a run that
    trained none of them (or has no history)."""
    from pathlib import Path

    from kept.rundir import read_json

    path = Path(run_dir) / "logs" / "train_history.json"
    if not path.is_file():
        return {}
    data = read_json(path, "training history")  # {"log_history": [...], ...}, or the list alone (as kept.analysis)
    history = data.get("log_history", []) if isinstance(data, dict) else data
    found: dict[str, float] = {}
    for name in OBJECTIVE_FIGURES:
        for key in (f"final_eval_{name}", f"eval_{name}", name):
            value = next((float(e[key]) for e in reversed(history) if key in e), None)
            if value is not None:
                found[name] = value
                break
    return found


__all__ = [
    "electra_on",
    "wrap_objective",
    "model_to_save",
    "save_final",
    "pretrain_metrics",
    "objective_figures",
    "OBJECTIVE_FIGURES",
]
