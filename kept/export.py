"""`kept export`: a run's pretrained model as a directory that transformers loads without KEPT.

``export_run(RUN_DIR, OUT, to="bert")`` writes ``OUT`` = a ``BertForMaskedLM`` (config.json of
model_type bert, model.safetensors), the tokenizer the model was trained with, and ``kept_export.json``
(where it came from, what was left out). The conversion itself is ``fusion.export``.

A model pretrained without fusion converts exactly (its knowledge layers never saw an entity, so they
computed BERT layers). A fusion model would lose the knowledge layers' entity path: refused unless
``text_only``, which exports the token side of every layer and records what was dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kept.errors import KeptError
from kept.rundir import atomic_dir, atomic_write_json, check_run_format, read_json, require, run_paths

#: ``--to`` value -> the transformers class written.
EXPORT_TARGETS: dict[str, str] = {"bert": "BertForMaskedLM"}
#: the record of an export in OUT; its presence also marks OUT as ours to replace on a re-export.
NOTE_FILE = "kept_export.json"
#: what transformers says when it meets model_type "kept" without ``import fusion``.
UNKNOWN_ARCHITECTURE = "does not recognize this architecture"
OUTSIDE_KEPT_FIX = (
    "`import fusion` before loading (it registers model_type 'kept' with the transformers Auto "
    "classes), or export a plain BERT copy: `kept export RUN_DIR --to bert OUT`"
)


@dataclass(frozen=True)
class ExportResult:
    out: Path
    architecture: str
    layers: int
    fusion: bool  # the model was pretrained with fusion (exported with --text-only)
    dropped: tuple[str, ...]  # one line per part left out
    note: str


def outside_kept_fix(error: BaseException) -> str | None:
    """The fix for a load that failed because transformers does not know model_type 'kept', else None."""
    return OUTSIDE_KEPT_FIX if UNKNOWN_ARCHITECTURE in str(error) else None


def trained_with_fusion(model_dir: Path, config: dict[str, Any]) -> bool:
    """Whether the model in ``model_dir`` was pretrained with fusion: ``kept pretrain``'s record says;
    for a directory without it, an entity table (saved beside the weights or sized in the config) does."""
    record = model_dir / "kept_pretrain.json"
    if record.is_file():
        fusion = read_json(record, "pretraining record").get("fusion")
        if isinstance(fusion, bool):
            return fusion
    from fusion import ENTITY_TABLE_FILE

    return (model_dir / ENTITY_TABLE_FILE).is_file() or int(config.get("entity_vocab_size") or 0) > 0


def _check_out(out: Path) -> None:
    """OUT may be new, empty, or an earlier export (replaced whole); anything else is the user's."""
    if not out.exists() or (out / NOTE_FILE).is_file() or (out.is_dir() and not any(out.iterdir())):
        return
    raise KeptError(
        "the output directory exists and is not an earlier kept export",
        where=out,
        fix="choose a new directory (an earlier export there would be replaced)",
    )


