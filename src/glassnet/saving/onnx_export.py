"""ONNX export: a built Sequential or Functional model as an ONNX graph that ONNX Runtime (or any ONNX backend)
can run. A Functional model's nodes are walked in topological order (several inputs and outputs allowed).

Each glassnet layer becomes the ONNX nodes that compute the same inference math:

    Dense            z = x·W + b  ->  Gemm (rank-2 input) or MatMul + Add (rank > 2), then the activation
    Activation       y = f(x)     ->  the activation's nodes (below)
    Dropout          y = x        ->  Identity (inference)
    Flatten          Flatten(axis=1); channels_first moves the channel axis last first (Transpose)
    Reshape          Reshape to [-1, *target_shape] (the batch size is inferred), or to
                     [0, *target_shape] when target_shape holds the -1 (0 copies the batch size)
    Normalization    y = (x − μ) / max(σ, ε)  ->  Sub, Div;   invert: y = μ + x·max(σ, ε)  ->  Mul, Add
    InputLayer       nothing (the graph input)
    Conv1D/2D, DepthwiseConv1D/2D, SeparableConv1D/2D   Conv with explicit pads (Keras's asymmetric 'same',
                     'causal'), strides, dilations, groups;  Conv1D/2DTranspose  ConvTranspose + Slice (+ Pad) + bias
    Max/AveragePooling1D/2D   MaxPool / AveragePool(count_include_pad=0) with explicit pads
    GlobalMax/AveragePooling1D/2D   ReduceMax / ReduceMean (keepdims as the layer)
    BatchNormalization   (x − μ_moving)·(1/√(σ²_moving + ε))·γ + β;  Layer/GroupNormalization composed
                     (ReduceMean, Sub, Mul, Sqrt, Div; GroupNormalization reshapes to groups and back)
    Rescaling, ZeroPadding1D/2D (Pad), Cropping1D/2D (Slice), UpSampling1D/2D nearest (Resize), Permute
                     (Transpose), RepeatVector (Unsqueeze, Tile), SpatialDropout1D/2D, GaussianNoise,
                     GaussianDropout (Identity at inference)
    Embedding        Cast to int64, Gather (mask_zero=True is refused: masks have no export)
    SimpleRNN/LSTM/GRU   ONNX RNN/LSTM/GRU (gates reordered: LSTM i,f,c,o -> i,o,f,c; GRU z,r,h with
                     linear_before_reset = reset_after); go_backwards reverses the steps first
    Bidirectional    both layers, the backward output flipped back in time, then the merge
    TimeDistributed  Reshape to (batch·time, ...), the inner layer, Reshape back
    Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot   the elementwise ops / MatMul
    MultiHeadAttention   MatMul projections, scaled scores, Softmax, MatMul (attention_mask is refused)

Activations map to one ONNX op where one exists (Relu, Sigmoid, Softmax, HardSigmoid, ...) and are
composed from basic ops where opset 17 has none (gelu: 0.5·x·(1 + erf(x/√2)); silu: x·σ(x)).
ONNX Runtime's CPU kernels for Elu, Selu, Softplus, Softsign, LeakyRelu and HardSigmoid exist for
float32 only, so float64 models get those activations composed from basic ops (same formulas).

The weights become initializers; the batch axis is the symbolic dimension "batch".
Convolutions and pooling run channels first in ONNX: channels_last inputs are transposed around them.
ONNX Runtime's CPU provider has no float64 Conv kernel, so float64 convolutional graphs need another backend.
"""
import json
import math
import os

import numpy as np

from .. import __version__
from .. import activations as _act
from ..engine import backend
from ..engine import kernels
from ..layers.attention import MultiHeadAttention
from ..layers.conv import (Conv1D, Conv1DTranspose, Conv2D, Conv2DTranspose, DepthwiseConv1D, DepthwiseConv2D,
                           SeparableConv1D, SeparableConv2D)
from ..layers.embedding import Embedding
from ..layers.core import Activation, Dense, Dropout, Flatten, InputLayer, Reshape
from ..layers.merge import Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract
from ..layers.normalization import BatchNormalization, GroupNormalization, LayerNormalization
from ..layers.pooling import (AveragePooling1D, AveragePooling2D, GlobalAveragePooling1D, GlobalAveragePooling2D,
                              GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPooling1D, MaxPooling2D)
from ..layers.preprocessing import Normalization
from ..layers.regularization import GaussianDropout, GaussianNoise, SpatialDropout1D, SpatialDropout2D
from ..layers.rescaling import Rescaling
from ..layers.recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from ..layers.reshaping import (Cropping1D, Cropping2D, Permute, RepeatVector, UpSampling1D, UpSampling2D,
                                ZeroPadding1D, ZeroPadding2D)
from ..layers.wrappers import TimeDistributed
from ..models.functional import Functional
from ..models.sequential import Sequential
from .native import atomic_write

MIN_OPSET = 17
_SUPPORTED_DTYPES = ("float32", "float64")


