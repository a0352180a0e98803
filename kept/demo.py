"""`kept demo`: a packaged `kept compare` configuration, run on the CPU in minutes.

The demos are compare YAMLs shipped in the package, ``kept/demos/LANG-MODEL.yaml`` (``en-minilm``: continued
pretraining of the packaged MiniLM-L6 checkpoint, ``en-tiny``: the tiny preset from scratch). A demo is
run by :func:`kept.compare.run_compare` like any compare configuration, in the compare layout
(``OUT/prepared``, ``OUT/runs/*``, ``OUT/compare/summary.json``), plus ``OUT/eval/report.md``; the
configuration it used is written to ``OUT/demo.yaml`` (``kept compare OUT/demo.yaml`` re-runs it).
Adding a language is one YAML file per model in kept/demos/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from kept.errors import KeptError

#: The models a demo comes in (``--model``); the first is the default.
DEMO_MODELS: tuple[str, ...] = ("minilm", "tiny")


def packaged_demos() -> dict[tuple[str, str], Path]:
    """``(lang, model) -> path`` of every demo configuration shipped in kept/demos/."""
    folder = resources.files("kept").joinpath("demos")
    found = {}
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".yaml") and "-" in name:
            lang, model = name[: -len(".yaml")].split("-", 1)
            found[(lang, model)] = Path(str(entry))
    return dict(sorted(found.items()))


def default_model(lang: str) -> str:
    """The model a language's demo uses when ``--model`` is not given: minilm, else the first it ships."""
    shipped = [model for (code, model) in packaged_demos() if code == lang]
    return next((m for m in DEMO_MODELS if m in shipped), DEMO_MODELS[0])


def demo_config_path(lang: str = "en", model: str | None = None) -> Path:
    """The packaged compare YAML of a demo (KeptError naming the choices when there is none);
    ``model`` None: :func:`default_model`."""
    model = model or default_model(lang)
    if model not in DEMO_MODELS:
        raise KeptError(f"unknown demo model '{model}'", where="--model", fix=f"choose from {', '.join(DEMO_MODELS)}")
    demos = packaged_demos()
    if (lang, model) not in demos:
        shipped = ", ".join(f"--lang {a} --model {b}" for a, b in demos)
        raise KeptError(
            f"no packaged demo for --lang {lang} --model {model} yet",
            where="--lang",
            fix=f"choose from {shipped} (a demo is added as kept/demos/{lang}-{model}.yaml)",
        )
    return demos[(lang, model)]


def fewrel_file() -> Path | None:
    """FewRel's NYT set beside the checkout, when present (relation classification in the demo)."""
    candidates = [
        Path.cwd().parent / "shared" / "data" / "fewrel" / "val_nyt.json",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "fewrel" / "val_nyt.json",
    ]
    return next((c for c in candidates if c.is_file()), None)


def _pair(key: str, value: Any) -> str:
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def demo_overrides(
    *, documents: int | None = None, steps: int | None = None, kg_epochs: int | None = None, relation: bool = True
) -> list[str]:
    """``KEY=VALUE`` overrides of the packaged configuration for the demo's options (None: as packaged)."""
    pairs = {"data.max_documents": documents, "kg.epochs": kg_epochs}
    if steps is not None:
        pairs.update(
            {"train.max_steps": steps, "train.eval_steps": max(steps // 4, 1), "train.save_steps": max(steps // 4, 1)}
        )
    if not relation:
        pairs["eval.relation.enabled"] = False
    return [_pair(key, value) for key, value in pairs.items() if value is not None]


def load_demo(out: str | Path, *, lang: str = "en", model: str | None = None, overrides: Sequence[str] = ()) -> Any:
    """The demo's :class:`kept.compare.ComparePlan` writing into ``out``. Relation classification reads FewRel
    NYT beside the checkout when the configuration names no data, and is off when there is none."""
    from kept.compare import load_compare_config

    path = demo_config_path(lang, model)
    overrides = list(overrides)
    plan = load_compare_config(path, overrides)
    relation = plan.base.eval.relation
    if relation.enabled and relation.data is None:
        fewrel = fewrel_file()
        extra = _pair("eval.relation.data", str(fewrel)) if fewrel else _pair("eval.relation.enabled", False)
        plan = load_compare_config(path, [extra, *overrides])  # the user's --set still wins
    plan.out = Path(out)
    return plan


def write_demo_config(plan: Any, path: Path, lang: str, model: str) -> Path:
    """The configuration a demo ran with, as a compare YAML (``kept compare PATH`` runs it again)."""
    import yaml

    from kept.rundir import atomic_write_text

    data = plan.base.to_dict()
    data["name"] = plan.base.name
    data["compare"] = {
        **plan.section.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
        "out": str(plan.out.resolve()),
    }
    header = f"# kept demo --lang {lang} --model {model}: the configuration it ran with (kept compare THIS_FILE)\n"
    return atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def run_demo(
    out: str | Path,
    *,
    lang: str = "en",
    model: str | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
) -> dict[str, Any]:
    """Run a packaged demo into ``out``: ``{"result": CompareResult, "plan", "report": Path, "seconds"}``."""
    from kept.compare import run_compare
    from kept.report import report_compare_dir

    started = time.time()
    plan = load_demo(out, lang=lang, model=model, overrides=overrides)
    plan.out.mkdir(parents=True, exist_ok=True)
    write_demo_config(plan, plan.out / "demo.yaml", lang, model or default_model(lang))
    result = run_compare(plan, progress=progress)
    report = report_compare_dir(plan.out)
    return {"result": result, "plan": plan, "report": report, "seconds": time.time() - started}
