"""The device of this process: Ascend or CPU (train.device_target), the NPU id from the launcher, execution mode
and seed."""
from __future__ import annotations

import os

import mindspore as ms

from locmoe_ms.config import Config, ConfigError
from locmoe_ms.errors import UserInputError


def resolve_device(choice: str) -> str:
    """train.device_target -> MindSpore's device name: auto is Ascend when MindSpore's Ascend plugin loaded."""
    from mindspore._c_expression import MSContext

    ascend = MSContext.get_instance().is_pkg_support_device("Ascend")
    if choice == "ascend" and not ascend:
        reason = MSContext.get_instance().load_plugin_error().strip().splitlines()
        raise ConfigError(f"train.device_target = 'ascend': MindSpore cannot use Ascend on this machine"
                          f"{' (' + reason[0][:120] + ')' if reason else ''}; use cpu or auto")
    return "Ascend" if choice == "ascend" or (choice == "auto" and ascend) else "CPU"


def device_id() -> int:
    """The NPU of this rank: DEVICE_ID from the launcher's environment (0 when unset)."""
    text = os.environ.get("DEVICE_ID", "0")
    if not text.isdigit() or int(text) > 4095:
        raise UserInputError(f"DEVICE_ID = {text!r}: must be an integer 0..4095 (the launchers export it)")
    return int(text)


def set_context(cfg: Config) -> str:
    """Device, execution mode and seed for this process; returns the device ("Ascend" or "CPU")."""
    target = resolve_device(cfg.train.device_target)
    if target == "CPU" and cfg.model.compute_dtype != "float32":
        raise ConfigError(f"model.compute_dtype = {cfg.model.compute_dtype!r}: float16/bfloat16 matmuls need Ascend "
                          f"and this run is on CPU (train.device_target = {cfg.train.device_target!r}); pass "
                          f"--set model.compute_dtype=float32")
    if target == "Ascend":
        ms.set_device("Ascend", device_id())
    else:
        ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE if cfg.train.mode == "graph" else ms.PYNATIVE_MODE)
    ms.set_seed(cfg.train.seed)
    return target
