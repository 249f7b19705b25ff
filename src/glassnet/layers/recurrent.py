"""Recurrent layers: SimpleRNN, LSTM, GRU, and the Bidirectional wrapper.

Each layer is a *cell* — the math of one time step, forward and backward, side by side — run over the
sequence by one shared loop (``_Recurrent.forward``). The loop, in textbook order:

    forward:  xz = x·W + b                     every step's input projection at once, (N, T, G·u)
              for t in 0 … T−1 (T−1 … 0 with go_backwards):
                  s_t = cell(xz_t, s_{t−1})    s = [h] (SimpleRNN, GRU) or [h, c] (LSTM)
                  masked step: s_t = s_{t−1}   (the state is carried over unchanged)
    backward: backpropagation through time: the same steps in reverse, each cell's backward turning
              ∂J/∂s_t into ∂J/∂xz_t and ∂J/∂s_{t−1}; then dW += Σ xᵀ·dxz, db += Σ dxz, dx = dxz·Wᵀ.

Weight names, shapes and gate orders are Keras 3's, so weights move between the two unchanged:
    kernel (in, G·u), recurrent_kernel (u, G·u), bias (G·u,) — GRU(reset_after=True): bias (2, 3u),
    row 0 the input bias, row 1 the recurrent bias.   Gates: LSTM i, f, c, o;  GRU z, r, h.

Masks follow Keras 3: a masked step keeps the previous state, and its output is the previous output
(``zero_output_for_mask=False``, the default) or zeros (``zero_output_for_mask=True``; Bidirectional
sets this when it returns sequences). With ``go_backwards=True`` the sequence output is in processing
order, i.e. reversed in time, as in Keras.

``return_state=True`` makes the output a list ``[output, *final_states]`` (Keras 3 returns a tuple) and
``backward`` then takes a list of the same length (``None`` for an output without gradient). This works
for direct calls (``layer(x)``, ``layer.forward(x)``); a ``Sequential`` model passes one array from
layer to layer and cannot carry the extra states. Gradients with respect to ``initial_state`` are not
returned: ``backward`` returns dx only.
"""
import numpy as np

from .. import activations as _activations
from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..engine import backend, graph
from ..engine.layer import Layer
from ..engine.registry import deserialize, register, serialize


def _ser(obj, module):
    return None if obj is None else (module.serialize(obj) if hasattr(module, "serialize") else serialize(obj))


def _flat(a):
    return a.reshape(-1, a.shape[-1])


# --- the product that feeds the gates, with optional per-gate dropout masks ---------------------------
def _gate_matmul(a, W, masks):
    """a·W, where gate block g of W (columns g·u … (g+1)·u) sees a ⊙ masks[g].

    masks is None (no dropout), holds one mask shared by all gates, or one mask per gate block (Keras's
    ``implementation=1``, used whenever recurrent_dropout > 0)."""
    if masks is None:
        return a @ W
    if len(masks) == 1:
        return (a * masks[0]) @ W
    blocks = np.split(W, len(masks), axis=1)
    return np.concatenate([(a * m) @ Wg for m, Wg in zip(masks, blocks)], axis=-1)


def _gate_matmul_backward(a, W, masks, dz, dW):
    """Backward of ``_gate_matmul``: dW_g += (a ⊙ m_g)ᵀ·dz_g (in place); returns da = Σ_g (dz_g·W_gᵀ) ⊙ m_g."""
    k = 1 if masks is None else len(masks)
    Ws, dWs, dzs = np.split(W, k, axis=1), np.split(dW, k, axis=1), np.split(dz, k, axis=-1)
    da = 0
    for g in range(k):
        am = a if masks is None else a * masks[g]
        dWs[g] += _flat(am).T @ _flat(dzs[g])  # dWs[g] is a view into dW: the sum lands in place
        dam = dzs[g] @ Ws[g].T
        da = da + (dam if masks is None else dam * masks[g])
    return da


def _dropout_masks(rng, shape, rate, dtype):
    """Inverted-dropout masks, fixed for the whole sequence: 0 with probability ``rate``, else 1/(1 − rate)."""
    return (rng.random(shape) >= rate).astype(dtype) * np.asarray(1.0 / (1.0 - rate), dtype)


def _check_positive_int(value, what, layer):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{layer} expects `{what}` to be a positive integer, got {value!r}. E.g. {layer}(32).")
    return int(value)


