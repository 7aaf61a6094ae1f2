#!/usr/bin/env python3
"""Train the same model with each router on equal footing and print their validation perplexity side by side.

Every router gets the same config, data order, seed and number of steps (one locmoe-train process each, so no
compiled state is shared); the table gives the final validation perplexity, its ratio to the first router's, the
unigram perplexity of the same split, and the routing statistics averaged over the last quarter of the steps:
dropped share, share routed to an expert on the token's node, and how many experts got any token. Perplexities
repeat bit for bit for a given config on one machine, not across machines (another CPU model, core count or
MindSpore/NumPy build adds floats in another order: 188.7 here was 192.3 on another machine), so the table names the
machine; tokens/s is machine noise and not compared.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from locmoe_ms.config import ROUTER_GATES, load_config  # noqa: E402
from locmoe_ms.errors import ArgumentParser, UserInputError, exits_on_bad_input  # noqa: E402
from locmoe_ms.experiments.analysis import routing_summary  # noqa: E402
from locmoe_ms.paths import output_dir, output_file  # noqa: E402


def train_router(config: str, router: str, steps: int, out: Path, overrides: list[str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    args = ["--config", config, "--router", router, "--max-steps", str(steps), "--output-dir", str(out),
            *[a for o in overrides for a in ("--set", o)], "--set", f"train.eval_every={steps}"]
    code = "import sys; from locmoe_ms.cli import train_main; sys.exit(train_main(sys.argv[1:]))"
    print(f"training {router} ({steps} steps) -> {out}", file=sys.stderr, flush=True)
    run = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, stdout=sys.stderr)  # stdout: the table
    if run.returncode != 0:
        raise SystemExit(f"error: training with router {router} failed (exit {run.returncode}); see above")
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"router": router, "valid_ppl": summary["valid_ppl"], "unigram": summary["unigram_valid_ppl"],
            "machine": summary["machine"], **routing_summary(records)}


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="compare_routers.py", description=__doc__)
    parser.add_argument("--config", default=str(ROOT / "model_configs" / "tiny_cpu.yaml"))
    parser.add_argument("--routers", default="locmoe,switch,hash,rre", help="comma-separated; the first is the "
                        "reference of the ratio column")
    parser.add_argument("--steps", type=int, default=150, help="training steps per router")
    parser.add_argument("--output-dir", default="runs/compare_routers", help="one subdirectory per router")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    args = parser.parse_args(argv)
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    unknown = [r for r in routers if r not in ROUTER_GATES]
    if unknown or not routers:
        raise UserInputError(f"--routers {args.routers}: each must be one of {', '.join(ROUTER_GATES)}")
    if args.steps < 1:
        raise UserInputError(f"--steps {args.steps}: must be >= 1")
    load_config(args.config, args.overrides)  # bad config or override: one line before any training starts
    out = output_dir(args.output_dir, "--output-dir")
    if args.json:
        output_file(args.json, "--json")
    if any(out.glob("*/checkpoints/*.ckpt")):
        raise UserInputError(f"--output-dir {out}: holds runs already; choose another directory")
    rows = [train_router(args.config, r, args.steps, out / r, args.overrides) for r in routers]
    reference = rows[0]["valid_ppl"]
    print(f"{args.steps} steps each, config {args.config}; unigram perplexity of the split {rows[0]['unigram']:.1f}")
    print(f"{'router':8} {'valid ppl':>10} {'ratio':>7} {'/unigram':>9} {'dropped':>8} {'local':>6} {'experts used':>13}")
    for row in rows:
        print(f"{row['router']:8} {row['valid_ppl']:10.1f} {row['valid_ppl'] / reference:7.3f} "
              f"{row['valid_ppl'] / row['unigram']:9.3f} {row['dropped']:8.1%} {row['local']:6.1%} "
              f"{row['experts_used']:13.1f}")
    m = rows[0]["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, MindSpore {m['mindspore']}, NumPy {m['numpy']} (perplexities "
          f"repeat on this machine, not across machines)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