def export_run(run_dir: str | Path, out: str | Path, *, to: str = "bert", text_only: bool = False) -> ExportResult:
    """Write the run's ``model/`` to ``out`` as a transformers ``EXPORT_TARGETS[to]`` directory, atomically."""
    from kept import __version__

    paths, out = run_paths(run_dir), Path(out)
    if to not in EXPORT_TARGETS:
        raise KeptError(f"unknown export target {to!r}", where="--to", fix=f"use one of: {', '.join(EXPORT_TARGETS)}")
    check_run_format(paths.root)
    model_dir = paths.model
    config = read_json(
        require(model_dir / "config.json", "pretrained model (model/config.json)", "run `kept pretrain RUN_DIR` first"),
        "model config",
    )
    if config.get("model_type") == "bert" and to == "bert":
        return _copy_bert(model_dir, paths.tokenizer, out, config, __version__)
    if config.get("model_type") != "kept":
        raise KeptError(
            f"holds a '{config.get('model_type')}' model, not a kept model",
            where=model_dir / "config.json",
            fix="it is already a transformers model: load it directly",
        )
    fusion = trained_with_fusion(model_dir, config)
    if fusion and not text_only:
        raise KeptError(
            "the model was pretrained with fusion: a BERT export would drop the knowledge layers' "
            "entity path (entity attention and projections, entity table, dEA head)",
            where=model_dir,
            fix="pass --text-only to export its text path (the token side of every layer) anyway",
        )
    _check_out(out)

    from fusion import KeptForPreTraining
    from fusion.export import to_bert_for_masked_lm
    from kept.evaluate.common import quiet_from_pretrained
    from kept.tokenizer import load_run_tokenizer

    model = quiet_from_pretrained(KeptForPreTraining, str(model_dir)).eval()
    exported = to_bert_for_masked_lm(model)
    # the tokenizer saved beside the model is the one it was trained with (tokenizer/ may be newer)
    tokenizer = load_run_tokenizer(model_dir if (model_dir / "tokenizer_config.json").is_file() else paths.tokenizer)
    dropped = tuple(exported.dropped_summary())
    if fusion:
        note = (
            "text path only: the knowledge layers' entity path was dropped; the model computes what the KEPT "
            "model computes for text without linked entities"
        )
    else:
        note = (
            "pretrained without fusion: the knowledge layers computed plain BERT layers, so the logits are the "
            "KEPT model's; the parts left out were never used"
        )
    layers = int(exported.model.config.num_hidden_layers)
    record = {
        "format": "kept.export",
        "kept_version": __version__,
        "source": str(model_dir),
        "target": to,
        "architecture": EXPORT_TARGETS[to],
        "layers": layers,
        "t_layers": int(model.config.num_hidden_layers),
        "k_layers": int(model.config.num_knowledge_layers),
        "fusion": fusion,
        "text_only": bool(text_only),
        "note": note,
        "dropped": list(dropped),
        "dropped_tensors": {label: names for label, names in exported.dropped.items()},
    }
    with atomic_dir(out) as tmp:
        exported.model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / NOTE_FILE, record)
    return ExportResult(
        out=out, architecture=EXPORT_TARGETS[to], layers=layers, fusion=fusion, dropped=dropped, note=note
    )


def _copy_bert(model_dir: Path, tokenizer_dir: Path, out: Path, config: dict[str, Any], version: str) -> ExportResult:
    """A run whose model is already a ``BertForMaskedLM`` (``kept distill``'s student): loaded and saved again
    (so OUT holds exactly what transformers reads back), with the run's tokenizer and the export record."""
    from transformers import BertForMaskedLM

    from kept.evaluate.common import quiet_from_pretrained
    from kept.tokenizer import load_run_tokenizer

    _check_out(out)
    model = quiet_from_pretrained(BertForMaskedLM, str(model_dir)).eval()
    tokenizer = load_run_tokenizer(model_dir if (model_dir / "tokenizer_config.json").is_file() else tokenizer_dir)
    layers = int(config.get("num_hidden_layers") or model.config.num_hidden_layers)
    note = "already a BertForMaskedLM (e.g. a `kept distill` student): copied as it is, nothing dropped"
    record = {
        "format": "kept.export",
        "kept_version": version,
        "source": str(model_dir),
        "target": "bert",
        "architecture": EXPORT_TARGETS["bert"],
        "layers": layers,
        "fusion": False,
        "text_only": False,
        "note": note,
        "dropped": [],
        "dropped_tensors": {},
    }
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / NOTE_FILE, record)
    return ExportResult(
        out=out, architecture=EXPORT_TARGETS["bert"], layers=layers, fusion=False, dropped=(), note=note
    )


__all__ = [
    "EXPORT_TARGETS",
    "ExportResult",
    "NOTE_FILE",
    "OUTSIDE_KEPT_FIX",
    "export_run",
    "outside_kept_fix",
    "trained_with_fusion",
]
