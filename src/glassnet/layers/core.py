"""Core layers: Dense, Activation, Dropout, Flatten, Reshape, and the model input."""
import math

import numpy as np

from .. import activations as _activations
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .. import constraints as _constraints
from ..engine import backend, compiled, gemv
from ..engine.graph import KerasTensor, Node
from ..engine.layer import Layer
from ..engine.registry import register, serialize


_KERNEL_MIN = compiled.MIN_ELEMENTS  # outputs from which Dense's compiled bias + relu pays for its call
_ROW_SPLIT_MIN = gemv.MIN_BYTES  # kernel size from which a 1-row call may use two cores (engine.gemv)


def _ser(obj, module):
    return None if obj is None else (module.serialize(obj) if hasattr(module, "serialize") else serialize(obj))


@register("layers")
class Dense(Layer):
    """Fully connected layer:  y = f(x·W + b).

    forward:  z = x @ W + b;  y = f(z)
    backward: dz = dy ⊙ f'(z);  dW += xᵀ·dz;  db += Σ_rows dz;  dx = dz·Wᵀ
    Inputs of rank > 2 are handled on the last axis (every other axis acts as a batch axis).
    With the compiled kernels (engine.compiled) and relu, "+ b, relu" forward and "relu', Σ_rows dz" backward
    each run as one pass over z instead of two: the same numbers, bit for bit.
    """

    input_grad_optional = True  # backward(dy, input_grad=False) skips dx (see Sequential's backward)
    lazy_grad_zeroing = True    # gradients reached only via Weight.grad / add_matmul (see FlatGroup.reset_grads)
    _LEGACY_KWARGS = {"output_dim": "units", "init": "kernel_initializer", "W_regularizer": "kernel_regularizer",
                      "b_regularizer": "bias_regularizer", "W_constraint": "kernel_constraint",
                      "b_constraint": "bias_constraint", "bias": "use_bias"}

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense expects `units` to be a positive integer, got {units!r}. E.g. Dense(10).")
        self.units = int(units)
        self.activation = _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self.activity_regularizer = _regularizers.get(activity_regularizer)
        self.kernel_constraint = _constraints.get(kernel_constraint)
        self.bias_constraint = _constraints.get(bias_constraint)
        self.kernel = self.bias = None

    def build(self, input_shape):
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError(f"Dense '{self.name}' needs the last dimension of its input to be known, got "
                             f"shape {tuple(input_shape)}. Give the model an input shape, e.g. Input((8,)).")
        self.kernel = self.add_weight("kernel", (in_dim, self.units), self.kernel_initializer,
                                      self.kernel_regularizer, self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.units,), self.bias_initializer,
                                        self.bias_regularizer, self.bias_constraint)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, training=False):
        W = self.kernel.value
        z = x @ W
        k = self._fused_relu(z) if z.size >= _KERNEL_MIN else None
        if k is not None:  # compiled (engine.compiled): z += b and relu in one pass, in place
            k.bias_relu_(z, self.bias.value)
            y, activation_backward = z, None
        else:
            if self.use_bias:
                z += self.bias.value
            y, activation_backward = self.activation.forward(z, overwrite=True)  # z is ours: relu writes in place
        penalty_grad = self._activity_gradient(y)

        def backward(dy, input_grad=True):
            if penalty_grad is not None:
                dy = dy + penalty_grad
            db = None
            if activation_backward is not None:
                dz = activation_backward(dy)
            elif dy.shape == y.shape and compiled.kernels_for(dy, y, min_elements=0) is not None:
                dz, db = k.relu_grad_colsum(dy, y)  # compiled: relu' and Σ_rows dz in one pass, bit for bit
            else:
                dz = _activations.relu.grad(z, y, dy)
            x2, dz2 = (x, dz) if x.ndim == 2 else (x.reshape(-1, x.shape[-1]), dz.reshape(-1, self.units))
            self.kernel.add_matmul(x2.T, dz2)  # dW += xᵀ·dz (leading axes of x and dz are batch axes)
            if self.use_bias:  # db += Σ dz
                if db is not None:
                    self.bias.add(db)
                else:
                    self.bias.add_sum(dz2)
            return dz @ W.T if input_grad else None  # input_grad=False: the model's first layer in training

        return y, backward

    def _fused_relu(self, z):
        """The compiled kernels when this layer's bias and relu can run as one pass over its 2-D ``z`` (numba
        installed and on, float32/64; callers first check that z has _KERNEL_MIN values), else None: NumPy."""
        if self.activation is not _activations.relu or not self.use_bias or z.ndim != 2:
            return None
        return compiled.kernels_for(z, self.bias.value)

    def call(self, x, training=False):
        W = self.kernel.value
        if W.nbytes >= _ROW_SPLIT_MIN:  # one row through a large kernel: both cores (engine.gemv)
            y = self._row_on_two_cores(x, W)
            if y is not None:
                return y
        z = x @ W
        if z.size >= _KERNEL_MIN:  # (a 1-row predict skips even the kernel lookup)
            k = self._fused_relu(z)
            if k is not None:
                k.bias_relu_(z, self.bias.value)
                return z
        if self.use_bias:
            z += self.bias.value
        return self.activation(z)

    def _row_on_two_cores(self, x, W):
        """``call`` for one row, each of two blocks of the kernel's rows summed on its own core (engine.gemv); None
        when that path does not apply (batched input, no numba, one thread allowed...)."""
        if not gemv.usable(x, W):
            return None
        return gemv.chain(x, ((W, self.bias.value if self.use_bias else None, self.activation),))

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, activation=_activations.serialize(self.activation), use_bias=self.use_bias,
            kernel_initializer=_initializers.serialize(self.kernel_initializer),
            bias_initializer=_initializers.serialize(self.bias_initializer),
            kernel_regularizer=_ser(self.kernel_regularizer, _regularizers),
            bias_regularizer=_ser(self.bias_regularizer, _regularizers),
            activity_regularizer=_ser(self.activity_regularizer, _regularizers),
            kernel_constraint=_ser(self.kernel_constraint, _constraints),
            bias_constraint=_ser(self.bias_constraint, _constraints))
        return config


