"""The runs of a directory: which runs, which variant each is, where the shared data are."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kept import analysis
from kept.analysis.compare_summary import is_compare_dir
from kept.analysis.run import load_config
from kept.errors import KeptError


@dataclass
class RunSet:
    """What a directory holds: the data (corpus, KG, encoded) and the evaluated runs.

    ``runs``: label -> run directory with ``eval/metrics.json`` (label = variant, e.g.
    ``token`` or ``entity+fusion``, with ``/NAME`` added when a variant has several seeds);
    ``variants``: variant -> its run directories; ``compare``: compare/summary.json or None.
    """

    root: Path
    data_dir: Path | None
    runs: dict[str, Path] = field(default_factory=dict)
    variants: dict[str, list[Path]] = field(default_factory=dict)
    compare: dict[str, Any] | None = None
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> {"strategy", "fusion"}

    def baseline(self) -> str | None:
        """The label of the baseline run: no fusion, token masking preferred."""
        plain = [label for label, i in self.info.items() if not i.get("fusion")]
        if not plain:
            return None
        return next((label for label in plain if self.info[label].get("strategy") == "token"), plain[0])

    def knowledge(self) -> str | None:
        """The label of the knowledge run: fusion on (entity/ernie masking preferred), else the
        non-baseline run with knowledge masking."""
        baseline = self.baseline()
        others = [label for label in self.info if label != baseline]
        fused = [label for label in others if self.info[label].get("fusion")]
        pool = fused or [label for label in others if self.info[label].get("strategy") != "token"] or others
        if not pool:
            return None
        return next((label for label in pool if self.info[label].get("strategy") in ("entity", "ernie")), pool[0])

    def pick(self, which: str | Path | None, role: str = "baseline") -> tuple[str, Path] | None:
        """``(label, run_dir)`` for ``which`` (a run label, or a run directory); with None the
        default of ``role`` ("baseline" or "knowledge"); None when there is no such run."""
        if which is None:
            label = self.baseline() if role == "baseline" else self.knowledge()
            return (label, self.runs[label]) if label is not None else None
        if str(which) in self.runs:
            return str(which), self.runs[str(which)]
        path = Path(which).expanduser()
        if not path.is_absolute() and not path.exists():  # relative to the directory, or to its runs/
            path = next((p for p in (self.root / path, self.root / "runs" / path) if p.exists()), self.root / path)
        if (path / "eval" / "metrics.json").is_file():
            return path.name, path.resolve()
        raise KeptError(
            f"no evaluated run '{which}'",
            where=self.root,
            fix=f"give one of {', '.join(self.runs) or '(none)'} or a run directory with eval/metrics.json",
        )

    def describe(self) -> Any:
        """One row per evaluated run: label, directory, strategy, fusion."""
        import pandas as pd

        rows = [
            {
                "run": label,
                "directory": str(path),
                "strategy": self.info.get(label, {}).get("strategy"),
                "fusion": self.info.get(label, {}).get("fusion"),
            }
            for label, path in self.runs.items()
        ]
        return pd.DataFrame(rows, columns=["run", "directory", "strategy", "fusion"])


def _has_data(path: Path) -> bool:
    return (path / "corpus").is_dir() or (path / "kg" / "entities.tsv").is_file() or (path / "encoded").is_dir()


def _run_info(run_dir: Path) -> dict[str, Any]:
    try:
        model = analysis.load_metrics(run_dir).get("model", {})
        return {"strategy": model.get("strategy"), "fusion": bool(model.get("fusion"))}
    except KeptError:
        try:
            config = load_config(run_dir)
            return {
                "strategy": (config.get("masking") or {}).get("strategy"),
                "fusion": bool((config.get("model") or {}).get("fusion")),
            }
        except KeptError:
            return {}


#: What :func:`available` checks, as (name, path inside the run directory).
ARTIFACTS: tuple[tuple[str, str], ...] = (
    ("config", "config.yaml"),
    ("documents", "corpus/documents.jsonl"),
    ("annotations", "corpus/annotated"),
    ("annotation_stats", "corpus/annotation_stats.json"),
    ("kg", "kg/entities.tsv"),
    ("aliases", "kg/aliases.tsv"),
    ("embeddings", "kg/embeddings.safetensors"),
    ("kg_metrics", "kg/kg_metrics.json"),
    ("tokenizer", "tokenizer"),
    ("encoded", "encoded/validation"),
    ("model", "model/config.json"),
    ("metrics", "eval/metrics.json"),
)


def available(run_dir: str | Path | None) -> dict[str, bool]:
    """Which artifacts a run directory holds: ``{"annotations": True, "kg_metrics": False, ...}``
    (see :data:`ARTIFACTS`); all False for None."""
    if run_dir is None:
        return {name: False for name, _ in ARTIFACTS}
    root = Path(run_dir)
    return {name: (root / relative).exists() for name, relative in ARTIFACTS}


def open_runs(path: str | Path) -> RunSet:
    """Resolve a run directory or a compare directory (``kept compare``, ``kept demo``: ``prepared/`` +
    ``runs/*`` + ``compare/summary.json``) into a :class:`RunSet` (KeptError if it does not exist)."""
    from kept.compare import variant_name

    root = Path(path).expanduser()
    if not root.is_dir():
        raise KeptError(
            "run directory not found",
            where=root,
            fix="run `kept demo` (writes runs/demo), or set KEPT_RUN_DIR / RUN_DIR to a run directory",
        )
    root = root.resolve()
    compare = analysis.load_compare(root) if is_compare_dir(root) else None
    variants: dict[str, list[Path]] = {}
    if compare is not None:
        for variant, run_dirs in compare.get("runs", {}).items():
            for run in run_dirs:
                run_path = Path(run) if Path(run).is_absolute() else root / run
                if (run_path / "eval" / "metrics.json").is_file():
                    variants.setdefault(variant, []).append(run_path)
    else:  # a single run, or a compare directory whose summary is not written yet (its runs/*)
        candidates = [root] if (root / "eval" / "metrics.json").is_file() else []
        runs_folder = root / "runs"
        if runs_folder.is_dir():
            candidates += sorted(p for p in runs_folder.iterdir() if (p / "eval" / "metrics.json").is_file())
        for run_path in candidates:
            found = _run_info(run_path)
            name = variant_name(found.get("strategy") or run_path.name, bool(found.get("fusion")))
            variants.setdefault(name, []).append(run_path)
    runs: dict[str, Path] = {}
    info: dict[str, dict[str, Any]] = {}
    for variant, run_dirs in variants.items():
        for run_path in run_dirs:
            label = variant if len(run_dirs) == 1 else f"{variant}/{run_path.name}"
            runs[label] = run_path
            info[label] = _run_info(run_path)
    data_candidates = [root, root / "prepared", *runs.values()]
    data_dir = next((p for p in data_candidates if p.is_dir() and _has_data(p)), None)
    return RunSet(root=root, data_dir=data_dir, runs=runs, variants=variants, compare=compare, info=info)
