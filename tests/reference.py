"""NumPy references written from the paper's definitions, independent of the package code."""
import numpy as np
from scipy.special import erf


def grap_weight_reference(n: int, d: int) -> np.ndarray:
    w = np.zeros((n, d))
    for i in range(n):
        for j in range(d):
            if int(np.floor(j * n / d)) == i:
                w[i, j] = n / d
    return w


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def gelu_grad(x):
    return 0.5 * (1.0 + erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def moe_per_token(x, gate_w, gate_b, w_in, b_in, w_out, b_out, relu_gate, upstream):
    """Top-1 MoE, one token at a time, no capacity limit: y_t = p_t[e] * FFN_e(x_t) with p = softmax(G),
    G = relu(W x + b) (LocMoE) or W x + b (Switch); experts tied at the top are ordered by W x + b.
    Returns y and the gradients of sum(y * upstream)."""
    grads = {k: np.zeros_like(v) for k, v in
             {"x": x, "gate_w": gate_w, "gate_b": gate_b, "w_in": w_in, "b_in": b_in, "w_out": w_out, "b_out": b_out}.items()}
    y = np.zeros_like(x)
    for t in range(x.shape[0]):
        z = gate_w @ x[t] + gate_b
        g = np.maximum(z, 0) if relu_gate else z
        p = softmax(g)
        tied = np.flatnonzero(g == g.max())
        e = int(tied[np.argmax(z[tied])])  # ties (GrAP's ReLU zeros) go to the largest pre-activation
        s = p[e]
        a = x[t] @ w_in[e] + b_in[e, 0]
        h = gelu(a)
        f = h @ w_out[e] + b_out[e, 0]
        y[t] = s * f
        r = upstream[t]
        # expert FFN
        df = s * r
        grads["w_out"][e] += np.outer(h, df)
        grads["b_out"][e, 0] += df
        da = (df @ w_out[e].T) * gelu_grad(a)
        grads["w_in"][e] += np.outer(x[t], da)
        grads["b_in"][e, 0] += da
        grads["x"][t] += da @ w_in[e].T
        # router score
        ds = r @ f
        dg = ds * s * ((np.arange(len(p)) == e) - p)
        dz = dg * (z > 0) if relu_gate else dg
        grads["gate_b"] += dz
        grads["gate_w"] += np.outer(dz, x[t])
        grads["x"][t] += gate_w.T @ dz
    return y, grads