@register("layers")
class Activation(Layer):
    """Applies an activation function:  y = f(x);  backward dx = dy ⊙ f'(x)."""

    batch_parallel = True  # examples independent, no state kept: a step may split the batch (engine.parallel)

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = _activations.get(activation)

    def forward(self, x, training=False):
        return self.activation.forward(x)

    def call(self, x, training=False):
        return self.activation(x)

    def get_config(self):
        config = super().get_config()
        config["activation"] = _activations.serialize(self.activation)
        return config


@register("layers")
class Dropout(Layer):
    """Inverted dropout. Training: y = x ⊙ m / (1 − rate), m ~ Bernoulli(1 − rate); inference: y = x.

    backward: dx = dy ⊙ m / (1 − rate)
    """

    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate <= 1:
            raise ValueError(f"Dropout expects 0 <= rate <= 1, got rate={rate}.")
        self.rate = float(rate)
        self.noise_shape = tuple(noise_shape) if noise_shape is not None else None
        self.seed = seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def forward(self, x, training=False):
        if not training or self.rate == 0:
            return x, lambda dy: dy
        shape = x.shape
        if self.noise_shape is not None:
            shape = tuple(s if n is None else n for s, n in zip(x.shape, self.noise_shape))
        rng = self._rng or backend.rng()
        scale = 0.0 if self.rate == 1 else 1.0 / (1.0 - self.rate)
        mask = (rng.random(shape) >= self.rate).astype(x.dtype) * x.dtype.type(scale)
        return x * mask, lambda dy: dy * mask

    def call(self, x, training=False):
        return self.forward(x, training)[0] if training else x

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, noise_shape=list(self.noise_shape) if self.noise_shape else None,
                      seed=self.seed)
        return config


@register("layers")
class Flatten(Layer):
    """Reshape (batch, d1, d2, ...) to (batch, d1·d2·...);  backward reshapes dy back."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format or "channels_last"

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        return (input_shape[0], None if any(d is None for d in rest) else int(math.prod(rest)))

    def forward(self, x, training=False):
        if self.data_format == "channels_first" and x.ndim > 2:  # Keras flattens channels last
            perm = (0,) + tuple(range(2, x.ndim)) + (1,)
            xt = x.transpose(perm)
            inv = np.argsort(perm)
            return xt.reshape(len(x), -1), lambda dy: dy.reshape(xt.shape).transpose(inv)
        shape = x.shape
        return x.reshape(shape[0], -1), lambda dy: dy.reshape(shape)

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


@register("layers")
class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (one entry may be -1);  backward reshapes dy back."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        if sum(d == -1 for d in self.target_shape) > 1:
            raise ValueError(f"Reshape accepts at most one -1 in target_shape, got {self.target_shape}.")

    def compute_output_shape(self, input_shape):
        known = input_shape[1:]
        if -1 not in self.target_shape:
            if None not in known and math.prod(known) != math.prod(self.target_shape):
                raise ValueError(f"Reshape '{self.name}' cannot reshape samples of shape {tuple(known)} "
                                 f"({math.prod(known)} values) to {self.target_shape} "
                                 f"({math.prod(self.target_shape)} values).")
            return (input_shape[0],) + self.target_shape
        if None in known:
            return (input_shape[0],) + tuple(None if d == -1 else d for d in self.target_shape)
        rest = -math.prod(self.target_shape)
        total = math.prod(known)
        if total % rest:
            raise ValueError(f"Reshape '{self.name}' cannot reshape samples of shape {tuple(known)} to "
                             f"{self.target_shape}: {total} values do not divide evenly by {rest}.")
        return (input_shape[0],) + tuple(total // rest if d == -1 else d for d in self.target_shape)

    def forward(self, x, training=False):
        shape = x.shape
        return x.reshape((shape[0],) + self.target_shape), lambda dy: dy.reshape(shape)

    def get_config(self):
        config = super().get_config()
        config["target_shape"] = list(self.target_shape)
        return config


@register("layers")
class InputLayer(Layer):
    """The model's entry point: records the input shape (batch axis excluded) and dtype."""

    def __init__(self, shape=None, batch_size=None, dtype=None, name=None, batch_shape=None, **kwargs):
        if "input_shape" in kwargs:
            shape = kwargs.pop("input_shape")
        if batch_shape is not None:
            batch_size, shape = batch_shape[0], tuple(batch_shape[1:])
        if shape is None:
            raise ValueError("InputLayer needs a shape, e.g. Input(shape=(8,)).")
        if isinstance(shape, int):
            shape = (shape,)
        super().__init__(name=name or backend.unique_name("input_layer"), dtype=dtype, **kwargs)
        self.shape = tuple(shape)
        self.batch_size = batch_size
        self.built = True
        self.input_shape = self.output_shape = (batch_size,) + self.shape
        node = Node(self, [], list_input=False)
        node.outputs = [KerasTensor(self.input_shape, self.dtype, node, 0, name=self.name)]
        self.output = node.outputs[0]

    def forward(self, x, training=False):
        return x, lambda dy: dy

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "batch_shape": [self.batch_size, *self.shape]}


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):
    """A symbolic model input, e.g. ``Sequential([Input((8,)), Dense(1)])``."""
    layer = InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, name=name, batch_shape=batch_shape)
    return layer.output
