"""`kept distill`: a plain BERT student learns a KEPT run's (fusion) model, for deployment without the KG.

    >>> from kept.config import load_run_config
    >>> from kept.distill import distill_run
    >>> config = load_run_config("runs/demo", {"distill.student": "small", "distill.max_steps": 500})
    >>> result = distill_run("runs/demo", config, "runs/demo-small")
    >>> result.metrics["student"]["mlm_accuracy"], result.metrics["speed"]["speedup"]

Modules: :mod:`~kept.distill.losses` (KD, hidden-state, attention losses; the layer map),
:mod:`~kept.distill.student` (teacher loading, student presets and BERT directories),
:mod:`~kept.distill.trainer` (the student + projections module and the Trainer subclass),
:mod:`~kept.distill.report` (teacher vs student: quality and speed), :mod:`~kept.distill.run` (the recipe).
"""

from kept.distill.losses import attention_loss, hidden_loss, kd_loss, layer_map
from kept.distill.run import DistillResult, distill_run
from kept.distill.student import STUDENT_PRESETS

__all__ = ["DistillResult", "STUDENT_PRESETS", "attention_loss", "distill_run", "hidden_loss", "kd_loss", "layer_map"]
