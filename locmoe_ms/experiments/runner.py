"""Run one arm of a suite as its own locmoe-train process, resuming where an interrupted run stopped."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from locmoe_ms.config import load_config
from locmoe_ms.errors import UserInputError

TRAIN = "import sys; from locmoe_ms.cli import train_main; sys.exit(train_main(sys.argv[1:]))"


def arm_overrides(common: tuple[str, ...], arm_overrides: tuple[str, ...], seed: int, steps: int | None,
                  extra: list[str]) -> list[str]:
    """The --set overrides of one run, in order of precedence (later wins): suite-wide, the arm's, seed and steps,
    then the user's."""
    out = [*common, *arm_overrides, f"train.seed={seed}"]
    if steps is not None:
        out.append(f"train.max_steps={steps}")
    return out + list(extra)


def state(run_dir: Path) -> str:
    """done (summary.json written), partial (checkpoints to resume from) or new."""
    if (run_dir / "summary.json").exists():
        return "done"
    if any((run_dir / "checkpoints").glob("*.ckpt")):
        return "partial"
    return "new"


def check_same_run(run_dir: Path, config: str, overrides: list[str]) -> None:
    """A run directory holds the run of exactly these overrides: an earlier invocation with other settings (steps,
    seeds, extra --set) must not be mixed into this suite's results."""
    saved = run_dir / "config.json"
    if not saved.exists():
        return
    wanted = load_config(config, overrides).to_dict()
    had = json.loads(saved.read_text())
    changed = sorted(f"{section}.{key}" for section, values in wanted.items() for key, value in values.items()
                     if had.get(section, {}).get(key, value) != value)
    if changed:
        raise UserInputError(f"{run_dir}: holds a run with other settings ({', '.join(changed[:4])}); remove it or "
                             f"choose another --output-dir")


def train_run(root: Path, config: str, run_dir: Path, overrides: list[str]) -> None:
    """Train (or resume) one run; its progress goes to stderr. Stopping this process stops the run, which resumes
    from its last checkpoint next time."""
    args = ["--config", config, "--output-dir", str(run_dir), *[a for o in overrides for a in ("--set", o)]]
    if state(run_dir) == "partial":
        args.append("--resume")
    child = subprocess.Popen([sys.executable, "-c", TRAIN, *args], cwd=root, stdout=sys.stderr)

    def stop(signum, _frame):
        child.terminate()
        child.wait(timeout=60)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
        raise RuntimeError(f"{run_dir}: locmoe-train exited with {code}; see its output above")