# --- the graph being built ------------------------------------------------------------------------
class _Graph:
    """Nodes and initializers of one ONNX graph, with unique names scoped by the current layer."""

    def __init__(self, onnx, dtype, opset, reserved_names):
        self.onnx = onnx
        self.dtype = np.dtype(dtype)
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self.scope = ""
        self._used = set(reserved_names)
        self._scalars = {}

    def fresh(self, hint):
        """A tensor/node name not used yet: 'layer_name/hint', then 'layer_name/hint_1', ..."""
        base = f"{self.scope}/{hint}" if self.scope else hint
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def const(self, hint, value, dtype=None):
        """An initializer holding ``value`` (in the model's float dtype unless ``dtype`` is given)."""
        name = self.fresh(hint)
        array = np.asarray(value, dtype=dtype or self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def scalar(self, value):
        """A shared rank-0 constant of the model's dtype (0.5, 1, √2, ...)."""
        key = float(value)
        if key not in self._scalars:
            scope, self.scope = self.scope, ""
            self._scalars[key] = self.const(f"const/{key!r}", key)
            self.scope = scope
        return self._scalars[key]

    def op(self, op_type, inputs, **attrs):
        """Append one node; returns the name of its (single) output."""
        out = self.fresh(op_type)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    @property
    def float32(self):
        return self.dtype == np.float32


# --- activations: y = f(x) as ONNX nodes ----------------------------------------------------------
def _relu(g, x):
    return g.op("Relu", [x])


def _sigmoid(g, x):
    return g.op("Sigmoid", [x])


def _tanh(g, x):
    return g.op("Tanh", [x])


def _linear(g, x):
    return x


def _exponential(g, x):
    return g.op("Exp", [x])


def _softmax(g, x, axis=-1):
    return g.op("Softmax", [x], axis=axis)


def _log_softmax(g, x, axis=-1):
    return g.op("LogSoftmax", [x], axis=axis)


def _elu_composed(g, x, alpha):
    # x if x > 0 else α(e^min(x,0) − 1)
    negative = g.op("Mul", [g.scalar(alpha), g.op("Sub", [g.op("Exp", [g.op("Min", [x, g.scalar(0)])]),
                                                              g.scalar(1)])])
    return g.op("Where", [g.op("Greater", [x, g.scalar(0)]), x, negative])


def _elu(g, x, alpha=1.0):
    return g.op("Elu", [x], alpha=float(alpha)) if g.float32 else _elu_composed(g, x, alpha)


def _selu(g, x):
    if g.float32:
        return g.op("Selu", [x], alpha=_act.SELU_ALPHA, gamma=_act.SELU_SCALE)
    return g.op("Mul", [g.scalar(_act.SELU_SCALE), _elu_composed(g, x, _act.SELU_ALPHA)])


def _softplus(g, x):
    if g.float32:
        return g.op("Softplus", [x])
    # max(x, 0) + log(1 + e^−|x|)
    tail = g.op("Log", [g.op("Add", [g.scalar(1), g.op("Exp", [g.op("Neg", [g.op("Abs", [x])])])])])
    return g.op("Add", [g.op("Max", [x, g.scalar(0)]), tail])


def _softsign(g, x):
    if g.float32:
        return g.op("Softsign", [x])
    return g.op("Div", [x, g.op("Add", [g.scalar(1), g.op("Abs", [x])])])  # x / (1 + |x|)


def _leaky_relu(g, x, negative_slope=0.2):
    if g.float32:
        return g.op("LeakyRelu", [x], alpha=float(negative_slope))
    return g.op("Where", [g.op("Greater", [x, g.scalar(0)]), x, g.op("Mul", [g.scalar(negative_slope), x])])


def _hard_sigmoid(g, x):
    if g.float32:  # clip(x/6 + 1/2, 0, 1)
        return g.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
    return g.op("Clip", [g.op("Add", [g.op("Div", [x, g.scalar(6)]), g.scalar(0.5)]), g.scalar(0), g.scalar(1)])


def _silu(g, x):
    return g.op("Mul", [x, g.op("Sigmoid", [x])])  # x·σ(x)


def _gelu(g, x, approximate=False):
    if g.opset >= 20:
        return g.op("Gelu", [x], approximate="tanh" if approximate else "none")
    half_x = g.op("Mul", [g.scalar(0.5), x])
    if approximate:  # 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))
        cube = g.op("Mul", [g.op("Mul", [x, x]), x])
        inner = g.op("Add", [x, g.op("Mul", [g.scalar(0.044715), cube])])
        t = g.op("Tanh", [g.op("Mul", [g.scalar(math.sqrt(2.0 / math.pi)), inner])])
    else:  # 0.5·x·(1 + erf(x/√2))
        t = g.op("Erf", [g.op("Div", [x, g.scalar(math.sqrt(2.0))])])
    return g.op("Mul", [half_x, g.op("Add", [g.scalar(1), t])])


# keyed by the function glassnet computes, so aliases ('swish') and parametrised copies
# (Activation('gelu', gelu.fn, gelu.grad, approximate=True)) export with their parameters
_ACTIVATIONS = {a.fn: (a.name, emit) for a, emit in [
    (_act.relu, _relu), (_act.sigmoid, _sigmoid), (_act.tanh, _tanh), (_act.linear, _linear),
    (_act.exponential, _exponential), (_act.softmax, _softmax), (_act.log_softmax, _log_softmax),
    (_act.elu, _elu), (_act.selu, _selu), (_act.softplus, _softplus), (_act.softsign, _softsign),
    (_act.leaky_relu, _leaky_relu), (_act.hard_sigmoid, _hard_sigmoid), (_act.silu, _silu),
    (_act.gelu, _gelu)]}


def _activation(g, activation, x, layer):
    found = _ACTIVATIONS.get(activation.fn)
    if found is None:
        raise ValueError(f"Layer '{layer.name}' uses the activation {activation.name!r}, which has no ONNX export. "
                         f"Exportable activations: {', '.join(_act.ALL)} (and gelu with approximate=True).")
    return found[1](g, x, **activation.params)


# --- layers: one function each, (graph, layer, input name, input shape) -> output name --------------
def _export_dense(g, layer, x, shape):
    kernel = g.const("kernel", layer.kernel.value)
    bias = [g.const("bias", layer.bias.value)] if layer.use_bias else []
    if len(shape) == 2:
        z = g.op("Gemm", [x, kernel] + bias)  # x·W + b
    else:  # every leading axis acts as a batch axis
        z = g.op("MatMul", [x, kernel])
        if bias:
            z = g.op("Add", [z] + bias)
    return _activation(g, layer.activation, z, layer)


def _export_activation(g, layer, x, shape):
    return _activation(g, layer.activation, x, layer)


def _export_dropout(g, layer, x, shape):
    return g.op("Identity", [x])  # inference: y = x


def _export_flatten(g, layer, x, shape):
    if layer.data_format == "channels_first" and len(shape) > 2:  # Keras flattens channels last
        x = g.op("Transpose", [x], perm=[0] + list(range(2, len(shape))) + [1])
    return g.op("Flatten", [x], axis=1)


def _export_reshape(g, layer, x, shape):
    target = list(layer.target_shape)
    # [-1, *target] infers the batch size; with a -1 already in target, 0 copies the batch size instead
    new_shape = ([0] if -1 in target else [-1]) + target
    return g.op("Reshape", [x, g.const("shape", new_shape, dtype=np.int64)])


def _export_normalization(g, layer, x, shape):
    mean, std = layer._stats()  # the very arrays predict uses: μ and max(√σ², ε), batch-broadcastable
    mean, std = g.const("mean", mean), g.const("std", std)
    if layer.invert:
        return g.op("Add", [mean, g.op("Mul", [x, std])])  # μ + x·σ
    return g.op("Div", [g.op("Sub", [x, mean]), std])  # (x − μ) / σ


# --- convolution and pooling: ONNX computes channels first (NCHW), so channels_last inputs are
# transposed to channels first around the op and back afterwards ------------------------------------
def _to_channels_first(g, layer, x, rank):
    if layer.data_format == "channels_last":
        return g.op("Transpose", [x], perm=[0, rank + 1] + list(range(1, rank + 1)))
    return x


def _from_channels_first(g, layer, x, rank):
    if layer.data_format == "channels_last":
        return g.op("Transpose", [x], perm=[0] + list(range(2, rank + 2)) + [1])
    return x


def _spatial(layer, shape, rank):
    return tuple(shape[1:rank + 1]) if layer.data_format == "channels_last" else tuple(shape[2:rank + 2])


def _onnx_pads(layer, shape, rank, kernel_size, strides, dilation):
    """Explicit ONNX pads [b_1.., e_1..] from glassnet's (Keras's, asymmetric 'same') paddings."""
    spatial = _spatial(layer, shape, rank)
    if layer.padding != "valid" and any(n is None for n in spatial):
        raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) uses padding={layer.padding!r} over spatial "
                         f"axes of unknown size {spatial}; ONNX export needs them known. Give Input() a full shape.")
    pads = kernels.paddings(spatial, kernel_size, strides, dilation, layer.padding)
    return [int(b) for b, _ in pads] + [int(a) for _, a in pads]


