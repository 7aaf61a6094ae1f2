"""What the report reads from a run directory (config.json, metrics.jsonl, summary.json) and the statistics it
derives: routing over the last quarter of the steps, when every expert first receives tokens, perplexity curves."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from locmoe_ms.errors import UserInputError

RUN_NAME = re.compile(r"(?P<arm>.+)-s(?P<seed>\d+)$")


@dataclass
class Run:
    suite: str
    arm: str
    seed: int
    path: Path
    config: dict
    records: list[dict]
    summary: dict | None   # None while the run is unfinished

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.arm}-s{self.seed}"

    @property
    def tokens_per_step(self) -> int:
        return self.config["train"]["batch_size"] * self.config["model"]["seq_length"]

    @property
    def valid_ppl(self) -> float | None:
        return None if self.summary is None else self.summary["valid_ppl"]


def read_run(path: Path) -> Run:
    match = RUN_NAME.match(path.name)
    if not match or not (path / "config.json").exists():
        raise UserInputError(f"{path}: not a run directory of tools/experiments.py (ARM-sSEED with config.json)")
    metrics = path / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] \
        if metrics.exists() else []
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").exists() else None
    return Run(path.parent.name, match["arm"], int(match["seed"]), path, json.loads((path / "config.json").read_text()),
               records, summary)


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Runs under each path: a run directory, a suite directory (holding runs) or a directory of suites."""
    runs = []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise UserInputError(f"{path}: no such directory (give run, suite or suites directories)")
        if (path / "config.json").exists():
            runs.append(read_run(path))
            continue
        found = sorted(p.parent for p in path.glob("config.json")) + sorted(p.parent for p in path.glob("*/config.json")) \
            + sorted(p.parent for p in path.glob("*/*/config.json"))
        if not found:
            raise UserInputError(f"{path}: holds no run (no ARM-sSEED/config.json below it)")
        runs += [read_run(p) for p in found]
    return runs


def tail(records: list[dict], fraction: float = 0.25) -> list[dict]:
    return records[-max(1, int(len(records) * fraction)):] if records else []


def routing_summary(records: list[dict]) -> dict:
    """Over the last quarter of the steps and every sparse layer: mean dropped share, share routed to an expert on
    the token's node, experts that got any token, and the busiest expert's share of the tokens."""
    layers = [layer for r in tail(records) for layer in r["moe_layers"]]
    if not layers:
        return {"dropped": 0.0, "local": 0.0, "experts_used": 0.0, "top_share": 0.0}
    loads = [np.asarray(layer["tokens_per_expert"], float) for layer in layers]
    return {
        "dropped": float(np.mean([layer["dropped_share"] for layer in layers])),
        "local": float(np.mean([layer["local_share"] for layer in layers])),
        "experts_used": float(np.mean([(load > 0).sum() for load in loads])),
        "top_share": float(np.mean([load.max() / max(load.sum(), 1.0) for load in loads])),
    }


def all_experts_fed_from(records: list[dict]) -> int | None:
    """The step from which on every expert of every sparse layer receives tokens at every logged step (None: some
    expert is idle at the last step, or there is no MoE layer)."""
    since = None
    for record in records:
        layers = record["moe_layers"]
        fed = bool(layers) and all(min(layer["tokens_per_expert"]) > 0 for layer in layers)
        since = (since or record["step"]) if fed else None
    return since


def last_step_single_expert(records: list[dict], share: float = 0.5) -> int | None:
    """The last step at which some sparse layer sent more than `share` of its tokens to one expert (None: never):
    the end of the single-expert phase, if the run left it."""
    last = None
    for record in records:
        for layer in record["moe_layers"]:
            load = np.asarray(layer["tokens_per_expert"], float)
            if load.sum() and load.max() / load.sum() > share:
                last = record["step"]
    return last


def valid_curve(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(tokens seen, validation perplexity) at every evaluation."""
    points = [(r["step"] * run.tokens_per_step, r["valid_ppl"]) for r in run.records if "valid_ppl" in r]
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def expert_loads(run: Run, layer: int) -> np.ndarray:
    """[steps, experts] share of layer `layer`'s tokens each expert received, per step."""
    loads = np.array([r["moe_layers"][layer]["tokens_per_expert"] for r in run.records], float)
    return loads / np.maximum(loads.sum(axis=1, keepdims=True), 1.0)


def dropped_curve(run: Run) -> np.ndarray:
    """[steps, layers] dropped share per step and sparse layer."""
    return np.array([[layer["dropped_share"] for layer in r["moe_layers"]] for r in run.records], float)
