"""Progress lines on stderr and one JSON object per step in metrics.jsonl."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class MetricsLog:
    """Appends JSON lines; on resume, lines past the resumed step are dropped so the file never repeats a step."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class Progress:
    """`step 40/300 | loss 6.123 | 1234 tok/s | ETA 3m12s`, every `every` steps."""

    def __init__(self, total: int, every: int, start_step: int = 0):
        self.total = total
        self.every = every
        self.start = time.perf_counter()
        self.start_step = start_step

    def show(self, step: int, loss: float, tokens_per_s: float, extra: str = "") -> None:
        if step % self.every and step != self.total:
            return
        done = step - self.start_step
        rate = (time.perf_counter() - self.start) / max(done, 1)
        eta = int(rate * (self.total - step))
        print(f"step {step}/{self.total} | loss {loss:.4f} | {tokens_per_s:,.0f} tok/s | "
              f"ETA {eta // 60}m{eta % 60:02d}s{extra}", file=sys.stderr, flush=True)