def _conv(g, layer, x, shape, rank, weight, bias, group, kernel_size, strides, dilation):
    """One ONNX Conv (channels first) with glassnet's padding; ``weight`` is (F, C/group, *k)."""
    pads = _onnx_pads(layer, shape, rank, kernel_size, strides, dilation)
    inputs = [x, g.const("kernel", weight)] + ([g.const("bias", bias)] if bias is not None else [])
    return g.op("Conv", inputs, kernel_shape=list(kernel_size), strides=list(strides), dilations=list(dilation),
                pads=pads, group=int(group))


def _export_conv(g, layer, x, shape):
    rank = layer.rank
    # glassnet kernel (*k, C/groups, F) -> ONNX (F, C/groups, *k)
    weight = np.transpose(layer.kernel.value, (rank + 1, rank) + tuple(range(rank)))
    bias = layer.bias.value if layer.use_bias else None
    x = _to_channels_first(g, layer, x, rank)
    z = _conv(g, layer, x, shape, rank, weight, bias, layer.groups, layer.kernel_size, layer.strides,
              layer.dilation_rate)
    return _activation(g, layer.activation, _from_channels_first(g, layer, z, rank), layer)


def _depthwise_weight(kernel, rank):
    # (*k, C, M) -> (C·M, 1, *k): output channel c·M + m as glassnet orders them
    k = kernel.reshape(kernel.shape[:rank] + (-1,))
    return np.transpose(k, (rank,) + tuple(range(rank)))[:, None]


def _export_depthwise_conv(g, layer, x, shape):
    rank = layer.rank
    channels = layer.kernel.value.shape[rank]
    weight = _depthwise_weight(layer.kernel.value, rank)
    bias = layer.bias.value if layer.use_bias else None
    x = _to_channels_first(g, layer, x, rank)
    z = _conv(g, layer, x, shape, rank, weight, bias, channels, layer.kernel_size, layer.strides,
              layer.dilation_rate)
    return _activation(g, layer.activation, _from_channels_first(g, layer, z, rank), layer)


def _export_separable_conv(g, layer, x, shape):
    rank = layer.rank
    depthwise, pointwise = layer.depthwise_kernel.value, layer.pointwise_kernel.value
    channels = depthwise.shape[rank]
    x = _to_channels_first(g, layer, x, rank)
    z = _conv(g, layer, x, shape, rank, _depthwise_weight(depthwise, rank), None, channels, layer.kernel_size,
              layer.strides, layer.dilation_rate)
    ones = (1,) * rank
    point = np.transpose(pointwise, (rank + 1, rank) + tuple(range(rank)))  # (1.., C·M, F) -> (F, C·M, 1..)
    bias = [g.const("bias", layer.bias.value)] if layer.use_bias else []
    z = g.op("Conv", [z, g.const("pointwise_kernel", point)] + bias, kernel_shape=list(ones), strides=list(ones),
             pads=[0] * (2 * rank))
    return _activation(g, layer.activation, _from_channels_first(g, layer, z, rank), layer)


def _export_pooling(g, layer, x, shape):
    rank = layer.rank
    ones = (1,) * rank
    pads = _onnx_pads(layer, shape, rank, layer.pool_size, layer.strides, ones)
    x = _to_channels_first(g, layer, x, rank)
    attrs = dict(kernel_shape=list(layer.pool_size), strides=list(layer.strides), pads=pads)
    if isinstance(layer, (AveragePooling1D, AveragePooling2D)):
        y = g.op("AveragePool", [x], count_include_pad=0, **attrs)  # divide by the real elements, as Keras
    else:
        y = g.op("MaxPool", [x], **attrs)
    return _from_channels_first(g, layer, y, rank)