def _call_with_mask(layer, x, training, mask, initial_state):
    """``layer(x, mask=..., initial_state=...)``: Layer.__call__ when neither is given (arrays, symbolic
    inputs and recording all work as for any layer), else the same steps with the extra arguments."""
    if mask is None and initial_state is None:
        return Layer.__call__(layer, x, training=training)
    if graph.is_symbolic(x):
        raise ValueError(f"{type(layer).__name__} '{layer.name}': mask= and initial_state= are supported on arrays "
                         "only, not on symbolic Input tensors yet. Call the layer on arrays, or mask with an "
                         "Embedding(mask_zero=True) inside a Sequential model.")
    given = x
    x = np.asarray(x)
    if x.dtype.kind in "fiub" and x.dtype != layer.dtype and layer.dtype.startswith("float"):
        x = x.astype(layer.dtype)
    if layer.built:
        layer._check_input_shape(x.shape)
    layer._maybe_build(x.shape)
    if graph._tape is not None:  # inside a subclassed Model's forward: keep the backward, as Layer.__call__ does
        y, backward = layer.forward(x, training, mask=mask, initial_state=initial_state)
        graph.record([given], False, y, backward)
        return y
    return layer.call(x, training=training, mask=mask, initial_state=initial_state)


class _SequenceCall:
    """call/__call__ shared by the recurrent layers and Bidirectional: both take mask= and initial_state=."""

    def call(self, x, training=False, mask=None, initial_state=None):
        return self.forward(x, training, mask=mask, initial_state=initial_state)[0]

    def __call__(self, x, training=False, mask=None, initial_state=None):
        return _call_with_mask(self, x, training, mask, initial_state)


