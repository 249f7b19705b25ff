"""Convolution layers: Conv1D, Conv2D, their transposes, depthwise and separable convolutions.

Keras's arguments, defaults, weight layouts and ``get_config`` keys. The pixel work (im2col, one
GEMM, per-tap adjoints) lives in ``engine/kernels.py``; each layer here reads as its math, in channels-last
terms (a ``channels_first`` input is moved to channels last on the way in and back on the way out):

    forward:  z[n, o, f] = Σ_t Σ_c xp[n, o·s + t·d, c] · W[t, c, f] + b[f];   y = act(z)
    backward: dz = dy ⊙ act'(z);  dW[t, c, f] += Σ_{n,o} xp[n, o·s + t·d, c] · dz[n, o, f];
              db[f] += Σ_{n,o} dz[n, o, f];  dx[n, o·s + t·d, c] += Σ_f dz[n, o, f] · W[t, c, f]

where xp is x padded ('valid': none; 'same': TensorFlow's, the odd element after; 'causal': all
(k−1)·d before), s the stride, d the dilation rate and t runs over the kernel taps.
"""
import numpy as np

from .. import activations as _activations
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .. import constraints as _constraints
from ..engine import kernels
from ..engine.layer import Layer
from ..engine.registry import register, serialize

_SPATIAL = {1: "steps", 2: "height, width", 3: "depth, height, width"}


def _ser(obj, module):
    return None if obj is None else (module.serialize(obj) if hasattr(module, "serialize") else serialize(obj))


# --- argument helpers (shared with pooling.py) --------------------------------------------------------
def standardize_tuple(value, rank, arg, owner, allow_zero=False):
    """An int or a sequence of ``rank`` ints -> a tuple of ``rank`` ints (Keras's standardize_tuple)."""
    values = (value,) * rank if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        values = tuple(values)
    except TypeError:
        values = None
    low = 0 if allow_zero else 1
    if (values is None or len(values) != rank or
            not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low for v in values)):
        kind = "non-negative" if allow_zero else "positive"
        example = ", ".join(["2"] * rank)
        raise ValueError(f"{owner} expects `{arg}` to be a {kind} integer or a tuple of {rank} {kind} integers, "
                         f"got {arg}={value!r}. E.g. {arg}={2 if rank == 1 else f'({example})'}.")
    return tuple(int(v) for v in values)


def standardize_padding(value, owner, allowed=("valid", "same")):
    padding = value.lower() if isinstance(value, str) else value
    if padding not in allowed:
        raise ValueError(f"{owner} expects `padding` to be one of {', '.join(map(repr, allowed))}, "
                         f"got padding={value!r}.")
    return padding


def standardize_data_format(value, owner):
    data_format = "channels_last" if value is None else str(value).lower()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"{owner} expects `data_format` to be 'channels_last' or 'channels_first', "
                         f"got data_format={value!r}.")
    return data_format


def check_input_rank(layer, input_shape, rank):
    """Inputs must be (batch, *spatial, channels) or (batch, channels, *spatial) for this layer's rank."""
    if len(input_shape) != rank + 2:
        axes = (f"(batch, {_SPATIAL[rank]}, channels)" if layer.data_format == "channels_last"
                else f"(batch, channels, {_SPATIAL[rank]})")
        raise ValueError(f"{type(layer).__name__} '{layer.name}' expects inputs of rank {rank + 2} {axes}, got shape "
                         f"{tuple(input_shape)} (rank {len(input_shape)}). "
                         + ("Add a channel axis, e.g. x[..., None], or use Input(shape=(28, 28, 1))."
                            if len(input_shape) == rank + 1 else "Check the shape of the data or of Input()."))


def channels_of(layer, input_shape):
    channels = input_shape[-1] if layer.data_format == "channels_last" else input_shape[1]
    if channels is None:
        raise ValueError(f"{type(layer).__name__} '{layer.name}' needs the channel axis of its input to be known "
                         f"({layer.data_format}), got shape {tuple(input_shape)}. Give the model an input shape "
                         "with the number of channels, e.g. Input(shape=(28, 28, 1)).")
    return int(channels)


def spatial_of(layer, input_shape):
    return tuple(input_shape[1:-1]) if layer.data_format == "channels_last" else tuple(input_shape[2:])