def _reduce(g, op_type, x, axes, keepdims):
    if g.opset >= 18 or op_type == "ReduceSum":  # ReduceSum takes its axes as an input from opset 13
        return g.op(op_type, [x, g.const("axes", list(axes), dtype=np.int64)], keepdims=int(keepdims))
    return g.op(op_type, [x], axes=list(axes), keepdims=int(keepdims))


def _export_global_pooling(g, layer, x, shape):
    rank = len(shape) - 2
    axes = list(range(1, rank + 1)) if layer.data_format == "channels_last" else list(range(2, rank + 2))
    op_type = "ReduceMax" if isinstance(layer, (GlobalMaxPooling1D, GlobalMaxPooling2D)) else "ReduceMean"
    return _reduce(g, op_type, x, axes, layer.keepdims)


# --- normalization, rescaling, padding, upsampling, inference identities ------------------------------
def _scale_shift(g, layer, y, param_shape):
    if layer.scale:
        y = g.op("Mul", [y, g.const("gamma", layer.gamma.value.reshape(param_shape))])
    if layer.center:
        y = g.op("Add", [y, g.const("beta", layer.beta.value.reshape(param_shape))])
    return y


def _export_batch_normalization(g, layer, x, shape):
    # inference: y = γ·(x − μ_moving)·r + β,  r = 1/√(σ²_moving + ε), as predict computes it
    param_shape = layer._param_shape
    mean = layer.moving_mean.value.reshape(param_shape)
    r = 1.0 / np.sqrt(layer.moving_variance.value.reshape(param_shape) + g.dtype.type(layer.epsilon))
    y = g.op("Mul", [g.op("Sub", [x, g.const("moving_mean", mean)]), g.const("inv_std", r)])
    return _scale_shift(g, layer, y, param_shape)


def _export_layer_normalization(g, layer, x, shape):
    # composed: μ and σ² over the normalised axes, x̂ = (x − μ)/√(σ² + ε), then γ, β
    axes = list(layer._norm_axes)
    xc = g.op("Sub", [x, _reduce(g, "ReduceMean", x, axes, True)])
    var = _reduce(g, "ReduceMean", g.op("Mul", [xc, xc]), axes, True)
    x_hat = g.op("Div", [xc, g.op("Sqrt", [g.op("Add", [var, g.scalar(layer.epsilon)])])])
    return _scale_shift(g, layer, x_hat, layer._param_shape)


def _export_rescaling(g, layer, x, shape):
    scale = g.const("scale", np.asarray(layer.scale))
    offset = g.const("offset", np.asarray(layer.offset))
    return g.op("Add", [g.op("Mul", [x, scale]), offset])


def _export_zero_padding(g, layer, x, shape):
    width = layer._pad_width(len(shape))
    pads = [int(b) for b, _ in width] + [int(a) for _, a in width]
    return g.op("Pad", [x, g.const("pads", pads, dtype=np.int64)], mode="constant")


def _export_upsampling2d(g, layer, x, shape):
    if layer.interpolation != "nearest":
        raise ValueError(f"Layer '{layer.name}' (UpSampling2D) uses interpolation={layer.interpolation!r}; ONNX "
                         "export supports interpolation='nearest' only.")
    axes = (1, 2) if layer.data_format == "channels_last" else (2, 3)
    scales = [1.0] * len(shape)
    for axis, factor in zip(axes, layer.size):
        scales[axis] = float(factor)
    return g.op("Resize", [x, "", g.const("scales", scales, dtype=np.float32)], mode="nearest",
                nearest_mode="floor", coordinate_transformation_mode="asymmetric")


# --- merge layers (functional models) ---------------------------------------------------------------
def _chain(g, op_type, xs):
    y = xs[0]
    for x in xs[1:]:
        y = g.op(op_type, [y, x])
    return y


def _export_add(g, layer, xs, shapes):
    return _chain(g, "Add", xs)


def _export_subtract(g, layer, xs, shapes):
    return g.op("Sub", list(xs))


def _export_multiply(g, layer, xs, shapes):
    return _chain(g, "Mul", xs)


def _export_average(g, layer, xs, shapes):
    return g.op("Div", [_chain(g, "Add", xs), g.scalar(len(xs))])


def _export_maximum(g, layer, xs, shapes):
    return g.op("Max", list(xs))


def _export_minimum(g, layer, xs, shapes):
    return g.op("Min", list(xs))


def _export_concatenate(g, layer, xs, shapes):
    return g.op("Concat", list(xs), axis=int(layer.axis))



# --- transposed convolutions ----------------------------------------------------------------------------
def _export_conv_transpose(g, layer, x, shape):
    rank = layer.rank
    spatial = _spatial(layer, shape, rank)
    if any(n is None for n in spatial):
        raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) needs spatial axes of known size for ONNX "
                         f"export, got {spatial}. Give Input() a full shape.")
    # glassnet kernel (*k, filters, channels) is the forward conv filters -> channels; ONNX ConvTranspose
    # takes that conv's weight (channels, filters, *k)
    weight = np.transpose(layer.kernel.value, (rank + 1, rank) + tuple(range(rank)))
    x = _to_channels_first(g, layer, x, rank)
    z = g.op("ConvTranspose", [x, g.const("kernel", weight)], kernel_shape=list(layer.kernel_size),
             strides=list(layer.strides), dilations=list(layer.dilation_rate), pads=[0] * (2 * rank))
    starts, ends, extra = [], [], []
    for n, (size, (before, _)), k, st, d in zip(spatial, layer._geometry(spatial), layer.kernel_size, layer.strides,
                                                layer.dilation_rate):
        full = (n - 1) * st + (k - 1) * d + 1  # the un-cropped ConvTranspose output
        starts.append(before)
        ends.append(before + size)
        extra.append(max(0, before + size - full))
    if any(extra):  # past the last window: positions that only get the bias
        z = g.op("Pad", [z, g.const("pads", [0] * (rank + 2) + [0, 0] + extra, dtype=np.int64)], mode="constant")
    axes = list(range(2, rank + 2))
    z = g.op("Slice", [z, g.const("starts", starts, dtype=np.int64), g.const("ends", ends, dtype=np.int64),
                       g.const("axes", axes, dtype=np.int64)])
    if layer.use_bias:
        z = g.op("Add", [z, g.const("bias", layer.bias.value.reshape((-1,) + (1,) * rank))])
    return _activation(g, layer.activation, _from_channels_first(g, layer, z, rank), layer)


