"""What changed between two run configurations, in the keys that shape training (checked when resuming).

:func:`training_view` flattens the sections of :data:`TRAINING_SECTIONS` to dotted keys (:func:`flatten`),
less the bookkeeping keys of :data:`NON_TRAINING_KEYS`; :func:`changed_keys` lists the keys that differ.
:mod:`kept.config` re-exports these names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kept.config import RunConfig

#: Train fields that do not change what is learned (allowed to differ when resuming).
NON_TRAINING_KEYS: frozenset[str] = frozenset(
    {
        "train.eval_steps",
        "train.save_steps",
        "train.logging_steps",
        "train.save_total_limit",
        "train.eval_batch_size",
        "train.dataloader_num_workers",
        "train.use_cpu",
        "train.bf16",
        "train.final_eval_max_examples",
        "train.report_to",
        "encode.num_proc",
    }
)
#: Sections whose values shape training (compared when resuming from a checkpoint).
TRAINING_SECTIONS: tuple[str, ...] = ("tokenizer", "encode", "masking", "model", "train")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        if not data and prefix:
            out[prefix[:-1]] = {}
        return out
    return {prefix[:-1]: data}


def training_view(config: RunConfig | dict[str, Any]) -> dict[str, Any]:
    """The flattened keys of a configuration that change what pretraining learns."""
    data = config if isinstance(config, dict) else config.to_dict()
    flat = flatten({section: data.get(section, {}) for section in TRAINING_SECTIONS})
    return {key: value for key, value in flat.items() if key not in NON_TRAINING_KEYS}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two flattened mappings (added/removed included)."""
    return sorted(key for key in set(old) | set(new) if old.get(key, "<unset>") != new.get(key, "<unset>"))