def with_spatial(layer, input_shape, spatial, channels):
    if layer.data_format == "channels_last":
        return (input_shape[0],) + tuple(spatial) + (channels,)
    return (input_shape[0], channels) + tuple(spatial)


def to_channels_last(x, data_format):
    return x if data_format == "channels_last" else np.moveaxis(x, 1, -1)


def from_channels_last(y, data_format):
    return y if data_format == "channels_last" else np.moveaxis(y, -1, 1)


def _check_positive_int(value, arg, owner, example):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{owner} expects `{arg}` to be a positive integer, got {arg}={value!r}. E.g. {example}.")
    return int(value)


class _ConvBase(Layer):
    """What every convolution shares: geometry arguments, activation, bias, activity regularizer."""

    rank = None
    _PADDINGS = ("valid", "same")

    def _init_geometry(self, kernel_size, strides, padding, data_format, dilation_rate):
        owner = type(self).__name__
        self.kernel_size = standardize_tuple(kernel_size, self.rank, "kernel_size", owner)
        self.strides = standardize_tuple(strides, self.rank, "strides", owner)
        self.dilation_rate = standardize_tuple(dilation_rate, self.rank, "dilation_rate", owner)
        self.padding = standardize_padding(padding, owner, self._PADDINGS)
        self.data_format = standardize_data_format(data_format, owner)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{owner} does not support strides > 1 together with dilation_rate > 1 (as Keras), got "
                             f"strides={self.strides} and dilation_rate={self.dilation_rate}. Use one or the other.")

    def _init_output(self, activation, use_bias, bias_initializer, bias_regularizer, activity_regularizer,
                     bias_constraint):
        self.activation = _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self.activity_regularizer = _regularizers.get(activity_regularizer)
        self.bias_constraint = _constraints.get(bias_constraint)
        self.bias = None

    def _add_bias(self, units):
        if self.use_bias:
            self.bias = self.add_weight("bias", (units,), self.bias_initializer, self.bias_regularizer,
                                        self.bias_constraint)

    def _conv_output_shape(self, input_shape, filters):
        """Keras's compute_conv_output_shape: 'valid' floor((n − k_eff)/s) + 1, 'same'/'causal' ceil(n/s)."""
        check_input_rank(self, input_shape, self.rank)
        spatial = spatial_of(self, input_shape)
        out = []
        for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate):
            if n is None:
                out.append(None)
            elif self.padding == "valid":
                out.append((n - (k - 1) * d - 1) // s + 1)
            else:
                out.append((n - 1) // s + 1)
        if any(o is not None and o <= 0 for o in out):
            raise ValueError(f"{type(self).__name__} '{self.name}' would produce an empty output: inputs of spatial "
                             f"shape {spatial} are smaller than kernel_size={self.kernel_size} with "
                             f"dilation_rate={self.dilation_rate} and padding='valid'. Use padding='same', a smaller "
                             "kernel, or larger inputs.")
        return with_spatial(self, input_shape, out, filters)

    def _finish(self, z_cl, backward_cl, activation=None):
        """From the channels-last pre-activation ``z_cl`` (bias included): y = act(z) in the user's layout,
        plus the activity penalty. Returns ``(y, backward)``; backward turns dy into the channels-last
        dz = dy ⊙ act'(z), adds db = Σ dz, and hands dz to ``backward_cl(dz) -> dx`` (channels last).
        ``activation`` replaces the layer's own for this call (see ``_Conv.activation_deferrable``)."""
        z = from_channels_last(z_cl, self.data_format)
        act = self.activation if activation is None else activation
        y, activation_backward = act.forward(z, overwrite=True)  # z is ours: relu writes in place
        penalty_grad = self._activity_gradient(y)

        def backward(dy, input_grad=True):
            if penalty_grad is not None:
                dy = dy + penalty_grad
            dz = to_channels_last(activation_backward(dy), self.data_format)
            if self.use_bias:
                self.bias.add(kernels.channel_sums(dz))
            if not input_grad:  # only layers declaring input_grad_optional are asked (their backward_cl skips dx)
                return backward_cl(dz, input_grad=False)
            return from_channels_last(backward_cl(dz), self.data_format)

        return y, backward

    def _output_config(self):
        return dict(activation=_activations.serialize(self.activation), use_bias=self.use_bias,
                    bias_initializer=_initializers.serialize(self.bias_initializer),
                    bias_regularizer=_ser(self.bias_regularizer, _regularizers),
                    activity_regularizer=_ser(self.activity_regularizer, _regularizers),
                    bias_constraint=_ser(self.bias_constraint, _constraints))

    def _geometry_config(self):
        return dict(kernel_size=list(self.kernel_size), strides=list(self.strides), padding=self.padding,
                    data_format=self.data_format, dilation_rate=list(self.dilation_rate))


class _Conv(_ConvBase):
    """N-d convolution (cross-correlation), Keras's BaseConv. See the module docstring for the math.

    Kernel layout (*kernel_size, channels // groups, filters). With ``groups = g`` the channels split
    into g consecutive blocks; filters j·F/g … (j+1)·F/g see only block j (one GEMM per group).
    """

    _LEGACY_KWARGS = {"init": "kernel_initializer", "subsample": "strides", "border_mode": "padding",
                      "W_regularizer": "kernel_regularizer", "b_regularizer": "bias_regularizer",
                      "W_constraint": "kernel_constraint", "b_constraint": "bias_constraint", "bias": "use_bias"}
    input_grad_optional = True  # backward(dy, input_grad=False) skips dx (see Sequential's backward)
    # forward(x, training, activation=linear) runs the layer without its own activation: Sequential then
    # applies a relu after a following max-pool instead (Sequential._relu_after_max_pool)
    activation_deferrable = True
    lazy_grad_zeroing = True  # gradients reached only via Weight.grad / add_matmul (see FlatGroup.reset_grads)
    batch_parallel = True  # examples independent, no state kept: a step may split the batch (engine.parallel)

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.filters = _check_positive_int(filters, "filters", owner, f"{owner}(32, 3)")
        self.groups = _check_positive_int(groups, "groups", owner, "groups=2")
        if self.filters % self.groups:
            raise ValueError(f"{owner} expects `filters` to be divisible by `groups`, got filters={self.filters} "
                             f"and groups={self.groups}. Choose filters as a multiple of groups.")
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.kernel_constraint = _constraints.get(kernel_constraint)
        self._init_output(activation, use_bias, bias_initializer, bias_regularizer, activity_regularizer,
                          bias_constraint)
        self.kernel = None

    def build(self, input_shape):
        check_input_rank(self, input_shape, self.rank)
        channels = channels_of(self, input_shape)
        if channels % self.groups:
            raise ValueError(f"{type(self).__name__} '{self.name}' has groups={self.groups}, which must divide the "
                             f"number of input channels, got {channels} channels (input shape {tuple(input_shape)}). "
                             "Choose groups as a divisor of the channels.")
        self.compute_output_shape(input_shape)  # validates the spatial sizes
        self.kernel = self.add_weight("kernel", self.kernel_size + (channels // self.groups, self.filters),
                                      self.kernel_initializer, self.kernel_regularizer, self.kernel_constraint)
        self._add_bias(self.filters)

    def compute_output_shape(self, input_shape):
        return self._conv_output_shape(input_shape, self.filters)

    def forward(self, x, training=False, activation=None):
        W, groups, strides, dilation = self.kernel.value, self.groups, self.strides, self.dilation_rate
        x = to_channels_last(x, self.data_format)
        pads = kernels.paddings(x.shape[1:-1], self.kernel_size, strides, dilation, self.padding)
        z, cols = kernels.conv(x, W, strides, dilation, pads, groups)     # im2col + one GEMM per group
        if self.use_bias:
            z += self.bias.value

        def backward(dz, input_grad=True):
            if groups == 1:  # conv_kernel_grad's one GEMM dW = colsᵀ·dz, written straight into the gradient
                self.kernel.add_matmul(cols[0].T, dz.reshape(-1, dz.shape[-1]))
            else:
                self.kernel.grad += kernels.conv_kernel_grad(cols, dz, W.shape, groups)
            if input_grad:  # False for the model's first layer in training: dx is not needed there
                return kernels.conv_input_grad(dz, W, x.shape, strides, dilation, pads, groups)

        return self._finish(z, backward, activation)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, **self._geometry_config(), groups=self.groups,
                      kernel_initializer=_initializers.serialize(self.kernel_initializer),
                      kernel_regularizer=_ser(self.kernel_regularizer, _regularizers),
                      kernel_constraint=_ser(self.kernel_constraint, _constraints), **self._output_config())
        return config


@register("layers", "Convolution1D")
class Conv1D(_Conv):
    """1-D convolution over (batch, steps, channels); kernel (kernel_size, channels // groups, filters).

    forward:  z[n, o, f] = Σ_t Σ_c xp[n, o·s + t·d, c] · W[t, c, f] + b[f];  y = act(z)
    backward: dW[t, c, f] += Σ_{n,o} xp[n, o·s + t·d, c] · dz[n, o, f];
              dx[n, o·s + t·d, c] += Σ_f dz[n, o, f] · W[t, c, f]
    padding='causal' pads (k − 1)·d steps before the sequence only, so y[t] never reads x[t + 1:].
    """

    rank = 1
    _PADDINGS = ("valid", "same", "causal")


@register("layers", "Convolution2D")
class Conv2D(_Conv):
    """2-D convolution over (batch, height, width, channels); kernel (kh, kw, channels // groups, filters).

    forward:  z[n, i, j, f] = Σ_{a,b,c} xp[n, i·sh + a·dh, j·sw + b·dw, c] · W[a, b, c, f] + b[f];  y = act(z)
    backward: dW[a, b, c, f] += Σ_{n,i,j} xp[n, i·sh + a·dh, j·sw + b·dw, c] · dz[n, i, j, f];
              dx[n, i·sh + a·dh, j·sw + b·dw, c] += Σ_f dz[n, i, j, f] · W[a, b, c, f]
    """

    rank = 2


# --- transposed convolution -------------------------------------------------------------------------
class _ConvTranspose(_ConvBase):
    """The adjoint of a convolution ("deconvolution"): every input pixel scatters a kernel-sized patch.

    Kernel layout (*kernel_size, filters, channels): W read as a convolution from ``filters`` to
    ``channels`` channels, this layer is that convolution's input gradient, so
        forward:  zp[n, i·s + t·d, f] += Σ_c x[n, i, c] · W[t, f, c];  z = crop(zp) + b;  y = act(z)
        backward: dx = conv(dz, W) (the ordinary convolution);  dW[t, f, c] += Σ dzp[n, i·s + t·d, f]·x[n, i, c]
    The crop and the output size follow Keras 3 / TensorFlow ('valid': (n − 1)·s + max(k_eff, s);
    'same': n·s; with output_padding op: (n − 1)·s + k_eff + op, resp. (n − 1)·s + k_eff % 2 + op).
    """

    _LEGACY_KWARGS = {"init": "kernel_initializer", "subsample": "strides", "border_mode": "padding",
                      "W_regularizer": "kernel_regularizer", "b_regularizer": "bias_regularizer",
                      "W_constraint": "kernel_constraint", "b_constraint": "bias_constraint", "bias": "use_bias"}

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.filters = _check_positive_int(filters, "filters", owner, f"{owner}(32, 3)")
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate)
        self.output_padding = (None if output_padding is None else
                               standardize_tuple(output_padding, self.rank, "output_padding", owner, allow_zero=True))
        if self.output_padding is not None and any(p >= s for p, s in zip(self.output_padding, self.strides)):
            raise ValueError(f"{owner} expects every `output_padding` to be smaller than its stride (as Keras), got "
                             f"output_padding={self.output_padding} and strides={self.strides}.")
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.kernel_constraint = _constraints.get(kernel_constraint)
        self._init_output(activation, use_bias, bias_initializer, bias_regularizer, activity_regularizer,
                          bias_constraint)
        self.kernel = None

    def _geometry(self, spatial):
        """Per axis: output length and the (before, after) padding of the adjoint convolution."""
        ops = self.output_padding or (None,) * self.rank
        return [kernels.transpose_geometry(n, k, s, d, self.padding, op)
                for n, k, s, d, op in zip(spatial, self.kernel_size, self.strides, self.dilation_rate, ops)]

    def build(self, input_shape):
        check_input_rank(self, input_shape, self.rank)
        channels = channels_of(self, input_shape)
        self.compute_output_shape(input_shape)
        self.kernel = self.add_weight("kernel", self.kernel_size + (self.filters, channels), self.kernel_initializer,
                                      self.kernel_regularizer, self.kernel_constraint)
        self._add_bias(self.filters)

    def compute_output_shape(self, input_shape):
        check_input_rank(self, input_shape, self.rank)
        out = [size for size, _ in self._geometry(spatial_of(self, input_shape))]
        if any(o is not None and o <= 0 for o in out):
            raise ValueError(f"{type(self).__name__} '{self.name}' would produce an empty output for input shape "
                             f"{tuple(input_shape)}. Check kernel_size, strides and output_padding.")
        return with_spatial(self, input_shape, out, self.filters)

    def forward(self, x, training=False):
        W, strides, dilation = self.kernel.value, self.strides, self.dilation_rate
        x = to_channels_last(x, self.data_format)
        geometry = self._geometry(x.shape[1:-1])
        z_shape = (x.shape[0],) + tuple(size for size, _ in geometry) + (self.filters,)
        pads = [p for _, p in geometry]
        z = kernels.conv_input_grad(x, W, z_shape, strides, dilation, pads)   # per tap: GEMM, strided add
        if self.use_bias:
            z += self.bias.value

        def backward(dz):
            dx, cols = kernels.conv(dz, W, strides, dilation, pads)             # im2col + GEMM
            self.kernel.grad += kernels.conv_kernel_grad(cols, x, W.shape)
            return dx

        return self._finish(z, backward)

    def get_config(self):
        config = super().get_config()
        geometry = self._geometry_config()
        config.update(filters=self.filters, kernel_size=geometry.pop("kernel_size"), strides=geometry.pop("strides"),
                      padding=geometry.pop("padding"),
                      output_padding=None if self.output_padding is None else list(self.output_padding), **geometry,
                      kernel_initializer=_initializers.serialize(self.kernel_initializer),
                      kernel_regularizer=_ser(self.kernel_regularizer, _regularizers),
                      kernel_constraint=_ser(self.kernel_constraint, _constraints), **self._output_config())
        return config


@register("layers", "Convolution1DTranspose")
class Conv1DTranspose(_ConvTranspose):
    """Transposed 1-D convolution; kernel (kernel_size, filters, channels). Math: see _ConvTranspose."""

    rank = 1


@register("layers", "Convolution2DTranspose", "Deconvolution2D", "Deconv2D")
class Conv2DTranspose(_ConvTranspose):
    """Transposed 2-D convolution; kernel (kh, kw, filters, channels).

    forward:  zp[n, i·sh + a·dh, j·sw + b·dw, f] += Σ_c x[n, i, j, c] · W[a, b, f, c];  z = crop(zp) + bias
    backward: dx = conv2d(dz, W) with the same strides/crop;  dW[a, b, f, c] += Σ dzp[…, f] · x[n, i, j, c]
    """

    rank = 2


# --- depthwise and separable ------------------------------------------------------------------------
def _depthwise_as_grouped(kernel):
    """(*k, C, M) -> (*k, 1, C·M): a depthwise kernel is a grouped kernel with one channel per group."""
    return kernel.reshape(kernel.shape[:-2] + (1, -1))


class _DepthwiseConv(_ConvBase):
    """Each input channel c is convolved with its own M = depth_multiplier filters (output channel c·M + m).

    forward:  z[n, o, c·M + m] = Σ_t xp[n, o·s + t·d, c] · K[t, c, m] + b[c·M + m];  y = act(z)
    backward: dK[t, c, m] += Σ_{n,o} xp[n, o·s + t·d, c] · dz[n, o, c·M + m];
              dx[n, o·s + t·d, c] += Σ_m dz[n, o, c·M + m] · K[t, c, m]
    Computed as a grouped convolution with groups = channels. Keras 3 names the weight ``kernel``
    (Keras 2 said ``depthwise_kernel``; both attributes work here).
    """

    _LEGACY_KWARGS = {"init": "depthwise_initializer", "subsample": "strides", "border_mode": "padding",
                      "bias": "use_bias"}

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.depth_multiplier = _check_positive_int(depth_multiplier, "depth_multiplier", owner, "depth_multiplier=2")
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate)
        self.depthwise_initializer = _initializers.get(depthwise_initializer)
        self.depthwise_regularizer = _regularizers.get(depthwise_regularizer)
        self.depthwise_constraint = _constraints.get(depthwise_constraint)
        self._init_output(activation, use_bias, bias_initializer, bias_regularizer, activity_regularizer,
                          bias_constraint)
        self.kernel = None

    @property
    def depthwise_kernel(self):
        return self.kernel

    def build(self, input_shape):
        check_input_rank(self, input_shape, self.rank)
        channels = channels_of(self, input_shape)
        self.compute_output_shape(input_shape)
        self.kernel = self.add_weight("kernel", self.kernel_size + (channels, self.depth_multiplier),
                                      self.depthwise_initializer, self.depthwise_regularizer,
                                      self.depthwise_constraint)
        self._add_bias(channels * self.depth_multiplier)

    def compute_output_shape(self, input_shape):
        check_input_rank(self, input_shape, self.rank)
        return self._conv_output_shape(input_shape, channels_of(self, input_shape) * self.depth_multiplier)

    def forward(self, x, training=False):
        K, strides, dilation = self.kernel.value, self.strides, self.dilation_rate
        x = to_channels_last(x, self.data_format)
        channels = x.shape[-1]
        Kg = _depthwise_as_grouped(K)
        pads = kernels.paddings(x.shape[1:-1], self.kernel_size, strides, dilation, self.padding)
        z, cols = kernels.conv(x, Kg, strides, dilation, pads, groups=channels)
        if self.use_bias:
            z += self.bias.value

        def backward(dz):
            self.kernel.grad += kernels.conv_kernel_grad(cols, dz, Kg.shape, channels).reshape(K.shape)
            return kernels.conv_input_grad(dz, Kg, x.shape, strides, dilation, pads, groups=channels)

        return self._finish(z, backward)

    def get_config(self):
        config = super().get_config()
        geometry = self._geometry_config()
        config.update(depth_multiplier=self.depth_multiplier, **geometry,
                      depthwise_initializer=_initializers.serialize(self.depthwise_initializer),
                      depthwise_regularizer=_ser(self.depthwise_regularizer, _regularizers),
                      depthwise_constraint=_ser(self.depthwise_constraint, _constraints), **self._output_config())
        return config