# --- reshaping ------------------------------------------------------------------------------------------
def _export_permute(g, layer, x, shape):
    return g.op("Transpose", [x], perm=[int(a) for a in layer._perm])


def _export_repeat_vector(g, layer, x, shape):
    y = g.op("Unsqueeze", [x, g.const("axes", [1], dtype=np.int64)])
    return g.op("Tile", [y, g.const("repeats", [1, layer.n, 1], dtype=np.int64)])


def _export_cropping(g, layer, x, shape):
    rank = len(layer._cropping)
    axes = list(range(1, rank + 1)) if layer.data_format == "channels_last" else list(range(2, rank + 2))
    starts = [int(b) for b, _ in layer._cropping]
    ends = [-int(a) if a else np.iinfo(np.int64).max for _, a in layer._cropping]
    return g.op("Slice", [x, g.const("starts", starts, dtype=np.int64), g.const("ends", ends, dtype=np.int64),
                          g.const("axes", axes, dtype=np.int64)])


def _export_upsampling1d(g, layer, x, shape):
    scales = [1.0] * len(shape)
    scales[1] = float(layer.size)
    return g.op("Resize", [x, "", g.const("scales", scales, dtype=np.float32)], mode="nearest",
                nearest_mode="floor", coordinate_transformation_mode="asymmetric")


def _known(layer, dims, what):
    if any(d is None for d in dims):
        raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) needs {what} of known size for ONNX export, "
                         f"got {tuple(dims)}. Give Input() a full shape.")
    return [int(d) for d in dims]


def _export_group_normalization(g, layer, x, shape):
    a, groups = layer._axis, layer.groups
    dims = _known(layer, shape[1:], "the non-batch axes")
    grouped = [0] + dims[:a - 1] + [groups, dims[a - 1] // groups] + dims[a:]
    xg = g.op("Reshape", [x, g.const("grouped_shape", grouped, dtype=np.int64)])
    axes = list(layer._group_reduce_axes)
    xc = g.op("Sub", [xg, _reduce(g, "ReduceMean", xg, axes, True)])
    var = _reduce(g, "ReduceMean", g.op("Mul", [xc, xc]), axes, True)
    x_hat = g.op("Div", [xc, g.op("Sqrt", [g.op("Add", [var, g.scalar(layer.epsilon)])])])
    x_hat = g.op("Reshape", [x_hat, g.const("shape", [0] + dims, dtype=np.int64)])
    return _scale_shift(g, layer, x_hat, layer._param_shape)


def _export_embedding(g, layer, x, shape):
    if layer.mask_zero:
        raise ValueError(f"Layer '{layer.name}' (Embedding) has mask_zero=True; masks have no ONNX export. Build the "
                         "model with mask_zero=False to export it.")
    ids = g.op("Cast", [x], to=g.onnx.TensorProto.INT64)  # glassnet models feed the ids as floats
    return g.op("Gather", [g.const("embeddings", layer.embeddings.value), ids], axis=0)


def _export_time_distributed(g, layer, x, shape):
    inner_in = (None,) + tuple(shape[2:])
    flat = g.op("Reshape", [x, g.const("flat_shape", [-1] + _known(layer, shape[2:], "the per-step axes"),
                                       dtype=np.int64)])
    y, inner_out = _export_layer(g, layer.layer, flat, inner_in)
    lead = g.op("Slice", [g.op("Shape", [x]), g.const("start", [0], dtype=np.int64),
                          g.const("end", [2], dtype=np.int64)])
    out_shape = g.op("Concat", [lead, g.const("step_shape", _known(layer, inner_out[1:], "the per-step outputs"),
                                              dtype=np.int64)], axis=0)
    return g.op("Reshape", [y, out_shape])


# --- recurrent layers: ONNX RNN/LSTM/GRU over (time, batch, features) --------------------------------------
_RNN_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def _rnn_activation(layer, activation):
    name = _RNN_ACTIVATIONS.get(activation.name) if _ACTIVATIONS.get(activation.fn, (None,))[0] == activation.name \
        else None
    if name is None or activation.params:
        raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) uses the activation {activation.name!r}; "
                         f"ONNX export of recurrent layers supports {', '.join(_RNN_ACTIVATIONS)}.")
    return name


