"""``LoadReport``: what a loader read, kept and skipped (with the first few line numbers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_LINES_KEPT = 5


@dataclass
class LoadReport:
    """Counts of a load. Skipped rows keep the first ``MAX_LINES_KEPT`` line numbers per reason."""

    path: str = ""
    rows: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_lines: dict[str, list[int]] = field(default_factory=dict)

    def skip(self, reason: str, line: int) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        lines = self.skipped_lines.setdefault(reason, [])
        if len(lines) < MAX_LINES_KEPT:
            lines.append(line)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def merge(self, other: LoadReport) -> LoadReport:
        merged = LoadReport(path=self.path or other.path, rows=self.rows + other.rows, kept=self.kept + other.kept)
        for report in (self, other):
            for reason, count in report.skipped.items():
                merged.skipped[reason] = merged.skipped.get(reason, 0) + count
                lines = merged.skipped_lines.setdefault(reason, [])
                lines.extend(report.skipped_lines.get(reason, [])[: MAX_LINES_KEPT - len(lines)])
        return merged

    def summary(self) -> str:
        text = f"{self.path}: {self.rows} rows, {self.kept} kept"
        for reason, count in self.skipped.items():
            lines = ", ".join(str(n) for n in self.skipped_lines.get(reason, []))
            more = ", ..." if count > len(self.skipped_lines.get(reason, [])) else ""
            text += f"; {count} skipped ({reason}; lines {lines}{more})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "kept": self.kept,
            "skipped": dict(self.skipped),
            "skipped_lines": {k: list(v) for k, v in self.skipped_lines.items()},
        }
