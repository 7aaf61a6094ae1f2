#!/usr/bin/env python3
"""Write docs/results/README.md (tables) and PNG plots from the run directories of tools/experiments.py.

    python tools/report.py docs/results/runs --output docs/results [--notes docs/results/notes.md]

Plots need matplotlib (pip install -e .[plot]); without it the report still writes its tables and says so.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from locmoe_ms.errors import ArgumentParser, exits_on_bad_input  # noqa: E402
from locmoe_ms.experiments.analysis import find_runs  # noqa: E402
from locmoe_ms.experiments.report import reference_runs, write_report  # noqa: E402
from locmoe_ms.paths import input_file, output_dir  # noqa: E402


def make_plots(runs, output: Path) -> dict[str, list[str]]:
    """Every suite's PNGs in `output`; returns their names per suite."""
    from locmoe_ms.experiments import plots

    made: dict[str, list[str]] = {}
    suites = sorted({r.suite for r in runs})
    for suite in suites:
        group = [r for r in runs if r.suite == suite]
        group += [r for refs in reference_runs(suite, group, runs).values() for r in refs]
        names = []
        if suite in ("routers", "health"):
            for kind, draw in (("perplexity", plots.perplexity), ("expert_load", plots.expert_load),
                               ("dropped", plots.dropped)):
                draw(group, output / f"{suite}_{kind}.png", f"{suite}: {kind.replace('_', ' ')}")
                names.append(f"{suite}_{kind}.png")
        elif suite == "locality":
            plots.sweep(group, output / "locality.png", ("moe_config", "locality_loss_factor"),
                        ("data", "node_domains"), "locality loss factor mu", "mu",
                        names={"[]": "i.i.d.", "[0, 1]": "domain-sharded"})
            names.append("locality.png")
        elif suite == "capacity":
            plots.sweep(group, output / "capacity.png", ("moe_config", "capacity_factor"), ("moe_config", "router"),
                        "capacity factor", "capacity factor")
            names.append("capacity.png")
        made[suite] = [n for n in names if (output / n).exists()]
    return made


@exits_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run, suite or suites directories")
    parser.add_argument("--output", default="docs/results", help="where README.md and the PNGs go")
    parser.add_argument("--notes", help="a Markdown file placed after the report's header (findings in words)")
    args = parser.parse_args(argv)
    runs = find_runs(args.runs)
    notes = input_file(args.notes, "--notes").read_text(encoding="utf-8") if args.notes else None
    out = output_dir(args.output, "--output")
    out.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib  # noqa: F401
        plots, message = make_plots(runs, out), None
    except ImportError:
        plots, message = {}, "Plots skipped: matplotlib is not installed (pip install -e .[plot])."
        print(message, file=sys.stderr)
    path = write_report(runs, out, plots, notes, message)
    print(f"wrote {path} ({len(runs)} runs, {sum(len(v) for v in plots.values())} plots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