def _export_recurrent(g, layer, x, shape):
    if layer.return_state:
        raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) has return_state=True; ONNX export takes one "
                         "output per layer.")
    if getattr(layer, "stateful", False):
        raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) is stateful; ONNX export needs stateless "
                         "recurrent layers.")
    u = layer.units
    W, U = layer.kernel.value, layer.recurrent_kernel.value  # (in, G·u), (u, G·u)
    zeros = np.zeros(W.shape[1], dtype=W.dtype)
    if isinstance(layer, LSTM):
        op_type = "LSTM"
        order = [0, 3, 1, 2]  # Keras i, f, c, o -> ONNX i, o, f, c
        activations = [layer.recurrent_activation, layer.activation, layer.activation]
        wb, rb, attrs = (layer.bias.value if layer.use_bias else zeros), zeros, {}
    elif isinstance(layer, GRU):
        op_type = "GRU"
        order = [0, 1, 2]  # z, r, h in both
        activations = [layer.recurrent_activation, layer.activation]
        if not layer.use_bias:
            wb, rb = zeros, zeros
        elif layer.reset_after:
            wb, rb = layer.bias.value[0], layer.bias.value[1]
        else:
            wb, rb = layer.bias.value, zeros
        attrs = {"linear_before_reset": int(layer.reset_after)}
    else:
        op_type, order = "RNN", [0]
        activations = [layer.activation]
        wb, rb, attrs = (layer.bias.value if layer.use_bias else zeros), zeros, {}

    def gates(m):  # (..., G·u) -> (G·u, ...) rows in ONNX gate order
        blocks = [m[..., i * u:(i + 1) * u] for i in order]
        return np.concatenate(blocks, axis=-1).T

    names = [_rnn_activation(layer, a) for a in activations]
    w = g.const("W", gates(W)[None])
    r = g.const("R", gates(U)[None])
    b = g.const("B", np.concatenate([gates(wb[None])[:, 0], gates(rb[None])[:, 0]])[None])
    seq = g.op("Transpose", [x], perm=[1, 0, 2])  # (time, batch, features)
    if layer.go_backwards:  # process (and, as Keras, emit) the steps in reverse
        seq = g.op("Slice", [seq, g.const("starts", [-1], dtype=np.int64),
                             g.const("ends", [np.iinfo(np.int64).min], dtype=np.int64),
                             g.const("axes", [0], dtype=np.int64), g.const("steps", [-1], dtype=np.int64)])
    out = g.fresh(op_type)
    y, y_h = f"{out}/Y", f"{out}/Y_h"
    g.nodes.append(g.onnx.helper.make_node(op_type, [seq, w, r, b], [y, y_h], name=out, hidden_size=u,
                                           activations=names, **attrs))
    if layer.return_sequences:  # Y: (time, 1, batch, u)
        return g.op("Transpose", [g.op("Squeeze", [y, g.const("axes", [1], dtype=np.int64)])], perm=[1, 0, 2])
    return g.op("Squeeze", [y_h, g.const("axes", [0], dtype=np.int64)])  # Y_h: (1, batch, u)



def _export_bidirectional(g, layer, x, shape):
    if layer.merge_mode is None or layer.return_state:
        raise ValueError(f"Layer '{layer.name}' (Bidirectional) returns a list (merge_mode=None or return_state=True);"
                         " ONNX export takes one output per layer.")
    y_f, _ = _export_layer(g, layer.forward_layer, x, shape)
    y_b, _ = _export_layer(g, layer.backward_layer, x, shape)
    if layer.return_sequences:  # the backward layer's outputs back to forward time order
        y_b = g.op("Slice", [y_b, g.const("starts", [-1], dtype=np.int64),
                             g.const("ends", [np.iinfo(np.int64).min], dtype=np.int64),
                             g.const("axes", [1], dtype=np.int64), g.const("steps", [-1], dtype=np.int64)])
    mode = layer.merge_mode
    if mode == "concat":
        return g.op("Concat", [y_f, y_b], axis=-1)
    if mode == "sum":
        return g.op("Add", [y_f, y_b])
    if mode == "ave":
        return g.op("Div", [g.op("Add", [y_f, y_b]), g.scalar(2)])
    return g.op("Mul", [y_f, y_b])


def _export_dot(g, layer, xs, shapes):
    s1, s2 = (tuple(s) for s in shapes)
    a, b = layer._axes([len(s1), len(s2)])
    us = []
    for x, axis in zip(xs, (a, b)):
        if layer.normalize:  # u = x / √max(Σx², 1e-12)
            sq = _reduce(g, "ReduceSum", g.op("Mul", [x, x]), [axis], True)
            x = g.op("Div", [x, g.op("Sqrt", [g.op("Max", [sq, g.scalar(1e-12)])])])
        us.append(x)
    u1, u2 = us
    # m1 (N, p, d) with the contracted axis last, m2 (N, d, q) with it first
    m1 = (g.op("Unsqueeze", [u1, g.const("axes", [1], dtype=np.int64)]) if len(s1) == 2 else
          u1 if a == 2 else g.op("Transpose", [u1], perm=[0, 2, 1]))
    m2 = (g.op("Unsqueeze", [u2, g.const("axes", [2], dtype=np.int64)]) if len(s2) == 2 else
          u2 if b == 1 else g.op("Transpose", [u2], perm=[0, 2, 1]))
    y = g.op("MatMul", [m1, m2])
    out = list(layer.compute_output_shape([s1, s2])[1:])
    if out.count(None) > 1:
        raise ValueError(f"Layer '{layer.name}' (Dot) needs at most one unknown output axis for ONNX export, got "
                         f"{tuple(out)}.")
    if None in out:  # the batch is copied (0) and the unknown axis inferred (-1)
        target = [0] + [-1 if d is None else int(d) for d in out]
    else:
        target = [-1] + [int(d) for d in out]
    return g.op("Reshape", [y, g.const("shape", target, dtype=np.int64)])



def _export_multi_head_attention(g, layer, xs, shapes):
    if len(xs) > 3:
        raise ValueError(f"Layer '{layer.name}' (MultiHeadAttention) is called with an attention_mask; masks have no "
                         "ONNX export. Export a model without attention_mask.")
    q, v, k = xs[:3]
    H, dk, dv = layer.num_heads, layer.key_dim, layer.value_dim

    def project(x, w, b, size, perm):  # x·W + b, split into heads: (n, t, H·size) -> (n, t, H, size) -> perm
        w = w.value
        y = g.op("MatMul", [x, g.const("kernel", w.reshape(w.shape[0], -1))])
        if b is not None:
            y = g.op("Add", [y, g.const("bias", b.value.reshape(-1))])
        y = g.op("Reshape", [y, g.const("heads_shape", [0, 0, H, size], dtype=np.int64)])
        return g.op("Transpose", [y], perm=perm)

    Q = project(q, layer.wq, layer.bq, dk, [0, 2, 1, 3])      # (n, H, t, dk)
    K = project(k, layer.wk, layer.bk, dk, [0, 2, 3, 1])      # (n, H, dk, s)
    V = project(v, layer.wv, layer.bv, dv, [0, 2, 1, 3])      # (n, H, s, dv)
    scores = g.op("Mul", [g.op("MatMul", [Q, K]), g.scalar(1.0 / math.sqrt(dk))])
    A = g.op("Softmax", [scores], axis=-1)                    # over the keys
    O = g.op("Transpose", [g.op("MatMul", [A, V])], perm=[0, 2, 1, 3])  # (n, t, H, dv)
    O = g.op("Reshape", [O, g.const("merged_shape", [0, 0, H * dv], dtype=np.int64)])
    wo = layer.wo.value
    y = g.op("MatMul", [O, g.const("attention_output/kernel", wo.reshape(H * dv, -1))])
    if layer.bo is not None:
        y = g.op("Add", [y, g.const("attention_output/bias", layer.bo.value)])
    return y