class _Recurrent(_SequenceCall, Layer):
    """The shared time loop of SimpleRNN, LSTM and GRU (see the module docstring).

    A subclass sets ``GATES`` (the number of u-wide blocks in its kernels), ``STATES`` (1 or 2) and
    writes the cell: ``_cell_forward(xz_t, states, rmask) -> (new_states, cache)`` and
    ``_cell_backward(cache, d_new_states) -> (dxz_t, d_states)``, where ``_cell_backward`` adds the
    recurrent-kernel (and recurrent-bias) gradients itself.
    """

    GATES = 1
    STATES = 1
    supports_masking = True
    consumes_mask = True

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, zero_output_for_mask=False, **kwargs):
        kwargs.pop("implementation", None)  # Keras's kernel-fusion choice: the same math either way
        kwargs.pop("use_cudnn", None)
        if kwargs.pop("time_major", False):
            raise ValueError(f"{type(self).__name__}: time_major=True is not supported (Keras 3 removed it). Pass "
                             "inputs as (batch, timesteps, features), e.g. np.swapaxes(x, 0, 1).")
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.units = _check_positive_int(units, "units", cls)
        if stateful:
            raise ValueError(f"{cls} '{self.name}': stateful=True is not supported by glassnet yet (every batch "
                             "starts from zero states). Use stateful=False; to carry state across calls yourself, "
                             "use return_state=True and pass the states back with initial_state=[...].")
        self.activation = _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.recurrent_initializer = _initializers.get(recurrent_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = _regularizers.get(recurrent_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self.activity_regularizer = _regularizers.get(activity_regularizer)
        self.kernel_constraint = _constraints.get(kernel_constraint)
        self.recurrent_constraint = _constraints.get(recurrent_constraint)
        self.bias_constraint = _constraints.get(bias_constraint)
        self.dropout = min(1.0, max(0.0, float(dropout)))  # Keras clips the rates into [0, 1]
        self.recurrent_dropout = min(1.0, max(0.0, float(recurrent_dropout)))
        self.seed = seed
        self._rng = np.random.default_rng(seed) if seed is not None else None
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = False
        self.unroll = bool(unroll)  # accepted for Keras compatibility; the loop is the same either way
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.kernel = self.recurrent_kernel = self.bias = None

    @property
    def multiple_outputs(self):
        """True when the layer returns a list (return_state=True), which a Sequential model cannot chain."""
        return self.return_state

    # --- weights ----------------------------------------------------------------------------------
    def _bias_shape(self):
        return (self.GATES * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def build(self, input_shape):
        cls = type(self).__name__
        if len(input_shape) != 3:
            raise ValueError(f"{cls} '{self.name}' expects 3-D inputs (batch, timesteps, features), got shape "
                             f"{tuple(input_shape)}. For one sequence use x[None]; for flat rows, Reshape((timesteps, "
                             "features)) first; for token ids, put an Embedding before it.")
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError(f"{cls} '{self.name}' needs the last (feature) dimension of its input to be known, got "
                             f"shape {tuple(input_shape)}. Give the model an input shape, e.g. Input((None, 8)).")
        gu = self.GATES * self.units
        self.kernel = self.add_weight("kernel", (in_dim, gu), self.kernel_initializer, self.kernel_regularizer,
                                      self.kernel_constraint)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (self.units, gu), self.recurrent_initializer,
                                                self.recurrent_regularizer, self.recurrent_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", self._bias_shape(), self._bias_initializer(),
                                        self.bias_regularizer, self.bias_constraint)
        self.built = True

    def compute_output_shape(self, input_shape):
        n, t = input_shape[0], input_shape[1]
        out = (n, t, self.units) if self.return_sequences else (n, self.units)
        if self.return_state:  # a list of shapes: one per output (glassnet's multi-output convention)
            return [out] + [(n, self.units) for _ in range(self.STATES)]
        return out

    def compute_mask(self, x, mask=None):
        return mask if self.return_sequences else None

    # --- the cell's input side (the recurrent side is in each cell) -------------------------------
    def _input_bias(self):
        """(value, grad) of the bias added to x·W (all of it, except GRU's recurrent row)."""
        return self.bias.value, self.bias.grad

    # --- checks on the call arguments ---------------------------------------------------------------
    def _check_mask(self, mask, x):
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"{type(self).__name__} '{self.name}' got a mask of shape {mask.shape}, but its input "
                             f"has shape {x.shape}: the mask must be (batch, timesteps) = {x.shape[:2]}, True where "
                             "a step holds data.")
        return mask.astype(bool)

    def _initial_states(self, initial_state, n, dtype):
        zeros = [np.zeros((n, self.units), dtype) for _ in range(self.STATES)]
        if initial_state is None:
            return zeros
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        if len(states) != self.STATES:
            raise ValueError(f"{type(self).__name__} '{self.name}' has {self.STATES} state(s) "
                             f"({'[h, c]' if self.STATES == 2 else '[h]'}), got initial_state with {len(states)}.")
        states = [np.asarray(s, dtype) for s in states]
        for s in states:
            if s.shape != (n, self.units):
                raise ValueError(f"{type(self).__name__} '{self.name}' expects each initial state to have shape "
                                 f"(batch, units) = {(n, self.units)}, got {s.shape}.")
        return states

    def _dropout(self, n, in_dim, dtype, training):
        """The dropout masks of this call, drawn once and used at every step (as Keras does).

        Input masks: one shared by all gates, or one per gate when recurrent_dropout > 0 (Keras's
        implementation 1). Recurrent masks: one per gate. Rates of exactly 0 or 1 apply nothing, as in Keras.
        """
        if not training:
            return None, None
        rng = self._rng or backend.rng()
        dmask = rmask = None
        if 0.0 < self.dropout < 1.0:
            count = self.GATES if self.recurrent_dropout > 0 else 1
            dmask = _dropout_masks(rng, (count, n, 1, in_dim), self.dropout, dtype)
        if 0.0 < self.recurrent_dropout < 1.0:
            rmask = _dropout_masks(rng, (self.GATES, n, self.units), self.recurrent_dropout, dtype)
        return dmask, rmask

    # --- forward over time, backward through time ----------------------------------------------------
    def forward(self, x, training=False, mask=None, initial_state=None):
        """Return ``(y, backward)``; ``y`` is (N, T, u) with return_sequences, else (N, u)."""
        x = np.asarray(x)
        n, steps, in_dim = x.shape
        if steps == 0:
            raise ValueError(f"{type(self).__name__} '{self.name}' got sequences of length 0 (input shape "
                             f"{x.shape}); it needs at least one time step.")
        mask = self._check_mask(mask, x)
        states = self._initial_states(initial_state, n, x.dtype)
        dmask, rmask = self._dropout(n, in_dim, x.dtype, training)
        W = self.kernel.value
        zero_output = self.zero_output_for_mask

        # 1. every step's input projection at once: xz = (x ⊙ dropout)·W + b, (N, T, G·u)
        xz = _gate_matmul(x, W, dmask)
        if self.use_bias:
            xz += self._input_bias()[0]

        # 2. the loop: one cell step per time step, masked steps carry the state over
        order = list(range(steps - 1, -1, -1)) if self.go_backwards else list(range(steps))
        outputs, caches = [], []
        for t in order:
            new, cache = self._cell_forward(xz[:, t], states, rmask)
            if mask is None:
                out = new[0]
            else:
                m = mask[:, t, None]
                new = [np.where(m, s_new, s_old) for s_new, s_old in zip(new, states)]
                out = np.where(m, new[0], 0).astype(x.dtype) if zero_output else new[0]
            outputs.append(out)
            caches.append(cache)
            states = new
        y = np.stack(outputs, axis=1) if self.return_sequences else outputs[-1]
        penalty_grad = self._activity_gradient(y)

        def backward(dy):
            if self.return_state:
                dy, *d_final = dy
                d_states = [np.zeros((n, self.units), x.dtype) if d is None else np.array(d, x.dtype)
                            for d in d_final]
            else:
                d_states = [np.zeros((n, self.units), x.dtype) for _ in range(self.STATES)]
            if dy is None:
                dy = np.zeros(y.shape, x.dtype)
            if penalty_grad is not None:
                dy = dy + penalty_grad
            dxz = np.zeros_like(xz)
            for s in range(steps - 1, -1, -1):  # s counts processing steps; t is the time index
                t = order[s]
                d_out = dy[:, s] if self.return_sequences else (dy if s == steps - 1 else None)
                m = None if mask is None else mask[:, t, None]
                # the output: out = s_t[0], or m ⊙ h_new with zero_output_for_mask
                d_direct = None
                if d_out is not None:
                    if zero_output and m is not None:
                        d_direct = d_out * m
                    else:
                        d_states[0] = d_states[0] + d_out
                # the carry: s_t = m ? new : s_{t−1}
                if m is None:
                    d_new, d_carry = d_states, None
                else:
                    d_new = [d * m for d in d_states]
                    d_carry = [d * ~m for d in d_states]
                if d_direct is not None:
                    d_new[0] = d_new[0] + d_direct
                dxz[:, t], d_prev = self._cell_backward(caches[s], d_new)
                d_states = d_prev if d_carry is None else [a + b for a, b in zip(d_prev, d_carry)]
            if self.use_bias:
                self._input_bias()[1][...] += dxz.sum(axis=(0, 1))
            return _gate_matmul_backward(x, W, dmask, dxz, self.kernel.grad)

        if self.return_state:
            return [y, *states], backward
        return y, backward

    # --- configuration ----------------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, activation=_activations.serialize(self.activation), use_bias=self.use_bias,
            kernel_initializer=_initializers.serialize(self.kernel_initializer),
            recurrent_initializer=_initializers.serialize(self.recurrent_initializer),
            bias_initializer=_initializers.serialize(self.bias_initializer),
            kernel_regularizer=_ser(self.kernel_regularizer, _regularizers),
            recurrent_regularizer=_ser(self.recurrent_regularizer, _regularizers),
            bias_regularizer=_ser(self.bias_regularizer, _regularizers),
            activity_regularizer=_ser(self.activity_regularizer, _regularizers),
            kernel_constraint=_ser(self.kernel_constraint, _constraints),
            recurrent_constraint=_ser(self.recurrent_constraint, _constraints),
            bias_constraint=_ser(self.bias_constraint, _constraints),
            dropout=self.dropout, recurrent_dropout=self.recurrent_dropout, seed=self.seed,
            return_sequences=self.return_sequences, return_state=self.return_state,
            go_backwards=self.go_backwards, stateful=self.stateful, unroll=self.unroll,
            zero_output_for_mask=self.zero_output_for_mask)
        return config


