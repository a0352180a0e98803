"""The README's Python tour runs as written (keeps the README true)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _tour_source() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API in one page", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "README: the 'Python API in one page' section has no python block"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_tour_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(_tour_source(), "README.md (Python API in one page)", "exec"), namespace)  # noqa: S102
    out = namespace["out"]
    assert float(out.loss) > 0 and float(out.dea_loss) > 0  # type: ignore[attr-defined]
    assert (tmp_path / "embeddings.safetensors").exists()
    spans = namespace["spans"]
    assert [s["entity_id"] >= 0 for doc in spans for s in doc] == [True] * 4  # type: ignore[attr-defined]
