"""Multi-head attention (Vaswani et al.), with Keras 3's weight layout and arguments.

forward (per head h; q, k, v are (batch, time, features)):
    Q = q·W_Q + b_Q,  K = k·W_K + b_K,  V = v·W_V + b_V                 (batch, time, heads, dim)
    S = Q·Kᵀ / √key_dim,  masked entries −1e9;   A = softmax(S) over the key axis
    O = A·V;   y = Σ_h O_h·W_O[h] + b_O
backward runs the same chain in reverse: through the output projection, A·V, the softmax
(dS = A ⊙ (dA − Σ dA ⊙ A)), the scaled scores, and the three input projections.
"""
import math

import numpy as np

from .. import initializers as _initializers
from ..engine import backend
from ..engine.layer import Layer
from ..engine.registry import register


@register("layers")
class MultiHeadAttention(Layer):
    """``MultiHeadAttention(num_heads, key_dim)(query, value, key=None, attention_mask=None)``.

    ``attention_mask`` is boolean (batch, T_query, T_key): True where a query may attend to a key."""

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, output_shape=None,
                 attention_axes=None, kernel_initializer="glorot_uniform", bias_initializer="zeros", seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        if attention_axes not in (None, (1,), [1], 1):
            raise ValueError("MultiHeadAttention supports attention over the time axis only (attention_axes=None).")
        self.num_heads, self.key_dim = int(num_heads), int(key_dim)
        self.value_dim = int(value_dim) if value_dim else self.key_dim
        self.dropout, self.use_bias, self.seed = float(dropout), bool(use_bias), seed
        self.output_dim = output_shape if output_shape is None or isinstance(output_shape, int) else output_shape[-1]
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)

    def __call__(self, query, value=None, key=None, attention_mask=None, training=False, **kwargs):
        unsupported = {k: v for k, v in kwargs.items() if v not in (None, False)}
        if unsupported:
            raise ValueError(f"MultiHeadAttention '{self.name}' does not support {sorted(unsupported)} in glassnet; "
                             "pass a boolean attention_mask (batch, T_query, T_key) instead, e.g. a causal "
                             "np.tril(np.ones((T, T), bool)) broadcast over the batch.")
        if isinstance(query, (list, tuple)) and value is None:  # already packed (e.g. from a config)
            return super().__call__(query, training=training)
        if value is None:
            raise ValueError(f"MultiHeadAttention '{self.name}' needs a value: call it as mha(query, value), e.g. "
                             "mha(x, x) for self-attention.")
        inputs = [query, value, value if key is None else key]
        if attention_mask is not None:
            inputs.append(attention_mask)
        return super().__call__(inputs, training=training)

    def build(self, input_shapes):
        q_shape, v_shape, k_shape = (tuple(s) for s in input_shapes[:3])
        if len(q_shape) != 3 or len(v_shape) != 3:
            raise ValueError(f"MultiHeadAttention '{self.name}' expects (batch, time, features) inputs, got query "
                             f"{q_shape} and value {v_shape}.")
        H, dk, dv = self.num_heads, self.key_dim, self.value_dim
        out = self.output_dim or q_shape[-1]

        def dense(name, shape, bias_shape):
            kernel = self.add_weight(f"{name}/kernel", shape, self.kernel_initializer)
            bias = self.add_weight(f"{name}/bias", bias_shape, self.bias_initializer) if self.use_bias else None
            return kernel, bias

        self.wq, self.bq = dense("query", (q_shape[-1], H, dk), (H, dk))
        self.wk, self.bk = dense("key", (k_shape[-1], H, dk), (H, dk))
        self.wv, self.bv = dense("value", (v_shape[-1], H, dv), (H, dv))
        self.wo, self.bo = dense("attention_output", (H, dv, out), (out,))

    def compute_output_shape(self, input_shapes):
        q_shape = tuple(input_shapes[0])
        return q_shape[:-1] + (self.output_dim or q_shape[-1],)

    def _project(self, x, w, b):
        y = np.einsum("ntd,dhk->nthk", x, w.value)
        return y + b.value if b is not None else y

    def forward(self, inputs, training=False):
        q, v, k = inputs[:3]
        mask = inputs[3] if len(inputs) > 3 else None
        Q, K, V = self._project(q, self.wq, self.bq), self._project(k, self.wk, self.bk), self._project(v, self.wv,
                                                                                                      self.bv)
        scale = 1.0 / math.sqrt(self.key_dim)
        scores = np.einsum("nthk,nshk->nhts", Q, K) * scale
        if mask is not None:
            allowed = np.asarray(mask, bool)[:, None, :, :]
            scores = np.where(allowed, scores, -1e9)
        scores = scores - scores.max(axis=-1, keepdims=True)
        A = np.exp(scores)
        A /= A.sum(axis=-1, keepdims=True)
        drop = None
        if training and self.dropout > 0:
            rng = np.random.default_rng(self.seed) if self.seed is not None else backend.rng()
            drop = (rng.random(A.shape) >= self.dropout) / (1.0 - self.dropout)
        Ad = A * drop if drop is not None else A
        O = np.einsum("nhts,nshv->nthv", Ad, V)
        y = np.einsum("nthv,hvo->nto", O, self.wo.value)
        if self.bo is not None:
            y = y + self.bo.value

        def backward(dy):
            self.wo.grad += np.einsum("nthv,nto->hvo", O, dy)
            if self.bo is not None:
                self.bo.grad += dy.sum(axis=(0, 1))
            dO = np.einsum("nto,hvo->nthv", dy, self.wo.value)
            dAd = np.einsum("nthv,nshv->nhts", dO, V)
            dV = np.einsum("nhts,nthv->nshv", Ad, dO)
            dA = dAd * drop if drop is not None else dAd
            dS = A * (dA - (dA * A).sum(axis=-1, keepdims=True))
            if mask is not None:
                dS = np.where(allowed, dS, 0)
            dS *= scale
            dQ = np.einsum("nhts,nshk->nthk", dS, K)
            dK = np.einsum("nhts,nthk->nshk", dS, Q)
            grads = []
            for x, dP, w, b in ((q, dQ, self.wq, self.bq), (v, dV, self.wv, self.bv), (k, dK, self.wk, self.bk)):
                w.grad += np.einsum("ntd,nthk->dhk", x, dP)
                if b is not None:
                    b.grad += dP.sum(axis=(0, 1))
                grads.append(np.einsum("nthk,dhk->ntd", dP, w.value))
            return grads + ([None] if mask is not None else [])

        self.last_attention_scores = A
        return y, backward

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, key_dim=self.key_dim, value_dim=self.value_dim, dropout=self.dropout,
                      use_bias=self.use_bias, output_shape=self.output_dim, seed=self.seed,
                      kernel_initializer=_initializers.serialize(self.kernel_initializer),
                      bias_initializer=_initializers.serialize(self.bias_initializer))
        return config
