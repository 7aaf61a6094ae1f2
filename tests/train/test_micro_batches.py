"""Gradient accumulation (train.micro_batches): k micro-batches of b sequences make the same loss and update as one
batch of k * b, with and without loss scaling; the config rules name the micro-batch."""
from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest

from locmoe_ms.config import ConfigError
from locmoe_ms.job import build_training
from tests.conftest import small_config


def _one_step(micro_batches: int, loss_scale: str):
    """One train step of a hash-routed model (no auxiliary loss, a capacity that drops nothing: nothing couples
    the micro-batches) on a fixed batch of 8 sequences; (outputs, parameters after the update)."""
    cfg = small_config("hash", moe_config={"capacity_factor": 8.0},
                       train={"batch_size": 8, "micro_batches": micro_batches, "loss_scale": loss_scale})
    ms.set_seed(cfg.train.seed)  # the same initial weights for both
    training = build_training(cfg)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.model.vocab_size, (8, cfg.model.seq_length + 1)).astype(np.int32)
    domains = np.zeros(8, np.int32)
    outs = [o.asnumpy() for o in training.step(*training.inputs(tokens, domains, 1))]
    return outs, {p.name: p.asnumpy() for p in training.step.optimizer.parameters}


@pytest.mark.parametrize("loss_scale", ["none", "dynamic"])
def test_two_micro_batches_update_as_one_batch(loss_scale):
    whole, after_whole = _one_step(1, loss_scale)
    micro, after_micro = _one_step(2, loss_scale)
    assert micro[0] == pytest.approx(whole[0], rel=1e-6)          # the step's mean loss
    assert micro[1] == pytest.approx(whole[1], rel=1e-6)          # its LM loss
    # tokens per expert, summed over the micro-batches (a token group holds other rows in each micro-batch)
    np.testing.assert_array_equal(micro[4].sum(axis=1), whole[4].sum(axis=1))
    assert float(micro[-1]) == float(whole[-1]) == 0.0            # not skipped
    for name, value in after_whole.items():
        np.testing.assert_allclose(after_micro[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_micro_batch_rules_name_the_micro_batch():
    with pytest.raises(ConfigError, match=r"^train.micro_batches = 3: must divide train.batch_size \(8\)$"):
        small_config(train={"batch_size": 8, "micro_batches": 3})
    with pytest.raises(ConfigError, match=r"^train.batch_size = 8: batch_size / micro_batches \(2\) must be "
                                          r"divisible by parallel_config.data_parallel \(4\)$"):
        small_config(train={"batch_size": 8, "micro_batches": 4})
