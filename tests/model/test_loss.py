"""The LM cross-entropy equals a float64 NumPy reference in value and gradient, also for extreme logits."""
import numpy as np
import mindspore as ms
from mindspore import Tensor

from locmoe_ms.model.loss import CrossEntropy


def test_cross_entropy_matches_numpy_value_and_gradient():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 1000)) * 30
    logits[5, 17] = 400.0  # far outside exp's float32 range before the max shift
    labels = rng.integers(0, 1000, 64)
    peak = logits.max(1, keepdims=True)
    probs = np.exp(logits - peak)
    probs /= probs.sum(1, keepdims=True)
    expected = (np.log(np.exp(logits - peak).sum(1)) + peak[:, 0] - logits[np.arange(64), labels]).mean()
    grad_expected = probs.copy()
    grad_expected[np.arange(64), labels] -= 1
    grad_expected /= 64

    ce = CrossEntropy()
    x, y = Tensor(logits.astype(np.float32)), Tensor(labels.astype(np.int32))
    value = float(ce(x, y).asnumpy())
    grad = ms.grad(ce)(x, y).asnumpy()
    assert np.isfinite(value) and abs(value - expected) <= 1e-4 * abs(expected)
    np.testing.assert_allclose(grad, grad_expected, atol=1e-7)
