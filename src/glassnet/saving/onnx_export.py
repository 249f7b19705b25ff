"""ONNX export: a built Sequential model as an ONNX graph that ONNX Runtime (or any ONNX backend) can run.

Each glassnet layer becomes the ONNX nodes that compute the same inference math:

    Dense            z = x·W + b  ->  Gemm (rank-2 input) or MatMul + Add (rank > 2), then the activation
    Activation       y = f(x)     ->  the activation's nodes (below)
    Dropout          y = x        ->  Identity (inference)
    Flatten          Flatten(axis=1); channels_first moves the channel axis last first (Transpose)
    Reshape          Reshape to [-1, *target_shape] (the batch size is inferred), or to
                     [0, *target_shape] when target_shape holds the -1 (0 copies the batch size)
    Normalization    y = (x − μ) / max(σ, ε)  ->  Sub, Div;   invert: y = μ + x·max(σ, ε)  ->  Mul, Add
    InputLayer       nothing (the graph input)

Activations map to one ONNX op where one exists (Relu, Sigmoid, Softmax, HardSigmoid, ...) and are
composed from basic ops where opset 17 has none (gelu: 0.5·x·(1 + erf(x/√2)); silu: x·σ(x)).
ONNX Runtime's CPU kernels for Elu, Selu, Softplus, Softsign, LeakyRelu and HardSigmoid exist for
float32 only, so float64 models get those activations composed from basic ops (same formulas).

The weights become initializers; the batch axis is the symbolic dimension "batch".
"""
import json
import math
import os

import numpy as np

from .. import __version__
from .. import activations as _act
from ..engine import backend
from ..layers.core import Activation, Dense, Dropout, Flatten, InputLayer, Reshape
from ..layers.preprocessing import Normalization
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


def _export_input_layer(g, layer, x, shape):
    return x


def _export_sequential(g, model, x, shape):
    for layer in model.layers:
        x, shape = _export_layer(g, layer, x, shape)
    return x


LAYER_EXPORTERS = {
    Dense: _export_dense,
    Activation: _export_activation,
    Dropout: _export_dropout,
    Flatten: _export_flatten,
    Reshape: _export_reshape,
    Normalization: _export_normalization,
    InputLayer: _export_input_layer,
    Sequential: _export_sequential,
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
    if not isinstance(model, Sequential):
        raise TypeError(f"ONNX export supports Sequential models, got {type(model).__name__}.")
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
    """The ``onnx.ModelProto`` of a built Sequential model (checked with ``onnx.checker``)."""
    onnx = _import_onnx()
    helper = onnx.helper
    if input_name is None:
        input_layer = getattr(model, "_input_layer", None)
        input_name = input_layer.name if input_layer is not None else "input"
    output_name = "output" if output_name is None else output_name
    dtype = _check_arguments(model, opset, input_name, output_name, onnx)
    opset = int(opset)

    g = _Graph(onnx, dtype, opset, reserved_names={input_name, output_name})
    shape = tuple(model.input_shape)
    y = _export_sequential(g, model, input_name, shape)
    if g.nodes and g.nodes[-1].output[0] == y:  # name the last node's output after the graph output
        g.nodes[-1].output[0] = output_name
    else:  # the model leaves its input unchanged (e.g. only Dropout at inference)
        g.nodes.append(helper.make_node("Identity", [y], [output_name], name=output_name))

    elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    def value_info(name, dims):  # the batch axis is symbolic; other unknown axes stay unnamed
        return helper.make_tensor_value_info(name, elem_type, ["batch"] + list(dims[1:]))

    graph = helper.make_graph(g.nodes, model.name, [value_info(input_name, shape)],
                              [value_info(output_name, tuple(model.output_shape))], initializer=g.initializers)
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
    """Write ``model`` (a built Sequential) as an ONNX file; returns the path.

    The graph input is named after the model's Input layer (else "input"), the output "output";
    the batch dimension is the symbolic "batch"; float32 or float64 as the model computes.
    """
    proto = to_onnx(model, opset=opset, input_name=input_name, output_name=output_name)
    path = os.fspath(filepath)
    atomic_write(path, proto.SerializeToString())
    return path