# Keras 1 argument names that Keras 2 still accepted, shared by the three layers.
_LEGACY_RNN = {"output_dim": "units", "init": "kernel_initializer", "inner_init": "recurrent_initializer",
               "W_regularizer": "kernel_regularizer", "U_regularizer": "recurrent_regularizer",
               "b_regularizer": "bias_regularizer", "dropout_W": "dropout", "dropout_U": "recurrent_dropout"}


@register("layers")
class SimpleRNN(_Recurrent):
    """Fully connected recurrence:  h_t = f(x_t·W + h_{t−1}·U + b),  f = tanh by default.

    forward:  a = xz_t + h·U;  h_new = f(a)
    backward: da = dh_new ⊙ f'(a);  dU += hᵀ·da;  dh = da·Uᵀ;  dxz_t = da
    """

    _LEGACY_KWARGS = dict(_LEGACY_RNN)

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, seed=None, **kwargs):
        super().__init__(units, activation, use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
                         kernel_regularizer, recurrent_regularizer, bias_regularizer, activity_regularizer,
                         kernel_constraint, recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed,
                         return_sequences, return_state, go_backwards, stateful, unroll, **kwargs)

    def _cell_forward(self, xz_t, states, rmask):
        h, U = states[0], self.recurrent_kernel.value
        a = xz_t + _gate_matmul(h, U, rmask)
        h_new, f_back = self.activation.forward(a)
        return [h_new], (h, U, rmask, f_back)

    def _cell_backward(self, cache, d_new):
        h, U, rmask, f_back = cache
        da = f_back(d_new[0])
        dh = _gate_matmul_backward(h, U, rmask, da, self.recurrent_kernel.grad)
        return da, [dh]


