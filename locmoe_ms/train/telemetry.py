"""Progress lines on stderr and one JSON object per step in metrics.jsonl."""
from __future__ import annotations

import json
import os
import platform
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


def machine() -> dict:
    """What a figure was measured on: losses and perplexities repeat bit for bit on one machine (a killed run resumes
    exactly), but another CPU model, core count or MindSpore/NumPy build sums floats in another order."""
    import mindspore
    import numpy

    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    return {"cpu": model, "cores": os.cpu_count(), "mindspore": mindspore.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "system": f"{platform.system()} {platform.machine()}"}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
