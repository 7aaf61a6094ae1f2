"""A cluster's hardware figures for the step-time model and the memory plan (model_configs/hardware/*.yaml).

Every entry is {value, source, confidence}; `value` is a number, or for algorithm_efficiency a mapping from
cluster size (devices) to a number with an optional `default`. Unknown sections or keys, missing values and
negative or zero bandwidths are UserInputErrors naming the file and the key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from locmoe_ms.errors import UserInputError
from locmoe_ms.paths import input_file

KINDS = ("same_device", "intra_node", "inter_node")  # the exchange's TRAFFIC_KINDS, in its order
SCHEMA = {
    "compute": ("peak_tflops", "efficiency"),
    "links": KINDS,
    "latency_us": KINDS,
    "algorithm_efficiency": ("all_to_all", "all_gather", "all_reduce"),
    "schedule": ("gradient_overlap",),
    "memory": ("hbm_gb", "usable_share", "hccl_buffer_mb"),
}
DEFAULT = Path(__file__).resolve().parents[2] / "model_configs" / "hardware" / "ascend910a.yaml"


@dataclass(frozen=True)
class Hardware:
    path: str
    peak_flops: float                 # FLOP/s per device
    efficiency: float
    bandwidth: tuple[float, ...]      # bytes/s per KINDS
    latency: tuple[float, ...]        # s per message, per KINDS
    algorithm_efficiency: dict        # operator -> {devices or "default": factor}
    gradient_overlap: float
    hbm_bytes: float                  # device memory (HBM) per device
    usable_share: float               # of it, what a training step may use
    hccl_buffer_bytes: float          # HCCL_BUFFSIZE: each communication group takes two of these
    sources: dict                     # "section.key" -> source text

    def op_efficiency(self, op: str, devices: int) -> float:
        table = self.algorithm_efficiency[op]
        return table.get(devices, table["default"])


def _number(path: Path, key: str, value, low: float, high: float = math.inf, open_low: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value > low if open_low else value >= low) or value > high:
        bound = f"> {low}" if open_low else f">= {low}"
        raise UserInputError(f"{path}: {key} = {value!r}: must be a number {bound}"
                             + ("" if high == math.inf else f" and <= {high}"))
    return float(value)


def load_hardware(path: str | Path | None = None) -> Hardware:
    """Read and check a hardware file (default: Ascend 910A)."""
    path = input_file(path or DEFAULT, "--hardware", "hardware file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserInputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{path}: expected sections {', '.join(SCHEMA)}")
    values, sources = {}, {}
    for section, entries in raw.items():
        if section not in SCHEMA:
            raise UserInputError(f"{path}: unknown section {section!r}; allowed: {', '.join(SCHEMA)}")
        if not isinstance(entries, dict):
            raise UserInputError(f"{path}: {section}: expected keys {', '.join(SCHEMA[section])}")
        for key, entry in entries.items():
            name = f"{section}.{key}"
            if key not in SCHEMA[section]:
                raise UserInputError(f"{path}: unknown key {name!r}; allowed in {section}: "
                                     f"{', '.join(SCHEMA[section])}")
            if not isinstance(entry, dict) or "value" not in entry or not entry.get("source"):
                raise UserInputError(f"{path}: {name}: expected {{value: ..., source: ...}} (every figure names "
                                     f"its source)")
            values[name], sources[name] = entry["value"], entry["source"]
    missing = [f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys if f"{s}.{k}" not in values]
    if missing:
        raise UserInputError(f"{path}: missing {', '.join(missing)}")
    efficiency = {op: _efficiency_table(path, f"algorithm_efficiency.{op}", values[f"algorithm_efficiency.{op}"])
                  for op in SCHEMA["algorithm_efficiency"]}
    return Hardware(
        str(path),
        peak_flops=_number(path, "compute.peak_tflops", values["compute.peak_tflops"], 0) * 1e12,
        efficiency=_number(path, "compute.efficiency", values["compute.efficiency"], 0, 1),
        bandwidth=tuple(_number(path, f"links.{k}", values[f"links.{k}"], 0) * 1e9 for k in KINDS),
        latency=tuple(_number(path, f"latency_us.{k}", values[f"latency_us.{k}"], 0, open_low=False) * 1e-6
                      for k in KINDS),
        algorithm_efficiency=efficiency,
        gradient_overlap=_number(path, "schedule.gradient_overlap", values["schedule.gradient_overlap"], 0, 1,
                                 open_low=False),
        hbm_bytes=_number(path, "memory.hbm_gb", values["memory.hbm_gb"], 0) * 1e9,
        usable_share=_number(path, "memory.usable_share", values["memory.usable_share"], 0, 1),
        hccl_buffer_bytes=_number(path, "memory.hccl_buffer_mb", values["memory.hccl_buffer_mb"], 0) * 2 ** 20,
        sources=sources)


def _efficiency_table(path: Path, key: str, value) -> dict:
    """A factor, or {devices: factor, ..., default: factor}."""
    table = value if isinstance(value, dict) else {"default": value}
    if "default" not in table:
        raise UserInputError(f"{path}: {key}: a table by cluster size needs a `default`")
    out = {}
    for size, factor in table.items():
        if size != "default" and (not isinstance(size, int) or size < 1):
            raise UserInputError(f"{path}: {key}: cluster size {size!r} must be a positive integer or `default`")
        out[size] = _number(path, f"{key}[{size}]", factor, 0, 1)
    return out