@register("layers")
class LSTM(_Recurrent):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), Keras's gate order i, f, c, o.

    forward:  z = xz_t + h·U   split in four u-wide blocks  (xz_t = x_t·W + b)
              i = σ(z_i)   f = σ(z_f)   g = tanh(z_c)   o = σ(z_o)        (σ = recurrent_activation)
              c_new = f ⊙ c + i ⊙ g;   h_new = o ⊙ tanh(c_new)            (tanh = activation)
    backward: do = dh_new ⊙ tanh(c_new);   dc = dc_new + dh_new ⊙ o ⊙ tanh'(c_new)
              di = dc ⊙ g;  df = dc ⊙ c;  dg = dc ⊙ i;  dc_prev = dc ⊙ f
              dz = [di·σ'(z_i), df·σ'(z_f), dg·tanh'(z_c), do·σ'(z_o)];  dU += hᵀ·dz;  dh = dz·Uᵀ
    ``unit_forget_bias=True`` (default) starts the forget-gate bias at 1, the other biases at
    ``bias_initializer``.
    """

    GATES = 4
    STATES = 2
    _LEGACY_KWARGS = dict(_LEGACY_RNN, inner_activation="recurrent_activation")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, **kwargs):
        super().__init__(units, activation, use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
                         kernel_regularizer, recurrent_regularizer, bias_regularizer, activity_regularizer,
                         kernel_constraint, recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed,
                         return_sequences, return_state, go_backwards, stateful, unroll, **kwargs)
        self.recurrent_activation = _activations.get(recurrent_activation)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        u, init = self.units, self.bias_initializer

        def bias_with_forget_ones(shape, dtype=None):  # [init(u), 1…1, init(2u)], as Keras builds it
            return np.concatenate([np.asarray(init((u,), dtype=dtype)), np.ones(u, dtype),
                                   np.asarray(init((2 * u,), dtype=dtype))]).astype(dtype)

        return bias_with_forget_ones

    def _cell_forward(self, xz_t, states, rmask):
        h, c = states
        U, u = self.recurrent_kernel.value, self.units
        z = xz_t + _gate_matmul(h, U, rmask)
        i, i_back = self.recurrent_activation.forward(z[:, :u])
        f, f_back = self.recurrent_activation.forward(z[:, u:2 * u])
        g, g_back = self.activation.forward(z[:, 2 * u:3 * u])
        o, o_back = self.recurrent_activation.forward(z[:, 3 * u:])
        c_new = f * c + i * g
        tc, tc_back = self.activation.forward(c_new)
        h_new = o * tc
        return [h_new, c_new], (h, c, U, rmask, i, f, g, o, tc, i_back, f_back, g_back, o_back, tc_back)

    def _cell_backward(self, cache, d_new):
        h, c, U, rmask, i, f, g, o, tc, i_back, f_back, g_back, o_back, tc_back = cache
        dh_new, dc_new = d_new
        do = dh_new * tc
        dc = dc_new + tc_back(dh_new * o)
        dz = np.concatenate([i_back(dc * g), f_back(dc * c), g_back(dc * i), o_back(do)], axis=1)
        dh = _gate_matmul_backward(h, U, rmask, dz, self.recurrent_kernel.grad)
        return dz, [dh, dc * f]

    def get_config(self):
        config = super().get_config()
        config.update(recurrent_activation=_activations.serialize(self.recurrent_activation),
                      unit_forget_bias=self.unit_forget_bias)
        return config


@register("layers")
class GRU(_Recurrent):
    """Gated recurrent unit (Cho et al. 2014), Keras's gate order z, r, h.

    reset_after=True (default; cuDNN's and PyTorch's form), bias (2, 3u) = [input bias; recurrent bias]:
        hz = h·U + b_rec;   z = σ(xz_z + hz_z);   r = σ(xz_r + hz_r)
        hh = tanh(xz_h + r ⊙ hz_h)
    reset_after=False (the original form), bias (3u,) on the inputs only:
        z = σ(xz_z + h·U_z);   r = σ(xz_r + h·U_r);   hh = tanh(xz_h + (r ⊙ h)·U_h)
    both:  h_new = z ⊙ h + (1 − z) ⊙ hh
    backward: dhh = dh_new ⊙ (1 − z);  dz = dh_new ⊙ (h − hh);  dh = dh_new ⊙ z + (through the gates)
    """

    GATES = 3
    STATES = 1
    _LEGACY_KWARGS = dict(_LEGACY_RNN, inner_activation="recurrent_activation")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, reset_after=True, **kwargs):
        super().__init__(units, activation, use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
                         kernel_regularizer, recurrent_regularizer, bias_regularizer, activity_regularizer,
                         kernel_constraint, recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed,
                         return_sequences, return_state, go_backwards, stateful, unroll, **kwargs)
        self.recurrent_activation = _activations.get(recurrent_activation)
        self.reset_after = bool(reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _input_bias(self):
        if self.reset_after:
            return self.bias.value[0], self.bias.grad[0]
        return self.bias.value, self.bias.grad

    def _cell_forward(self, xz_t, states, rmask):
        h = states[0]
        U, u = self.recurrent_kernel.value, self.units
        ra = self.recurrent_activation
        if self.reset_after:
            hz = _gate_matmul(h, U, rmask)                  # (N, 3u): h·U_z, h·U_r, h·U_h
            if self.use_bias:
                hz = hz + self.bias.value[1]
            z, z_back = ra.forward(xz_t[:, :u] + hz[:, :u])
            r, r_back = ra.forward(xz_t[:, u:2 * u] + hz[:, u:2 * u])
            hh, hh_back = self.activation.forward(xz_t[:, 2 * u:] + r * hz[:, 2 * u:])
            extra = hz[:, 2 * u:]
        else:
            hz = _gate_matmul(h, U[:, :2 * u], None if rmask is None else rmask[:2])
            z, z_back = ra.forward(xz_t[:, :u] + hz[:, :u])
            r, r_back = ra.forward(xz_t[:, u:2 * u] + hz[:, u:])
            hm = h if rmask is None else h * rmask[2]       # h as the candidate sees it (recurrent dropout)
            rh = r * hm
            hh, hh_back = self.activation.forward(xz_t[:, 2 * u:] + rh @ U[:, 2 * u:])
            extra = (hm, rh)
        h_new = z * h + (1 - z) * hh
        return [h_new], (h, U, rmask, z, r, hh, z_back, r_back, hh_back, extra)

    def _cell_backward(self, cache, d_new):
        h, U, rmask, z, r, hh, z_back, r_back, hh_back, extra = cache
        u, dU = self.units, self.recurrent_kernel.grad
        dh_new = d_new[0]
        dh = dh_new * z                                      # h_new = z ⊙ h + (1 − z) ⊙ hh
        da_z = z_back(dh_new * (h - hh))
        da_h = hh_back(dh_new * (1 - z))                     # ∂J/∂(pre-activation of hh)
        if self.reset_after:
            hz_h = extra
            da_r = r_back(da_h * hz_h)
            dhz = np.concatenate([da_z, da_r, da_h * r], axis=1)
            if self.use_bias:
                self.bias.grad[1] += dhz.sum(axis=0)
            dh = dh + _gate_matmul_backward(h, U, rmask, dhz, dU)
        else:
            hm, rh = extra
            dU[:, 2 * u:] += rh.T @ da_h                     # hh's recurrent term (r ⊙ hm)·U_h
            drh = da_h @ U[:, 2 * u:].T
            da_r = r_back(drh * hm)
            dh = dh + (drh * r if rmask is None else drh * r * rmask[2])
            dhz = np.concatenate([da_z, da_r], axis=1)
            dh = dh + _gate_matmul_backward(h, U[:, :2 * u], None if rmask is None else rmask[:2], dhz,
                                            dU[:, :2 * u])
        return np.concatenate([da_z, da_r, da_h], axis=1), [dh]

    def get_config(self):
        config = super().get_config()
        config.update(recurrent_activation=_activations.serialize(self.recurrent_activation),
                      reset_after=self.reset_after)
        return config


def _removeprefix(name, prefix):
    return name[len(prefix):] if name.startswith(prefix) else name


@register("layers")
class Bidirectional(_SequenceCall, Layer):
    """Runs a recurrent layer over the sequence forwards and a copy backwards, then merges the two.

    forward:  y_f = fwd(x);  y_b = bwd(x) (go_backwards=True; with return_sequences its output is
              flipped back to forward time order, as Keras does);  y = merge(y_f, y_b)
              merge_mode 'concat' [y_f, y_b] (default), 'sum' y_f + y_b, 'ave' (y_f + y_b)/2,
              'mul' y_f ⊙ y_b, None → the list [y_f, y_b]
    backward: split dy by the merge rule ('mul': dy_f = dy ⊙ y_b, dy_b = dy ⊙ y_f), flip dy_b back,
              dx = fwd.backward(dy_f) + bwd.backward(dy_b)
    The two layers have their own weights (forward's first); ``weights`` lists both.
    merge_mode=None and return_state=True give lists, usable in direct calls but not inside a Sequential.
    """

    supports_masking = True
    consumes_mask = True
    MERGE_MODES = ("concat", "sum", "ave", "mul", None)

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        if not isinstance(layer, _Recurrent):
            raise ValueError(f"Bidirectional wraps a recurrent layer (SimpleRNN, LSTM, GRU), got {layer!r}. "
                             "E.g. Bidirectional(LSTM(32)).")
        if backward_layer is not None and not isinstance(backward_layer, _Recurrent):
            raise ValueError(f"Bidirectional's backward_layer must be a recurrent layer (SimpleRNN, LSTM, GRU), got "
                             f"{backward_layer!r}.")
        if merge_mode not in self.MERGE_MODES:
            raise ValueError(f"Bidirectional got merge_mode={merge_mode!r}; expected one of 'concat', 'sum', 'ave', "
                             "'mul' or None.")
        super().__init__(**kwargs)
        if self._input_shape_arg is None and layer._input_shape_arg is not None:  # Bidirectional(LSTM(.., input_shape))
            self._input_shape_arg, self._batch_size_arg = layer._input_shape_arg, layer._batch_size_arg
        # fresh copies from the config, as Keras does, so the wrapped layer's own state is not shared
        config = serialize(layer)
        config["config"]["name"] = "forward_" + _removeprefix(layer.name, "forward_")
        self.forward_layer = deserialize("layers", config, "layer")
        if backward_layer is None:
            config = serialize(layer)
            config["config"]["go_backwards"] = True
            config["config"]["name"] = "backward_" + _removeprefix(layer.name, "backward_")
            backward_layer = deserialize("layers", config, "layer")
        self.backward_layer = backward_layer
        f, b = self.forward_layer, self.backward_layer
        if f.go_backwards == b.go_backwards:
            raise ValueError(f"Bidirectional '{self.name}': the forward and backward layers must differ in go_backwards,"
                             f" got go_backwards={f.go_backwards} for both. Wrap a layer with go_backwards=False.")
        for attr in ("return_sequences", "return_state"):
            if getattr(f, attr) != getattr(b, attr):
                raise ValueError(f"Bidirectional '{self.name}': the forward and backward layers must have the same "
                                 f"{attr}, got {getattr(f, attr)} and {getattr(b, attr)}.")
        for sub in (f, b):  # masked steps output zeros when sequences are returned (Keras forces this)
            sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.return_sequences = f.return_sequences
        self.return_state = f.return_state
        self.stateful = False
        self._initial_weights = list(weights) if weights else None

    @property
    def multiple_outputs(self):
        """True when the layer returns a list (merge_mode=None or return_state), which Sequential cannot chain."""
        return self.merge_mode is None or self.return_state

    # --- weights: the two layers' -------------------------------------------------------------------
    def build(self, input_shape):
        self.forward_layer._maybe_build(input_shape)
        self.backward_layer._maybe_build(input_shape)
        self._weights = self.forward_layer.weights + self.backward_layer.weights
        if self._initial_weights:
            half = len(self._initial_weights) // 2
            self.forward_layer.set_weights(self._initial_weights[:half])
            self.backward_layer.set_weights(self._initial_weights[half:])
            self._initial_weights = None
        self.built = True

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return self.forward_layer.trainable_weights + self.backward_layer.trainable_weights

    @property
    def non_trainable_weights(self):
        ids = {id(w) for w in self.trainable_weights}
        return [w for w in self._weights if id(w) not in ids]

    # activity regularizers live on the two layers; the training loop reads them through the wrapper
    @property
    def activity_regularizer(self):
        return self.forward_layer.activity_regularizer or self.backward_layer.activity_regularizer

    @property
    def last_activity_loss(self):
        return sum(float(getattr(sub, "last_activity_loss", 0.0)) for sub in (self.forward_layer, self.backward_layer)
                   if sub.activity_regularizer is not None)

    def regularization_loss(self):
        return self.forward_layer.regularization_loss() + self.backward_layer.regularization_loss()

    def compute_output_shape(self, input_shape):
        out = self.forward_layer.compute_output_shape(input_shape)
        states = []
        if self.return_state:
            out, states = out[0], list(out[1:])
        if self.merge_mode == "concat":
            out = tuple(out[:-1]) + (None if out[-1] is None else 2 * out[-1],)
        outs = [out, out] if self.merge_mode is None else [out]
        if self.return_state or self.merge_mode is None:  # several outputs: a list of shapes
            return outs + states + states
        return out

    def compute_mask(self, x, mask=None):
        if not self.return_sequences:
            return None if self.merge_mode else (None, None)
        return mask if self.merge_mode else (mask, mask)

    # --- the math -----------------------------------------------------------------------------------
    def forward(self, x, training=False, mask=None, initial_state=None):
        init_f = init_b = None
        if initial_state is not None:
            half = len(initial_state) // 2
            init_f, init_b = list(initial_state[:half]), list(initial_state[half:])
        y_f, back_f = self.forward_layer.forward(x, training, mask=mask, initial_state=init_f)
        y_b, back_b = self.backward_layer.forward(x, training, mask=mask, initial_state=init_b)
        states = []
        if self.return_state:
            states = list(y_f[1:]) + list(y_b[1:])
            y_f, y_b = y_f[0], y_b[0]
        if self.return_sequences:
            y_b = y_b[:, ::-1]  # back to forward time order
        mode, width = self.merge_mode, y_f.shape[-1]
        if mode == "concat":
            y = np.concatenate([y_f, y_b], axis=-1)
        elif mode == "sum":
            y = y_f + y_b
        elif mode == "ave":
            y = (y_f + y_b) / 2
        elif mode == "mul":
            y = y_f * y_b
        else:
            y = [y_f, y_b]

        def backward(dy):
            d_states = [None] * len(states)
            if self.return_state:
                if mode is None:
                    dy, d_states = list(dy[:2]), list(dy[2:])
                else:
                    dy, d_states = dy[0], list(dy[1:])
            if mode == "concat":
                dy_f, dy_b = dy[..., :width], dy[..., width:]
            elif mode == "sum":
                dy_f = dy_b = dy
            elif mode == "ave":
                dy_f = dy_b = dy / 2
            elif mode == "mul":
                dy_f, dy_b = dy * y_b, dy * y_f
            else:
                dy_f, dy_b = dy
                dy_f = np.zeros_like(y_f) if dy_f is None else dy_f
                dy_b = np.zeros_like(y_b) if dy_b is None else dy_b
            if self.return_sequences:
                dy_b = dy_b[:, ::-1]
            if self.return_state:
                k = len(states) // 2
                dy_f, dy_b = [dy_f, *d_states[:k]], [dy_b, *d_states[k:]]
            return back_f(dy_f) + back_b(dy_b)

        if self.return_state:
            return ([*y, *states] if mode is None else [y, *states]), backward
        return y, backward

    def get_config(self):
        config = super().get_config()
        config.update(merge_mode=self.merge_mode, layer=serialize(self.forward_layer),
                      backward_layer=serialize(self.backward_layer))
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["layer"] = deserialize("layers", config["layer"], "layer", custom_objects)
        if config.get("backward_layer") is not None:
            config["backward_layer"] = deserialize("layers", config["backward_layer"], "layer", custom_objects)
        return cls(**config)
