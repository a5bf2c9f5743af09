"""Shared CLI output helpers: JSON, progress lines on stderr."""

from __future__ import annotations

import json
import sys
import time


def print_json(data) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


class ProgressPrinter:
    """Prints `stage done/total` lines to stderr: when a stage starts (done 0) and ends, and at most
    a few a second between. A stage of total 1 or less is only named."""

    def __init__(self, label: str, *, interval: float = 0.5) -> None:
        self.label = label
        self.interval = interval
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if 0 < done < total and now - self._last < self.interval:
            return
        self._last = now
        counts = f" {done:,}/{total:,} {100 * done / total:5.1f}%" if total > 1 else ""
        print(f"  {self.label}: {stage}{counts}", file=sys.stderr, flush=True)
