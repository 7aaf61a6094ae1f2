"""What a checkpoint holds: tensors, parameter counts (model only), router, experts, step, shard position."""
from __future__ import annotations

import json
from pathlib import Path

from locmoe_ms.ckpt import io
from locmoe_ms.parallel.layout import is_expert_parameter
from locmoe_ms.train import checkpoint


def summarize(path: Path) -> dict:
    """Everything `inspect` prints, as one JSON-ready dict."""
    params, meta = io.read(path)
    cfg = checkpoint.config_of(meta)
    model = {name: a for name, a in params.items() if io.is_model_parameter(name)}
    experts = {name: a for name, a in model.items() if is_expert_parameter(name)}
    moe = cfg.get("moe_config", {})
    return {
        "path": str(path),
        "format": io.format_of(path),
        "step": int(meta["step"]),
        "router": moe.get("router") if cfg.get("model", {}).get("sparse_layers") else None,
        "expert_num": moe.get("expert_num"),
        "sparse_layers": cfg.get("model", {}).get("sparse_layers"),
        "model_parameters": int(sum(a.size for a in model.values())),
        "expert_parameters": int(sum(a.size for a in experts.values())),
        "experts_held": int(next(iter(experts.values())).shape[0]) if experts else 0,
        "parameters_per_expert": int(sum(a.size // a.shape[0] for a in experts.values())),
        "optimizer_state": any(not io.is_model_parameter(name) for name in params),
        "shard": {key: meta[key] for key in io.WORLD_KEYS} if "rank" in meta else None,
        "metadata": {key: value for key, value in meta.items() if key != "config_json"},
        "tensors": [{"name": name, "shape": list(a.shape), "dtype": str(a.dtype)} for name, a in params.items()],
    }


def render(summary: dict, as_json: bool = False) -> str:
    if as_json:
        return json.dumps(summary)
    s = summary
    router = f"{s['router']}, {s['expert_num']} experts, sparse layers {s['sparse_layers']}" if s["router"] \
        else "none (dense model)"
    lines = [
        f"checkpoint  {s['path']} ({s['format']})",
        f"step        {s['step']}",
        f"router      {router}",
        f"parameters  {s['model_parameters']:,} in the model (optimizer moments not counted); experts "
        f"{s['expert_parameters']:,} = {s['experts_held']} held x {s['parameters_per_expert']:,} per expert "
        f"(all sparse layers)",
        f"optimizer   {'moments, global_step and learning rate included' if s['optimizer_state'] else 'none'}",
    ]
    if s["shard"]:
        sh = s["shard"]
        lines.append(f"shard       rank {sh['rank']} of {sh['world_size']} (expert-parallel rank "
                     f"{sh['expert_parallel_rank']}, tensor-parallel rank {sh['model_parallel_rank']})")
    lines.append("metadata    " + ", ".join(f"{k} {v}" for k, v in s["metadata"].items()))
    width = max((len(t["name"]) for t in s["tensors"]), default=4)
    lines += ["", f"{'name':<{width}}  {'shape':<16}  dtype"]
    lines += [f"{t['name']:<{width}}  {str(tuple(t['shape'])):<16}  {t['dtype']}" for t in s["tensors"]]
    return "\n".join(lines)
