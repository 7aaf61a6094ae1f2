"""The per-device memory plan: its activation formulas against a hand count, its static bytes against a real CPU
checkpoint, and locmoe-check-config's --memory output and refusal. (Against the compiled Ascend layouts:
tests/autoparallel/test_ascend_dryrun.py.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from locmoe_ms.config import load_config
from locmoe_ms.model.network import model_shapes
from locmoe_ms.planning.memory import activation_terms, parameter_slices, static_bytes
from tests.conftest import small_config

ROOT = Path(__file__).resolve().parents[2]
CHECK = [sys.executable, "-m", "locmoe_ms", "check-config"]
PANGU_64N = str(ROOT / "model_configs" / "pangu_sigma_64n.yaml")


def test_activation_terms_equal_a_hand_count_for_pangu_64n():
    """pangu_sigma_64n: batch 256 in 16 micro-batches, a micro-batch of 16 over dp 8 = 2 sequences of 1024 per
    device, h 5120, f 20480 (ffn_hidden_size), 40 heads, mp 8, 16 experts, ep 8, capacity 160 per (group, expert),
    40 blocks of which 8 sparse, recompute on, vocabulary 50304 split over mp (auto mode), the expert path in
    float16."""
    cfg = load_config(PANGU_64N)
    assert (cfg.train.batch_size, cfg.train.micro_batches, cfg.model.ffn_hidden_size, cfg.model.num_layers) == (
        256, 16, 20480, 40)
    t, h, f, heads, s = 2048, 5120, 20480, 40, 1024
    c, e = 160, 16
    attention = t * h + 6 * (t * h // 8) + 2 * 2 * (heads // 8) * s * s + 2 * (t * h // 8) + t * h
    # float32: LayerNorm, router logits and probabilities, combine; float16 (compute_dtype): the cast input,
    # dispatch, All-to-All, All-Gather, experts' w_in and activation, w_out, the return's All-to-All and All-Gather
    sparse = (t * h + 2 * t * e + t * h) * 4 + (t * h + e * c * h + e * c * h // 8 + e * c * h + 2 * (e * c * f // 8)
                                                + e * c * h + e * c * h // 8 + e * c * h) * 2
    assert cfg.model.compute_dtype == "float16"
    assert activation_terms(cfg) == {
        "block inputs": 41 * t * h * 4,                  # 40 blocks and the query layer
        "block working set": attention * 4 + sparse,     # a sparse block is the largest
        "logits and cross-entropy": 3 * t * (50304 // 8) * 4,
    }
    assert activation_terms(cfg)["block inputs"] == 1_719_664_640


def test_cpu_checkpoint_holds_the_planned_weight_and_moment_bytes(tmp_path):
    """One process (explicit mode, no split): the plan's weights + moments are the bytes of the model parameters
    and AdamWeightDecay moments a real checkpoint stores."""
    from locmoe_ms.model.network import build_model
    from locmoe_ms.train import checkpoint
    from locmoe_ms.train.optim import build_optimizer
    from locmoe_ms.train.step import TrainStep

    cfg = small_config()
    net = build_model(cfg)
    step = TrainStep(net, build_optimizer(net.trainable_params(), cfg.train), cfg.train)
    path = checkpoint.save(step, tmp_path, 1, {}, keep=1)
    params, _ = checkpoint.load(path)
    stored = sum(a.nbytes for n, a in params.items() if n.startswith(("adam_m.", "adam_v.")) or
                 checkpoint.is_model_parameter(n))
    full, trainable = model_shapes(cfg)
    plan = static_bytes(parameter_slices(cfg, full), trainable)
    assert plan.weights + plan.moments == stored
    assert plan.gradients == sum(np.prod(p.shape) * 4 for p in net.trainable_params())


def test_check_config_prints_the_plan_and_refuses_what_does_not_fit():
    unsharded = ["--set", "parallel_config.optimizer_shard=false"]  # the shipped config before it fitted
    run = subprocess.run([*CHECK, PANGU_64N, "--memory", "--rank", "63", *unsharded], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "rank 63 of 64" in run.stdout and "does not fit" in run.stdout
    assert "weights 7.464 GB, gradients 7.464 GB, optimizer moments 14.929 GB" in run.stdout
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    # 33.4: the hand count above (its float16 expert path: 158 MB below float32's 33.56 GB)
    assert lines[0].startswith(f"error: {PANGU_64N}: needs 33.4 GB per device (weights 7.5, gradients 7.5, "
                               f"optimizer 14.9,")
    assert "of 28.8 usable on ascend910a; set parallel_config.optimizer_shard=true, a smaller" in lines[0]
    sharded = subprocess.run([*CHECK, PANGU_64N, "--memory"], capture_output=True, text=True, timeout=120)
    assert sharded.returncode == 0 and "fits" in sharded.stdout, sharded.stderr


def test_ascend_target_checks_memory_and_a_cpu_run_is_not_planned():
    refused = subprocess.run([*CHECK, PANGU_64N, "--quiet", "--set", "parallel_config.optimizer_shard=false"],
                             capture_output=True, text=True, timeout=120)  # its train.device_target is ascend
    assert refused.returncode == 2 and refused.stdout == "" and "needs 33.4 GB per device" in refused.stderr
    tiny = str(ROOT / "model_configs" / "tiny_cpu.yaml")  # device_target auto: a CPU run is not planned
    cpu = subprocess.run([*CHECK, tiny, "--quiet", "--set", "train.batch_size=100000"], capture_output=True,
                         text=True, timeout=120)
    assert (cpu.returncode, cpu.stdout, cpu.stderr) == (0, "", "")
    assert subprocess.run([*CHECK, tiny, "--quiet", "--set", "train.batch_size=100000", "--set",
                           "train.device_target=ascend"], capture_output=True, timeout=120).returncode == 2
