"""Token cross-entropy: max-shifted logsumexp forward, (softmax - onehot) / N backward.

MindSpore's CPU LogSoftmaxGrad is slow for a 50k vocabulary (about 0.3 s per step of the tiny config), and the fused
SparseSoftmaxCrossEntropyWithLogits once returned inf here on finite logits; this cell is stable by construction and
costs one softmax in the backward.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops


class CrossEntropy(nn.Cell):
    """mean_t (logsumexp(logits_t) - logits_t[label_t]); logits [N, V] float32, labels [N] int32."""

    def __init__(self):
        super().__init__()
        own_primitives(self)

    def construct(self, logits: Tensor, labels: Tensor) -> Tensor:
        peak = ops.stop_gradient(logits.max(axis=-1, keepdims=True))
        logsumexp = ops.log(ops.exp(self.shift(logits, peak)).sum(axis=-1)) + peak.reshape(-1)
        picked = self.pick(logits, 1, labels.reshape(-1, 1)).reshape(-1)
        return (logsumexp - picked).mean()

    def bprop(self, logits, labels, out, dout):
        rows = labels.shape[0]
        probs = ops.softmax(logits, axis=-1)
        index = ops.stack((ops.arange(rows, dtype=ms.int32), labels.astype(ms.int32)), axis=1)
        grad = ops.tensor_scatter_add(probs, index, ops.full((rows,), -1.0, dtype=probs.dtype))
        return grad * (dout / rows), ops.zeros_like(labels)


def own_primitives(cell: nn.Cell) -> None:
    """The primitives of CrossEntropy's forward (what `-` and ops.gather_elements call), owned so that auto-parallel
    can pin them over the token axis (autoparallel/apply.py PRIMITIVE_OPS); left to sharding propagation, every rank
    gathered the whole [tokens, vocabulary] logits."""
    cell.shift = ops.Sub()
    cell.pick = ops.GatherD()


class VocabParallelCrossEntropy(nn.Cell):
    """CrossEntropy's value over logits whose vocabulary axis auto mode splits over model parallel (PanGu-alpha's
    vocabulary-parallel head), with MindSpore's own backward pass: the row maximum and the sum of exponentials are
    reductions over the vocabulary (an AllReduce over mp each), and the label's logit is picked by a one-hot
    product and a sum instead of a gather, so no rank needs a whole row. The one-hot product adds exact zeros, so the
    picked value is the gathered one; the maximum is only a shift (it cancels)."""

    def __init__(self):
        super().__init__()
        self.row_max = ops.ReduceMax(keep_dims=True)
        self.shift = ops.Sub()
        self.exp = ops.Exp()
        self.row_sum = ops.ReduceSum(keep_dims=True)
        self.one_hot = ops.OneHot()
        self.pick = ops.Mul()
        self.pick_sum = ops.ReduceSum(keep_dims=True)
        self.on, self.off = Tensor(1.0, ms.float32), Tensor(0.0, ms.float32)
        self.log, self.add_peak, self.token_loss = ops.Log(), ops.Add(), ops.Sub()
        self.mean = ops.ReduceMean(keep_dims=False)

    def construct(self, logits: Tensor, labels: Tensor) -> Tensor:
        # per-token values stay [N, 1] and every op is owned, so auto mode keeps them split over the tokens as the
        # logits are (left to sharding propagation, the sums were gathered over data parallel for the mean)
        peak = ops.stop_gradient(self.row_max(logits, -1))
        logsumexp = self.add_peak(self.log(self.row_sum(self.exp(self.shift(logits, peak)), -1)), peak)
        hot = self.one_hot(labels.reshape(-1), logits.shape[-1], self.on, self.off)
        picked = self.pick_sum(self.pick(logits, hot), -1)
        return self.mean(self.token_loss(logsumexp, picked), ())