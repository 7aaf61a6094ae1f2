"""MindSpore on CPU in GRAPH mode (the default users run), quiet logs, a small config factory."""
import os
import socket

os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
import pytest  # noqa: E402

from locmoe_ms.config import config_from_dict  # noqa: E402

ms.set_device("CPU")
ms.set_context(mode=ms.GRAPH_MODE)


def small_config(router: str = "locmoe", **sections):
    """A tiny valid config: 2 nodes x 2 devices, 4 experts, expert_parallel 4; sections override keys."""
    raw = {
        "model": {"hidden_size": 32, "num_heads": 2, "ffn_hidden_size": 64, "vocab_size": 200, "seq_length": 16,
                  "num_layers": 2, "sparse_layers": [1]},
        "moe_config": {"expert_num": 4, "router": router},
        "parallel_config": {"nodes": 2, "devices_per_node": 2, "data_parallel": 4, "expert_parallel": 4},
        "train": {"batch_size": 4, "warmup_steps": 0, "max_steps": 10},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def free_port() -> int:
    """A TCP port the kernel has just found free (msrun's master port in the multi-process tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