def _export_input_layer(g, layer, x, shape):
    return x


def _export_sequential(g, model, x, shape):
    for layer in model.layers:
        x, shape = _export_layer(g, layer, x, shape)
    return x


def _export_graph(g, model, xs):
    """A Functional model's nodes in topological order; ``xs`` are the input tensor names (model input order).
    Returns the names of its outputs."""
    names = {id(t): x for t, x in zip(model._inputs, xs)}
    for node in model._nodes:
        if isinstance(node.layer, InputLayer):
            continue
        args = [names[id(t)] for t in node.inputs]
        shapes = [tuple(t.shape) for t in node.inputs]
        if node.list_input:
            y, _ = _export_layer(g, node.layer, args, shapes)
        else:
            y, _ = _export_layer(g, node.layer, args[0], shapes[0])
        if len(node.outputs) != 1:
            raise ValueError(f"Layer '{node.layer.name}' ({type(node.layer).__name__}) has several outputs, which "
                             "ONNX export does not support.")
        names[id(node.outputs[0])] = y
    return [names[id(t)] for t in model._outputs]


def _export_functional(g, model, x, shape):  # a Functional model used as a layer (one input, one output)
    if len(model._inputs) != 1 or len(model._outputs) != 1:
        raise ValueError(f"Model '{model.name}' nested in another model must have one input and one output for "
                         "ONNX export.")
    return _export_graph(g, model, [x])[0]


LAYER_EXPORTERS = {
    Dense: _export_dense,
    Activation: _export_activation,
    Dropout: _export_dropout,
    Flatten: _export_flatten,
    Reshape: _export_reshape,
    Normalization: _export_normalization,
    InputLayer: _export_input_layer,
    Sequential: _export_sequential,
    Functional: _export_functional,
    Conv1D: _export_conv,
    Conv2D: _export_conv,
    DepthwiseConv2D: _export_depthwise_conv,
    SeparableConv2D: _export_separable_conv,
    MaxPooling1D: _export_pooling,
    MaxPooling2D: _export_pooling,
    AveragePooling1D: _export_pooling,
    AveragePooling2D: _export_pooling,
    GlobalAveragePooling1D: _export_global_pooling,
    GlobalAveragePooling2D: _export_global_pooling,
    GlobalMaxPooling1D: _export_global_pooling,
    GlobalMaxPooling2D: _export_global_pooling,
    BatchNormalization: _export_batch_normalization,
    LayerNormalization: _export_layer_normalization,
    Rescaling: _export_rescaling,
    ZeroPadding1D: _export_zero_padding,
    ZeroPadding2D: _export_zero_padding,
    UpSampling2D: _export_upsampling2d,
    SpatialDropout1D: _export_dropout,
    SpatialDropout2D: _export_dropout,
    GaussianNoise: _export_dropout,
    GaussianDropout: _export_dropout,
    Add: _export_add,
    Subtract: _export_subtract,
    Multiply: _export_multiply,
    Average: _export_average,
    Maximum: _export_maximum,
    Minimum: _export_minimum,
    Concatenate: _export_concatenate,
    DepthwiseConv1D: _export_depthwise_conv,
    SeparableConv1D: _export_separable_conv,
    Conv1DTranspose: _export_conv_transpose,
    Conv2DTranspose: _export_conv_transpose,
    Permute: _export_permute,
    RepeatVector: _export_repeat_vector,
    Cropping1D: _export_cropping,
    Cropping2D: _export_cropping,
    UpSampling1D: _export_upsampling1d,
    GroupNormalization: _export_group_normalization,
    Embedding: _export_embedding,
    TimeDistributed: _export_time_distributed,
    LSTM: _export_recurrent,
    GRU: _export_recurrent,
    SimpleRNN: _export_recurrent,
    Bidirectional: _export_bidirectional,
    Dot: _export_dot,
    MultiHeadAttention: _export_multi_head_attention,
}


def _export_layer(g, layer, x, shape):
    """Emit ``layer``'s nodes; returns (output name, output shape)."""
    exporter = LAYER_EXPORTERS.get(type(layer))  # exact class: a subclass may change the math
    if exporter is None:
        raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) has no ONNX export. Layers that export: "
                         f"{', '.join(sorted(cls.__name__ for cls in LAYER_EXPORTERS))}.")
    if layer.dtype != g.dtype.name:
        raise ValueError(f"Layer '{layer.name}' computes in {layer.dtype} but the model's input is {g.dtype.name}; "
                         "ONNX export needs one float dtype throughout. Build every layer with the same dtype.")
    scope, g.scope = g.scope, layer.name
    try:
        y = exporter(g, layer, x, shape)
    finally:
        g.scope = scope
    if isinstance(layer, Functional):
        return y, tuple(layer.output_shape)
    return y, tuple(layer.compute_output_shape(shape))


# --- the model ------------------------------------------------------------------------------------
def _import_onnx():
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as e:
        raise ImportError("Exporting to ONNX needs the `onnx` package: pip install 'glassnet[onnx]'.") from e
    return onnx


