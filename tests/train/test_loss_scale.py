"""Loss scaling with MindSpore's scalers: skipped overflow steps, the dynamic scale's sequence, exact arithmetic."""
import math

import mindspore as ms
import numpy as np
import pytest

from locmoe_ms.job import build_training
from tests.conftest import small_config

SCALER_STATE = ("loss_scale", "loss_scale_counter")


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 200, (4, 17)).astype(np.int32), np.zeros(4, np.int32)


def _training(**train):
    ms.set_seed(0)
    return build_training(small_config(train=train))


def _state(training) -> dict:
    return {p.name: p.asnumpy().copy() for p in training.step.get_parameters()}


def test_an_injected_overflow_skips_the_step_and_halves_the_scale():
    training = _training(loss_scale="dynamic", loss_scale_value=1024.0, loss_scale_window=1000)
    tokens, domains = _batch()
    before = _state(training)
    outs = training.step(*training.inputs(tokens, domains, step=1))
    training.inject_overflow = frozenset({2})
    after_first = _state(training)
    assert float(outs[-1].asnumpy()) == 0.0 and float(outs[-2].asnumpy()) == 1024.0
    assert int(after_first["global_step"][0]) == 1 and int(after_first["loss_scale_counter"]) == 1

    outs = training.step(*training.inputs(tokens, domains, step=2))
    after = _state(training)
    assert float(outs[-1].asnumpy()) == 1.0, "the overflow was not detected"
    assert float(outs[-2].asnumpy()) == 1024.0  # the scale this step used
    assert float(after["loss_scale"]) == 512.0 and int(after["loss_scale_counter"]) == 0
    changed = [name for name in after if name not in SCALER_STATE
               and not np.array_equal(after[name], after_first[name])]
    assert changed == [], f"a skipped step changed {changed}"
    assert any(not np.array_equal(after_first[n], before[n]) for n in before if n.startswith("adam_m."))


def test_scaling_leaves_loss_and_update_exact():
    """A power-of-two scale multiplies and divides exactly: the same loss and the same weights after a step."""
    plain, scaled = _training(), _training(loss_scale="dynamic", loss_scale_value=2.0 ** 12)
    tokens, domains = _batch(1)
    a = plain.step(*plain.inputs(tokens, domains, 1))
    b = scaled.step(*scaled.inputs(tokens, domains, 1))
    assert float(a[0].asnumpy()) == pytest.approx(float(b[0].asnumpy()), rel=1e-6)
    pa, pb = _state(plain), _state(scaled)
    for name, value in pa.items():
        np.testing.assert_allclose(pb[name], value, rtol=2e-5, atol=1e-7, err_msg=name)


def expected_scales(steps: int, overflows: set, initial: float, factor: int, window: int):
    """(scale used, skipped) per step of a dynamic loss scaler, by hand: back off on overflow, grow after
    `window` finite steps in a row."""
    scale, good, out = initial, 0, []
    for step in range(1, steps + 1):
        out.append((scale, step in overflows))
        if step in overflows:
            scale, good = max(1.0, scale / factor), 0
        else:
            good += 1
            if good == window:
                scale, good = scale * factor, 0
    return out


def test_scale_sequence_of_a_run_equals_the_hand_computed_one():
    overflows = {2, 3, 7, 8, 9}
    training = _training(loss_scale="dynamic", loss_scale_value=8.0, loss_scale_factor=4, loss_scale_window=3,
                         inject_overflow_steps=sorted(overflows))
    got = []
    for step in range(1, 15):
        tokens, domains = _batch(step)
        outs = training.step(*training.inputs(tokens, domains, step))
        got.append((float(outs[-2].asnumpy()), bool(outs[-1].asnumpy() > 0.5)))
        assert math.isfinite(float(outs[0].asnumpy()))
    assert got == expected_scales(14, overflows, 8.0, 4, 3)
    assert int(_state(training)["global_step"][0]) == 14 - len(overflows)


def test_fixed_scale_skips_overflows_and_keeps_its_value():
    training = _training(loss_scale="fixed", loss_scale_value=256.0, inject_overflow_steps=[1])
    tokens, domains = _batch()
    outs = [training.step(*training.inputs(tokens, domains, s)) for s in (1, 2)]
    assert [(float(o[-2].asnumpy()), float(o[-1].asnumpy())) for o in outs] == [(256.0, 1.0), (256.0, 0.0)]
    assert int(_state(training)["global_step"][0]) == 1