@register("layers")
class DepthwiseConv1D(_DepthwiseConv):
    """Depthwise 1-D convolution; kernel (kernel_size, channels, depth_multiplier). Math: _DepthwiseConv."""

    rank = 1


@register("layers")
class DepthwiseConv2D(_DepthwiseConv):
    """Depthwise 2-D convolution; kernel (kh, kw, channels, depth_multiplier).

    forward:  z[n, i, j, c·M + m] = Σ_{a,b} xp[n, i·sh + a·dh, j·sw + b·dw, c] · K[a, b, c, m] + bias
    backward: dK[a, b, c, m] += Σ xp[…, c] · dz[…, c·M + m];
              dx[…, c] += Σ_m dz[…, c·M + m] · K[a, b, c, m]
    """

    rank = 2


class _SeparableConv(_ConvBase):
    """A depthwise convolution (depth_multiplier M, no bias) followed by a 1×1 pointwise convolution.

    forward:  h = depthwise(x; D);  z = h · P + b  (P: (C·M, filters));  y = act(z)
    backward: dP += hᵀ·dz;  db += Σ dz;  dh = dz·Pᵀ;  then the depthwise backward of dh gives dD and dx.
    Weights (Keras order): depthwise_kernel (*k, C, M), pointwise_kernel (1, …, 1, C·M, filters), bias.
    """

    _LEGACY_KWARGS = {"subsample": "strides", "border_mode": "padding", "bias": "use_bias"}

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 depth_multiplier=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 pointwise_initializer="glorot_uniform", bias_initializer="zeros", depthwise_regularizer=None,
                 pointwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 depthwise_constraint=None, pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.filters = _check_positive_int(filters, "filters", owner, f"{owner}(32, 3)")
        self.depth_multiplier = _check_positive_int(depth_multiplier, "depth_multiplier", owner, "depth_multiplier=2")
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate)
        self.depthwise_initializer = _initializers.get(depthwise_initializer)
        self.pointwise_initializer = _initializers.get(pointwise_initializer)
        self.depthwise_regularizer = _regularizers.get(depthwise_regularizer)
        self.pointwise_regularizer = _regularizers.get(pointwise_regularizer)
        self.depthwise_constraint = _constraints.get(depthwise_constraint)
        self.pointwise_constraint = _constraints.get(pointwise_constraint)
        self._init_output(activation, use_bias, bias_initializer, bias_regularizer, activity_regularizer,
                          bias_constraint)
        self.depthwise_kernel = self.pointwise_kernel = None

    def build(self, input_shape):
        check_input_rank(self, input_shape, self.rank)
        channels = channels_of(self, input_shape)
        self.compute_output_shape(input_shape)
        mult = self.depth_multiplier
        self.depthwise_kernel = self.add_weight("depthwise_kernel", self.kernel_size + (channels, mult),
                                                self.depthwise_initializer, self.depthwise_regularizer,
                                                self.depthwise_constraint)
        self.pointwise_kernel = self.add_weight("pointwise_kernel", (1,) * self.rank + (channels * mult, self.filters),
                                                self.pointwise_initializer, self.pointwise_regularizer,
                                                self.pointwise_constraint)
        self._add_bias(self.filters)

    def compute_output_shape(self, input_shape):
        return self._conv_output_shape(input_shape, self.filters)

    def forward(self, x, training=False):
        D, strides, dilation = self.depthwise_kernel.value, self.strides, self.dilation_rate
        x = to_channels_last(x, self.data_format)
        channels = x.shape[-1]
        Dg = _depthwise_as_grouped(D)
        P = self.pointwise_kernel.value.reshape(-1, self.filters)                 # (C·M, filters)
        pads = kernels.paddings(x.shape[1:-1], self.kernel_size, strides, dilation, self.padding)
        h, cols = kernels.conv(x, Dg, strides, dilation, pads, groups=channels)  # depthwise
        z = h @ P                                                                 # pointwise
        if self.use_bias:
            z += self.bias.value

        def backward(dz):
            h2, dz2 = h.reshape(-1, P.shape[0]), dz.reshape(-1, self.filters)
            self.pointwise_kernel.grad += (h2.T @ dz2).reshape(self.pointwise_kernel.shape)
            dh = dz @ P.T
            self.depthwise_kernel.grad += kernels.conv_kernel_grad(cols, dh, Dg.shape, channels).reshape(D.shape)
            return kernels.conv_input_grad(dh, Dg, x.shape, strides, dilation, pads, groups=channels)

        return self._finish(z, backward)

    def get_config(self):
        config = super().get_config()
        config.update(depth_multiplier=self.depth_multiplier, filters=self.filters, **self._geometry_config(),
                      depthwise_initializer=_initializers.serialize(self.depthwise_initializer),
                      pointwise_initializer=_initializers.serialize(self.pointwise_initializer),
                      depthwise_regularizer=_ser(self.depthwise_regularizer, _regularizers),
                      pointwise_regularizer=_ser(self.pointwise_regularizer, _regularizers),
                      depthwise_constraint=_ser(self.depthwise_constraint, _constraints),
                      pointwise_constraint=_ser(self.pointwise_constraint, _constraints), **self._output_config())
        return config


@register("layers", "SeparableConvolution1D")
class SeparableConv1D(_SeparableConv):
    """Separable 1-D convolution: depthwise (k, C, M), then pointwise (1, C·M, filters). Math: _SeparableConv."""

    rank = 1


@register("layers", "SeparableConvolution2D")
class SeparableConv2D(_SeparableConv):
    """Separable 2-D convolution: depthwise (kh, kw, C, M), then pointwise (1, 1, C·M, filters).

    forward:  h = depthwise_conv2d(x; D);  z[n, i, j, f] = Σ_q h[n, i, j, q] · P[0, 0, q, f] + b[f];  y = act(z)
    backward: dP += Σ hᵀ·dz;  dh = dz·Pᵀ;  dD, dx from the depthwise backward of dh
    """

    rank = 2


# Keras's other spellings of the same classes
Convolution1D, Convolution2D = Conv1D, Conv2D
Convolution1DTranspose, Convolution2DTranspose = Conv1DTranspose, Conv2DTranspose
SeparableConvolution1D, SeparableConvolution2D = SeparableConv1D, SeparableConv2D
