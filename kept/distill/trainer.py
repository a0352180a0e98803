"""The student with its projections (the module the Trainer trains) and the distillation Trainer.

:class:`DistillationModel` holds the student ``BertForMaskedLM`` and one learned linear projection per mapped
hidden state (embeddings + every student layer; identities when the widths are equal). Its ``forward`` takes a
masked batch plus the teacher's outputs on it and returns the weighted loss and each component, so that the
whole student step runs inside the module the Trainer (and DDP) wraps.

:func:`distillation_trainer` is a :class:`kept.trainer.KeptTrainer` subclass whose ``compute_loss`` runs the
teacher (eval mode, no gradients, entity inputs from the batch) and then the student; KeptTrainer logs the
components beside ``loss`` (``kd_loss``, ``hidden_loss``, ``attention_loss``, ``mlm_loss``; ``eval_``-prefixed in
evaluations), evaluates with ``eval_collate`` and on isolated RNG states.
Checkpoints hold the student and projections (tied weights saved once) and resume like pretraining's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from kept.distill.losses import attention_loss, hidden_loss, kd_loss

if TYPE_CHECKING:
    from transformers import BertForMaskedLM

    from fusion import KeptForPreTraining

#: The loss components, in the order they are logged.
COMPONENTS: tuple[str, ...] = ("kd_loss", "hidden_loss", "attention_loss", "mlm_loss")


class DistillationModel(nn.Module):
    """Student + projections; ``forward`` = the weighted distillation loss of one batch.

    ``mapped``: teacher layer (1-based) of each student layer; hidden state i of the student (0 = embeddings)
    is compared with teacher hidden state ``[0, *mapped][i]``, attention of student layer m with teacher
    layer ``mapped[m - 1]``.
    """

    def __init__(
        self,
        student: BertForMaskedLM,
        teacher_width: int,
        mapped: Sequence[int],
        weights: dict[str, float],
        temperature: float,
        attention_kind: str = "kl",
    ) -> None:
        super().__init__()
        self.student = student
        width = int(student.config.hidden_size)
        count = len(mapped) + 1
        self.projections = nn.ModuleList(
            nn.Linear(width, teacher_width) if width != teacher_width else nn.Identity() for _ in range(count)
        )
        self.mapped = [int(m) for m in mapped]
        self.weights = dict(weights)
        self.temperature = float(temperature)
        self.attention_kind = attention_kind
        self.config = student.config  # the Trainer reads a few fields (e.g. use_cache) when present
        #: names whose tensor another name already holds (the MLM decoder tied to the word embeddings): saved once,
        #: tied again after a resume (the Trainer reads this attribute)
        self._keys_to_ignore_on_save = shared_names(self.state_dict())
        if self.needs_attentions:  # eager BERT returns the attention after dropout: compare the distributions
            for module in student.modules():
                if type(module).__name__ == "BertSelfAttention":
                    cast(nn.Dropout, module.dropout).p = 0.0

    def tie_weights(self) -> None:
        self.student.tie_weights()

    @property
    def needs_hidden(self) -> bool:
        return self.weights.get("hidden_loss", 0.0) > 0

    @property
    def needs_attentions(self) -> bool:
        return self.weights.get("attention_loss", 0.0) > 0

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        teacher_logits: torch.Tensor,
        teacher_hidden: Sequence[torch.Tensor] | None = None,
        teacher_attentions: Sequence[torch.Tensor] | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """input_ids/attention_mask/labels [B, L]; teacher_logits [N, V] at the N positions where labels != -100;
        teacher_hidden: T + 1 states [B, L, Ht]; teacher_attentions: T maps [B, At, L, L]."""
        out = self.student.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=self.needs_hidden,
            output_attentions=self.needs_attentions,
        )
        select = labels != -100  # [B, L]
        logits = self.student.cls(out.last_hidden_state[select])  # [N, V]: the head runs on the masked positions
        parts: dict[str, torch.Tensor] = {}
        if self.weights.get("kd_loss", 0.0) > 0:
            parts["kd_loss"] = kd_loss(logits, teacher_logits, self.temperature)
        if self.needs_hidden and teacher_hidden is not None:
            targets = [teacher_hidden[0]] + [teacher_hidden[m] for m in self.mapped]
            losses = [
                hidden_loss(state, target, attention_mask, projection)
                for state, target, projection in zip(out.hidden_states, targets, self.projections)
            ]
            parts["hidden_loss"] = torch.stack(losses).mean()
        if self.needs_attentions and teacher_attentions is not None:
            losses = [
                attention_loss(att, teacher_attentions[m - 1], attention_mask, self.attention_kind)
                for att, m in zip(out.attentions, self.mapped)
            ]
            parts["attention_loss"] = torch.stack(losses).mean()
        if self.weights.get("mlm_loss", 0.0) > 0:
            gold = labels[select]  # [N]
            parts["mlm_loss"] = (
                nn.functional.cross_entropy(logits.float(), gold) if gold.numel() else logits.sum() * 0.0
            )
        # a tensor: parts is never empty (distill_run wants a weight > 0; teacher_outputs gives what each needs)
        loss = cast(torch.Tensor, sum(self.weights[name] * value for name, value in parts.items()))
        unused = [p for p in self.projections.parameters()] if "hidden_loss" not in parts else []
        if unused:  # DDP wants a gradient for every trainable parameter
            loss = loss + sum(p.sum() for p in unused) * 0.0
        return {"loss": loss, **{name: value.detach() for name, value in parts.items()}}


def shared_names(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of a state dict whose tensor shares its memory with an earlier name (tied weights)."""
    seen: set[tuple[int, int]] = set()
    shared = []
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
        if key in seen:
            shared.append(name)
        seen.add(key)
    return shared


