"""docs/results/README.md from the suites' run directories: one section per suite, its tables, its plots, and the
paper's findings side by side with what the runs show."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean

import numpy as np

from locmoe_ms.config import config_from_dict
from locmoe_ms.experiments.analysis import (Run, all_experts_fed_from, last_step_single_expert, routing_summary,
                                            tail)
from locmoe_ms.experiments.suites import SUITES


def _fmt(value, spec: str = ".1f", none: str = "–") -> str:
    return none if value is None else format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(row) + " |" for row in rows]]


def by_arm(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by arm, in the suite's arm order (then any other), seeds ascending."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: r.seed):
        groups[run.arm].append(run)
    order = [a.name for s in SUITES.values() for a in s.arms]
    return dict(sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def reference_runs(name: str, group: list[Run], runs: list[Run]) -> dict[str, list[Run]]:
    """The other suites' runs that suite `name`'s tables and plots set beside its own (Suite.references, each
    SUITE/ARM), at the seeds `group` (that suite's runs) has."""
    seeds = {r.seed for r in group}
    out = {}
    for ref in SUITES[name].references if name in SUITES else ():
        suite_name, arm = ref.split("/")
        match = [r for r in runs if r.suite == suite_name and r.arm == arm and r.seed in seeds]
        if match:
            out[ref] = sorted(match, key=lambda r: r.seed)
    return out


def routing_row(arm: str, runs: list[Run]) -> list[str]:
    """arm, mean and per-seed final perplexity, last-quarter routing, steps until every expert gets tokens, end of
    the single-expert phase."""
    done = [r for r in runs if r.summary]
    ppl = [r.valid_ppl for r in done]
    stats = [routing_summary(r.records) for r in done]
    sparse = bool(done and done[0].records and done[0].records[0]["moe_layers"])
    first = [all_experts_fed_from(r.records) for r in done]
    single = [last_step_single_expert(r.records) for r in done]
    cell = (lambda key, spec: _fmt(mean(s[key] for s in stats), spec)) if stats and sparse else (lambda *_: "–")
    return [arm, _fmt(mean(ppl)) if ppl else "running", " / ".join(_fmt(p) for p in ppl) or "–",
            cell("dropped", ".1%"), cell("experts_used", ".1f"), cell("top_share", ".0%"),
            " / ".join(_fmt(f, "d", "never") for f in first) if sparse else "–",
            " / ".join(_fmt(s, "d", "none") for s in single) if sparse else "–"]


ROUTING_HEADER = ["arm", "valid ppl (mean)", "per seed", "dropped", "experts in use", "busiest expert",
                  "every expert fed from step", "last step with one expert > 50%"]
ROUTING_NOTE = ("Final validation perplexity (the default config's 8 validation batches); dropped share, experts "
                "receiving any token and the busiest expert's share of the tokens are means over the last quarter of "
                "the steps and both sparse layers. *Every expert fed from step*: the step from which on every expert "
                "of every sparse layer received tokens at every step (never: some expert is idle at the end). *Last step with one expert > 50%*: the end of the "
                "single-expert phase (none: never in it).")


def _locality_rows(runs: list[Run]) -> list[list[str]]:
    from locmoe_ms.planning.flops import capacity_of
    from locmoe_ms.planning.routing import step_fills
    from locmoe_ms.planning.step_model import cluster_exchange_bytes

    rows = []
    for arm, group in by_arm(runs).items():
        run = group[0]
        stats = routing_summary(run.records)
        cfg = config_from_dict(run.config)
        last = tail(run.records)
        inter = None
        if last and "tokens_per_group" in last[0]["moe_layers"][0]:
            capacity = capacity_of(cfg)
            inter = mean(float(sum(cluster_exchange_bytes(cfg, fill, count_aware=True)[:, 2].sum()
                                   for fill in step_fills(record, capacity))) for record in last)
        final = run.records[-1] if run.records and run.summary else {}
        domains = final.get("valid_ppl_by_domain", {})
        rows.append([arm, "domain-sharded" if cfg.data.node_domains else "i.i.d.",
                     f"{cfg.moe_config.locality_loss_factor:g}", _fmt(run.valid_ppl),
                     " / ".join(f"{name} {_fmt(p)}" for name, p in domains.items()) or "–",
                     _fmt(stats["local"], ".1%"), _fmt(None if inter is None else inter / 2 ** 20, ".2f"),
                     _fmt(stats["dropped"], ".1%")])
    return rows


def _capacity_rows(runs: list[Run]) -> list[list[str]]:
    rows = []
    for arm, group in by_arm(runs).items():
        run = group[0]
        stats = routing_summary(run.records)
        moe = run.config["moe_config"]
        rows.append([arm, moe["router"], f"{moe['capacity_factor']:g}", _fmt(run.valid_ppl),
                     _fmt(stats["dropped"], ".1%"), _fmt(stats["experts_used"], ".1f")])
    return rows


def write_report(runs: list[Run], output: Path, plots: dict[str, list[str]], notes: str | None,
                 plot_message: str | None) -> Path:
    """Write output/README.md; `plots` maps a suite to its PNG file names (in output), `notes` is prepended."""
    suites: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        suites[run.suite].append(run)
    lines = ["# LocMoE's findings at small scale", "",
             "Generated by `python tools/report.py docs/results/runs --output docs/results` from the run directories "
             "under `docs/results/runs/` (each with its `config.json`, `metrics.jsonl` and `summary.json`); the runs "
             "come from `python tools/experiments.py --suite SUITE`. All on the default config "
             "(`model_configs/tiny_cpu.yaml`: 4 layers, hidden 256, sparse layers 1 and 3, 8 experts on a virtual 2 "
             "nodes x 4 devices, batch 16 x 128 tokens of English Wikipedia intros) unless an arm says otherwise.", ""]
    machine = next((r.summary["machine"] for r in runs if r.summary), None)
    if machine:
        lines += [f"Machine: {machine['cpu']}, {machine['cores']} cores, MindSpore {machine['mindspore']}, NumPy "
                  f"{machine['numpy']}. Perplexities repeat bit for bit on one machine, not across machines.", ""]
    if plot_message:
        lines += [plot_message, ""]
    if notes:
        lines += [notes.strip(), ""]
    for name in ("routers", "health", "locality", "capacity"):
        if name not in suites:
            continue
        suite, group = SUITES[name], suites[name]
        steps = sorted({r.config["train"]["max_steps"] for r in group})
        lines += [f"## {name}", "", f"*{suite.question}* {len(group)} runs of {', '.join(map(str, steps))} steps "
                  f"({sum(1 for r in group if r.summary)} finished).", ""]
        if name in ("routers", "health"):
            rows = [routing_row(arm, g) for arm, g in by_arm(group).items()]
            rows += [routing_row(f"{ref} (reference)", match) for ref, match in
                     reference_runs(name, group, runs).items()]
            lines += [*_table(ROUTING_HEADER, rows), "", ROUTING_NOTE, ""]
        elif name == "locality":
            lines += [*_table(["arm", "data", "mu", "valid ppl", "per domain", "local share",
                               "inter-node MiB/step (count-aware)", "dropped"], _locality_rows(group)), "",
                      "Local share: tokens routed to an expert on their own node (4 of the 8 experts are local, so "
                      "0.5 is what a router blind to locality gives). Inter-node bytes: what the count-aware "
                      "exchange sends between nodes per step, both sparse layers, dispatch and combine, computed "
                      "from each step's tokens per (token group, expert) with the exchange's own byte functions, "
                      "over the last quarter of the steps. Per-domain perplexity: batches of that domain alone.", ""]
        elif name == "capacity":
            lines += [*_table(["arm", "router", "capacity factor", "valid ppl", "dropped", "experts in use"],
                              _capacity_rows(group)), ""]
            delta = output / "capacity_delta.md"
            if delta.exists():
                lines += [delta.read_text().strip(), ""]
            if (output / "capacity_delta.png").exists():
                lines += ["![capacity_delta.png](capacity_delta.png)", ""]
        lines += [f"![{p}]({p})" for p in plots.get(name, [])] + [""]
    path = output / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
