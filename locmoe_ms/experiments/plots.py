"""The report's PNG plots (matplotlib, the optional `plot` extra). Each function writes one file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from locmoe_ms.experiments.analysis import Run, dropped_curve, expert_loads, routing_summary, valid_curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(run: Run) -> str:
    return run.key.split("/", 1)[1]


def _colors(runs: list[Run]) -> dict[str, str]:
    arms = list(dict.fromkeys(r.arm for r in runs))
    return {arm: f"C{i % 10}" for i, arm in enumerate(arms)}


def perplexity(runs: list[Run], path: Path, title: str) -> None:
    """Validation perplexity against tokens seen; seed 0 solid, other seeds dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=90)
    colors = _colors(runs)
    for run in runs:
        tokens, ppl = valid_curve(run)
        if len(tokens):
            ax.plot(tokens / 1e6, ppl, color=colors[run.arm], linestyle="-" if run.seed == 0 else "--",
                    marker=".", label=_label(run))
    ax.set(xlabel="training tokens (millions)", ylabel="validation perplexity", yscale="log", title=title)
    from matplotlib.ticker import LogLocator, ScalarFormatter

    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(plt.NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def expert_load(runs: list[Run], path: Path, title: str) -> None:
    """Per run (rows) and sparse layer (columns), each expert's share of the layer's tokens over the steps."""
    runs = [r for r in runs if r.records and r.records[0]["moe_layers"]]
    if not runs:
        return
    plt = _pyplot()
    layers = len(runs[0].records[0]["moe_layers"])
    height = 1.05 * len(runs) + 0.8
    fig, axes = plt.subplots(len(runs), layers, figsize=(3.2 * layers + 1.6, height), dpi=90, squeeze=False,
                             sharex=True)
    fig.subplots_adjust(left=0.24, right=0.86, top=1 - 0.6 / height, bottom=0.45 / height, hspace=0.3)
    image = None
    for row, run in enumerate(runs):
        for layer in range(layers):
            ax = axes[row][layer]
            loads = expert_loads(run, layer)
            image = ax.imshow(loads.T, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest",
                              extent=(0.5, len(loads) + 0.5, loads.shape[1] - 0.5, -0.5))
            ax.set_yticks([0, loads.shape[1] - 1])
            if layer == 0:
                ax.set_ylabel(_label(run), fontsize=7, rotation=0, ha="right", va="center")
            if row == 0:
                ax.set_title(f"block {run.config['model']['sparse_layers'][layer]} (sparse): expert", fontsize=8)
            if row == len(runs) - 1:
                ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=axes, shrink=0.6, label="share of tokens")
    fig.suptitle(title, fontsize=9, y=1 - 0.15 / height)
    fig.savefig(path)
    plt.close(fig)


def dropped(runs: list[Run], path: Path, title: str) -> None:
    """Dropped share (mean over sparse layers, 10-step moving average) against steps."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=90)
    colors = _colors(runs)
    for run in runs:
        curve = dropped_curve(run)
        if curve.size == 0 or curve.shape[1] == 0:
            continue
        share = np.convolve(curve.mean(axis=1), np.ones(10) / 10, mode="valid")
        ax.plot(np.arange(len(share)) + 10, share, color=colors[run.arm], linestyle="-" if run.seed == 0 else "--",
                label=_label(run))
    ax.set(xlabel="step", ylabel="dropped share", ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def sweep(runs: list[Run], path: Path, x_key: tuple[str, str], series_key: tuple[str, str], title: str,
          x_label: str, names: dict[str, str] | None = None) -> None:
    """Validation perplexity, dropped share and local share against one config value, one line per series (named
    by `names` where given)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.2), dpi=90)
    series: dict[str, list[tuple[float, Run]]] = {}
    for run in runs:
        if run.summary:
            value = str(run.config[series_key[0]][series_key[1]])
            name = (names or {}).get(value, value)
            series.setdefault(name, []).append((float(run.config[x_key[0]][x_key[1]]), run))
    for name, points in series.items():
        points.sort(key=lambda p: p[0])
        xs = [p[0] for p in points]
        stats = [routing_summary(p[1].records) for p in points]
        axes[0].plot(xs, [p[1].valid_ppl for p in points], marker="o", label=name)
        axes[1].plot(xs, [s["dropped"] for s in stats], marker="o", label=name)
        axes[2].plot(xs, [s["local"] for s in stats], marker="o", label=name)
    for ax, label in zip(axes, ("validation perplexity", "dropped share", "local share")):
        ax.set(xlabel=x_label, ylabel=label)
        ax.grid(alpha=0.3)
        if x_key[1] == "locality_loss_factor":
            ax.set_xscale("symlog", linthresh=0.01)
    if series:
        axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def distributions(values: dict[str, np.ndarray], path: Path, mark: float) -> None:
    """Histograms of the routed cosine (tools/measure_delta.py), the paper's delta marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=90)
    for name, cos in values.items():
        ax.hist(cos, bins=60, histtype="step", density=True, label=name)
    ax.axvline(mark, color="k", linestyle=":", label=f"paper's delta {mark}")
    ax.set(xlabel="cos(token, GrAP row of its expert)", ylabel="density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