@torch.no_grad()
def teacher_outputs(
    teacher: KeptForPreTraining, inputs: dict[str, torch.Tensor], hidden: bool, attentions: bool, fusion: bool
) -> dict[str, Any]:
    """The teacher's MLM logits at the masked positions [N, V], and its hidden states / attentions if asked."""
    kwargs = {
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"],
        "token_type_ids": inputs.get("token_type_ids"),
        "output_hidden_states": hidden,
        "output_attentions": attentions,
    }
    if fusion and inputs.get("entity_ids") is not None:
        kwargs["entity_ids"] = inputs["entity_ids"]
    out = teacher.kept(**kwargs)
    select = inputs["labels"] != -100  # [B, L]
    logits = teacher.cls.predictions(out.last_hidden_state[select])  # [N, V]
    return {
        "teacher_logits": logits.float(),
        "teacher_hidden": out.hidden_states if hidden else None,
        "teacher_attentions": out.attentions if attentions else None,
    }


def distillation_trainer(teacher: KeptForPreTraining, fusion: bool, eval_collate: Callable | None = None) -> type:
    """A ``transformers.Trainer`` class that distils ``teacher`` into the :class:`DistillationModel` it trains."""
    import safetensors.torch

    from kept.trainer import KeptTrainer

    class DistillationTrainer(KeptTrainer):
        logged_figures = COMPONENTS

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, eval_collator=eval_collate, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            core = self.accelerator.unwrap_model(model)
            if next(teacher.parameters()).device != inputs["input_ids"].device:
                teacher.to(inputs["input_ids"].device)
            targets = teacher_outputs(teacher, inputs, core.needs_hidden, core.needs_attentions, fusion)
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                labels=inputs["labels"],
                token_type_ids=inputs.get("token_type_ids"),
                **targets,
            )
            self._accumulate(bool(model.training), outputs, int(inputs["input_ids"].shape[0]))
            return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            """Student + projections as one safetensors file; a tensor shared by two names (the MLM decoder
            tied to the word embeddings) is written once (the Trainer's resume loads it non-strictly)."""
            import os

            output_dir = output_dir if output_dir is not None else self.args.output_dir
            if not self.args.should_save:
                return
            assert output_dir is not None  # distill_run always sets TrainingArguments.output_dir
            os.makedirs(output_dir, exist_ok=True)
            state = state_dict if state_dict is not None else self.accelerator.unwrap_model(self.model).state_dict()
            shared = set(shared_names(state))
            unique = {name: tensor.detach().contiguous() for name, tensor in state.items() if name not in shared}
            safetensors.torch.save_file(
                unique, os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"}
            )
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    return DistillationTrainer


__all__ = ["COMPONENTS", "DistillationModel", "distillation_trainer", "teacher_outputs"]
