"""The LM cross-entropy (and auto mode's vocabulary-parallel form of it) equals a float64 NumPy reference in value and
gradient, also for extreme logits."""
import numpy as np
import mindspore as ms
from mindspore import Tensor

import pytest

from locmoe_ms.model.loss import CrossEntropy, VocabParallelCrossEntropy


@pytest.mark.parametrize("cell", [CrossEntropy, VocabParallelCrossEntropy])
def test_cross_entropy_matches_numpy_value_and_gradient(cell):
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

    ce = cell()
    x, y = Tensor(logits.astype(np.float32)), Tensor(labels.astype(np.int32))
    value = float(ce(x, y).asnumpy())
    grad = ms.grad(ce)(x, y).asnumpy()
    assert np.isfinite(value) and abs(value - expected) <= 1e-4 * abs(expected)
    np.testing.assert_allclose(grad, grad_expected, atol=1e-7)


def test_vocabulary_parallel_form_picks_the_label_logit_exactly():
    """The one-hot product adds exact zeros: on CPU its loss equals CrossEntropy's gather, bit for bit here."""
    rng = np.random.default_rng(1)
    x = Tensor((rng.normal(size=(32, 512)) * 4).astype(np.float32))
    y = Tensor(rng.integers(0, 512, 32).astype(np.int32))
    assert VocabParallelCrossEntropy()(x, y).asnumpy().tobytes() == CrossEntropy()(x, y).asnumpy().tobytes()
