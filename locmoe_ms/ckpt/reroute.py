"""Switch a trained sparse model to another router: experts and everything else kept bit-exact.

The old router's parameters and their optimizer moments are dropped; the new router's are those a fresh model of
the new config starts with (its moments zero, as a fresh optimizer's), so the result resumes like the input.
"""
from __future__ import annotations

from pathlib import Path

from locmoe_ms.ckpt import io
from locmoe_ms.ckpt.fresh import fresh_parameters, is_router_parameter
from locmoe_ms.config import Config, apply_overrides, config_from_dict
from locmoe_ms.errors import UserInputError


def rerouted_config(cfg: Config, router: str, overrides: list[str] | None = None) -> Config:
    raw = cfg.to_dict()
    raw["moe_config"]["router"] = router
    try:
        return config_from_dict(apply_overrides(raw, overrides or []))
    except UserInputError as err:
        raise UserInputError(f"the rerouted config is invalid: {err}") from None


def reroute(path: Path, router: str, overrides: list[str] | None = None) -> tuple[io.Params, dict]:
    """(parameters with the new router's, metadata with the new config; valid_ppl dropped)."""
    params, meta = io.read(path)
    cfg = io.config_of(path, meta)
    if "rank" in meta:
        raise UserInputError(f"{path}: is a per-rank shard (rank {meta['rank']}); merge the shards first")
    if not cfg.model.sparse_layers:
        raise UserInputError(f"{path}: a dense model (model.sparse_layers = []) has no router to switch")
    if router == cfg.moe_config.router:
        raise UserInputError(f"--router {router}: {path} already uses router {router}")
    new = rerouted_config(cfg, router, overrides)
    optimizer_state = any(not io.is_model_parameter(name) for name in params)
    fresh = fresh_parameters(new, optimizer=optimizer_state)
    out = {name: array for name, array in params.items() if not is_router_parameter(name)}
    out.update({name: array for name, array in fresh.items() if is_router_parameter(name)})
    for name, init in fresh.items():
        if name not in out or out[name].shape != init.shape:
            raise UserInputError(f"{path}: {name} does not fit the rerouted config (shape "
                                 f"{out[name].shape if name in out else 'missing'}, needs {init.shape}); "
                                 f"reroute changes the router only")
    kept = {k: v for k, v in meta.items() if k != "valid_ppl"}
    return out, {**kept, "config_json": io.config_json(new)}