def _check_arguments(model, opset, input_name, output_name, onnx):
    if type(model) not in (Sequential, Functional):
        raise TypeError(f"ONNX export supports Sequential and Functional models, got {type(model).__name__}.")
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built, so its input shape is unknown. Start it with "
                         "Input(shape), or call model.build((None, n_features)) before exporting.")
    latest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, (int, np.integer)) or isinstance(opset, bool) or not MIN_OPSET <= opset <= latest:
        raise ValueError(f"ONNX export needs an opset between {MIN_OPSET} and {latest} (the installed onnx "
                         f"package's newest), got opset={opset!r}. The default, 17, runs on most runtimes.")
    for what, name in (("input_name", input_name), ("output_name", output_name)):
        if not isinstance(name, str) or not name:
            raise ValueError(f"ONNX export expects {what} to be a non-empty string, got {name!r}.")
    if input_name == output_name:
        raise ValueError(f"ONNX export needs different input and output names, got {input_name!r} for both.")
    dtype = backend.standardize_dtype(model._input_dtype())
    if dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"ONNX export supports float32 and float64 models, got a {dtype} model.")
    return dtype


def _metadata(model):
    props = {}
    for key, value in (getattr(model, "metadata", None) or {}).items():
        props[str(key)] = value if isinstance(value, str) else json.dumps(value)
    props["glassnet_version"] = __version__
    return props


def to_onnx(model, opset=17, input_name=None, output_name=None):
    """The ``onnx.ModelProto`` of a built Sequential or Functional model (checked with ``onnx.checker``).

    A Functional model's inputs are named after its Input layers and a single output "output"; several
    outputs take the model's output names (``output_i`` where that would clash).
    """
    onnx = _import_onnx()
    helper = onnx.helper
    functional = type(model) is Functional
    if functional:
        input_names = list(model.input_names)
        if input_name is not None:
            if len(input_names) != 1:
                raise ValueError(f"Model '{model.name}' has {len(input_names)} inputs; input_name names a single "
                                 "input. Its inputs are named after its Input layers.")
            input_names = [input_name]
        output_names = list(model.output_names)
        if output_name is not None or len(output_names) == 1:
            if len(output_names) != 1:
                raise ValueError(f"Model '{model.name}' has {len(output_names)} outputs; output_name names a single "
                                 "output. Its outputs are named after the model's output names.")
            output_names = ["output" if output_name is None else output_name]
        else:  # an output named after its layer may clash with an input (an input passed straight out) or repeat
            seen = set(input_names)
            for i, name in enumerate(output_names):
                if name in seen:
                    output_names[i] = name = f"output_{i}"
                seen.add(name)
        input_name, output_name = input_names[0], output_names[0]
    elif input_name is None:
        input_layer = getattr(model, "_input_layer", None)
        input_name = input_layer.name if input_layer is not None else "input"
    output_name = "output" if output_name is None else output_name
    dtype = _check_arguments(model, opset, input_name, output_name, onnx)
    opset = int(opset)
    elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    def value_info(name, dims):  # the batch axis is symbolic; other unknown axes stay unnamed
        return helper.make_tensor_value_info(name, elem_type, ["batch"] + list(dims[1:]))

    if functional:
        if len(set(input_names + output_names)) != len(input_names) + len(output_names):
            raise ValueError(f"ONNX export needs different input and output names, got inputs {input_names} and "
                             f"outputs {output_names}.")
        for t in model._inputs:
            if backend.standardize_dtype(t.dtype) != dtype:
                raise ValueError(f"Model '{model.name}' mixes input dtypes; ONNX export needs one float dtype "
                                 "throughout.")
        g = _Graph(onnx, dtype, opset, reserved_names=set(input_names) | set(output_names))
        ys = _export_graph(g, model, input_names)
        for y, name in zip(ys, output_names):  # consumers may read y too, so every output is an Identity
            g.nodes.append(helper.make_node("Identity", [y], [name], name=name))
        inputs = [value_info(n, tuple(t.shape)) for n, t in zip(input_names, model._inputs)]
        outputs = [value_info(n, tuple(t.shape)) for n, t in zip(output_names, model._outputs)]
    else:
        g = _Graph(onnx, dtype, opset, reserved_names={input_name, output_name})
        shape = tuple(model.input_shape)
        y = _export_sequential(g, model, input_name, shape)
        if g.nodes and g.nodes[-1].output[0] == y:  # name the last node's output after the graph output
            g.nodes[-1].output[0] = output_name
        else:  # the model leaves its input unchanged (e.g. only Dropout at inference)
            g.nodes.append(helper.make_node("Identity", [y], [output_name], name=output_name))
        inputs = [value_info(input_name, shape)]
        outputs = [value_info(output_name, tuple(model.output_shape))]

    graph = helper.make_graph(g.nodes, model.name, inputs, outputs, initializer=g.initializers)
    opset_imports = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opset_imports, producer_name="glassnet",
                              producer_version=__version__, doc_string=f"glassnet model '{model.name}'")
    proto.ir_version = helper.find_min_ir_version_for(opset_imports)  # readable by the oldest runtime that can
    helper.set_model_props(proto, _metadata(model))
    size = proto.ByteSize()
    if size >= 2 ** 31:
        raise ValueError(f"Model '{model.name}' is {size / 2 ** 30:.1f} GiB as ONNX; a single ONNX file holds at most "
                         "2 GiB (a protobuf limit).")
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model, filepath, opset=17, input_name=None, output_name=None):
    """Write ``model`` (a built Sequential or Functional) as an ONNX file; returns the path.

    The graph input is named after the model's Input layer (else "input"), the output "output";
    the batch dimension is the symbolic "batch"; float32 or float64 as the model computes.
    """
    proto = to_onnx(model, opset=opset, input_name=input_name, output_name=output_name)
    path = os.fspath(filepath)
    atomic_write(path, proto.SerializeToString())
    return path
