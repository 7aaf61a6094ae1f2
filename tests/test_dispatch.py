"""Capacity: slots filled in token order per token group, overflow dropped exactly."""
import numpy as np
from mindspore import Tensor

from locmoe_ms.moe.capacity import expert_capacity
from locmoe_ms.moe.dispatch import Dispatcher


def test_capacity_formula():
    assert expert_capacity(2048, 1.25, 1, 8) == 320
    assert expert_capacity(100, 1.0, 2, 8) == 7  # ceil(100 / 16)
    assert expert_capacity(10, 0.1, 1, 8, min_capacity=4) == 4


def test_drops_exactly_the_tokens_past_capacity():
    # 2 token groups x 6 tokens, 3 experts, capacity 2
    index = np.array([0, 0, 0, 1, 2, 0,   1, 1, 1, 1, 2, 2], dtype=np.int32)
    d = Dispatcher(experts=3, groups=2, capacity=2)
    slot, kept, load = d.assign(Tensor(index))
    expected_kept = [1, 1, 0, 1, 1, 0,   1, 1, 0, 0, 1, 1]
    assert kept.asnumpy().tolist() == expected_kept
    assert load.asnumpy().tolist() == [4, 5, 3]
    # slot = e*(G*C) + g*C + position
    expected_slot = [0, 1, 12, 4, 8, 12,   6, 7, 12, 12, 10, 11]
    assert slot.asnumpy().tolist() == expected_slot

    x = np.arange(12, dtype=np.float32).reshape(12, 1) + 1
    buf = d.dispatch(Tensor(x), slot).asnumpy()
    assert buf.shape == (3, 4, 1)
    assert buf[:, :, 0].tolist() == [[1, 2, 0, 0], [4, 0, 7, 8], [5, 0, 11, 12]]
    out = d.combine(Tensor(buf * 10), slot, Tensor(np.full(12, 0.5, np.float32))).asnumpy()[:, 0]
    np.testing.assert_allclose(out, 5 * x[:, 0] * np.array(expected_kept))
