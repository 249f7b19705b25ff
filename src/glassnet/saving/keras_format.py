"""Keras 3 ``.keras`` files: written so that real Keras loads them, and read from real Keras.

A ``.keras`` file is a zip (ZIP_STORED) of three members:
    metadata.json      {"keras_version": "3.15.1", "date_saved": "2026-01-01@12:00:00"}
    config.json        {"module": "keras", "class_name": "Sequential", "config": {"layers": [...], ...},
                        "registered_name": null, "build_config": {...}, "compile_config": {...}}
    model.weights.h5   layers/<key>/vars/0, 1, ...   one group per layer; <key> is the snake-cased class
                                                     name made unique per class (dense, dense_1, dropout ...)
                       layers/<key>/cell/vars        SimpleRNN / LSTM / GRU keep their weights in their cell
                       layers/<key>/forward_layer/..., backward_layer/...   Bidirectional; TimeDistributed: layer/...
                       layers/<key>/query_dense/vars, key_dense, value_dense, output_dense   MultiHeadAttention
                       optimizer/vars/0, 1, ...      iterations, learning_rate (absent with a schedule),
                                                     then the optimizer's slots in Keras's order
                       vars                          the model's own (empty) group

Reading never imports a module, resolves a callable, or unmarshals code named by the file: Keras
class names are translated through fixed tables to glassnet's registered classes, Lambda layers are
refused, and every HDF5 dataset is checked (a plain dataset stored in the file, of the shape and kind
the architecture needs) before a byte of it is read. Sequential and Functional models of the layers in
``SUPPORTED_LAYERS`` are read; a Functional's ``inbound_nodes`` (Keras tensors naming their layer, node and
output) are translated to glassnet's own functional config, and its layers are written in the order Keras's
``map_graph`` gives them (which names their h5 groups and orders the optimizer's variables).

Optimizer state: every built-in glassnet optimizer maps onto Keras's variables (see ``_slot_layout``).
h5py is an optional dependency: ``pip install 'glassnet[keras]'``.
"""
import io
import json
import math
import os
import re
import time
import zipfile
import zlib

import numpy as np

from ..engine import backend
from . import native

KERAS_VERSION = "3.15.1"  # the Keras release whose layout this module writes (and was checked against)
MEMBERS = {"metadata.json": 1024 * 1024, "config.json": 16 * 1024 * 1024, "model.weights.h5": 8 * 1024 ** 3}
# Layers whose glassnet get_config keys and weight order are Keras's own: translated generically.
_GENERIC_LAYERS = ("Conv1D", "Conv2D", "Conv1DTranspose", "Conv2DTranspose", "DepthwiseConv1D", "DepthwiseConv2D",
                   "SeparableConv1D", "SeparableConv2D", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D",
                   "AveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
                   "GlobalAveragePooling2D", "BatchNormalization", "LayerNormalization", "GroupNormalization",
                   "Permute", "RepeatVector", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D",
                   "UpSampling1D", "UpSampling2D", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
                   "GaussianDropout", "Rescaling", "Embedding", "SimpleRNN", "LSTM", "GRU")
# Keras keeps a recurrent layer's weights in its cell: layers/<key>/cell/vars
_CELL_LAYERS = ("SimpleRNN", "LSTM", "GRU")
# Layers that wrap others: Keras nests the inner layers' weights under these sub-groups
_WRAPPERS = {"Bidirectional": ("layer", "backward_layer"), "TimeDistributed": ("layer",)}
# Merge layers (in functional models)
_MERGE_LAYERS = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot")
_GENERIC_LAYERS += _MERGE_LAYERS + ("MultiHeadAttention",)
# Keras's sub-layers of MultiHeadAttention, in glassnet's weight order (query, key, value, output)
_MHA_PARTS = ("query_dense", "key_dense", "value_dense", "output_dense")
SUPPORTED_LAYERS = ("InputLayer", "Dense", "Activation", "Dropout", "Flatten", "Reshape", "Normalization"
                    ) + _GENERIC_LAYERS + tuple(_WRAPPERS)
_FLOAT_POLICIES = ("float16", "float32", "float64")
# the attribute on a Normalization's h5 vars group by which glassnet marks a layer saved before adapt()
_ADAPTED_ATTR = "glassnet_adapted"
_MAX_DEPTH = 64  # config.json nesting (Keras's own configs nest about 8 deep)
# Keras's activation names that glassnet shares (the same formula and default parameters).
_KERAS_ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "softplus", "softsign",
                      "leaky_relu", "gelu", "silu", "swish", "hard_sigmoid", "exponential", "log_softmax")
_KERAS_INITIALIZERS = ("Zeros", "Ones", "Constant", "RandomUniform", "RandomNormal", "TruncatedNormal",
                       "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
                       "LecunNormal", "Orthogonal", "Identity")
_KERAS_REGULARIZERS = ("L1", "L2", "L1L2")
_KERAS_CONSTRAINTS = ("MaxNorm", "NonNeg", "UnitNorm", "MinMaxNorm")
_KERAS_SCHEDULES = ("ExponentialDecay", "InverseTimeDecay", "PiecewiseConstantDecay", "CosineDecay")
_KERAS_OPTIMIZERS = ("SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta")
# glassnet loss spellings that Keras 3 does not know, and Keras's name for each
_LOSS_ALIASES = {"logcosh": "log_cosh", "huber_loss": "huber", "kullback_leibler_divergence": "kl_divergence"}
# Keras optimizer arguments glassnet has no equivalent for, with the value that means "off"
_OPTIMIZER_OFF = {"use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                  "loss_scale_factor": None, "gradient_accumulation_steps": None}


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("Reading and writing Keras `.keras` files needs h5py: "
                          "pip install 'glassnet[keras]'") from None
    return h5py


def _keras_object(module, class_name, config):
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def _policy(name):
    return _keras_object("keras", "DTypePolicy", {"name": name})


def _snake_case(name):
    """Keras's ``naming.to_snake_case`` (the h5 group of a layer is its class name in this form)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _h5_keys(class_names):
    """Keras's h5 group names for a Sequential's layers: dense, dropout, dense_1, ... (unique per class)."""
    used, keys = {}, []
    for name in class_names:
        base = _snake_case(name)
        if base in used:
            used[base] += 1
            keys.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            keys.append(base)
    return keys


def _slot_layout(opt):
    """Keras's optimizer variables after [iterations, learning_rate], as glassnet slot names.

    Returns ``(blocks, u_product)``: each block is a tuple of slot names, and Keras stores, block after
    block, ``for each trainable variable: for each name in the block``; so ("m", "v") is Adam's
    interleaved momentum/velocity per variable. ``u_product`` is Nadam's scalar, stored last.
    None for an optimizer whose mapping is unknown (its state is then not written or read).
    """
    from .. import optimizers as o
    kind = type(opt)
    if kind is o.SGD:
        return ([("momentum",)] if opt.momentum else []), False
    if kind in (o.Adam, o.AdamW):
        return [("m", "v")] + ([("v_hat",)] if opt.amsgrad else []), False
    if kind is o.RMSprop:
        return ([("velocity",)] + ([("momentum",)] if opt.momentum else [])
                + ([("average_gradient",)] if opt.centered else [])), False
    if kind is o.Adagrad:
        return [("accumulator",)], False
    if kind is o.Adadelta:
        return [("accumulated_grad", "accumulated_delta")], False
    if kind is o.Adamax:
        return [("m", "u")], False
    if kind is o.Nadam:
        return [("m", "v")], True
    return None


def _has_schedule(opt):
    from ..optimizers import schedules
    return isinstance(opt._learning_rate, schedules.LearningRateSchedule) or bool(opt.decay)


# =====================================================================================================
# Writing
# =====================================================================================================
def _unsupported_for_keras(what, detail):
    return ValueError(f"Cannot save as a Keras `.keras` file: {what} {detail}. Save as `.glassnet` instead, which "
                      "keeps everything glassnet supports.")


def _activation_to_keras(act, where):
    name = getattr(act, "name", None)
    from .. import activations
    if name not in _KERAS_ACTIVATIONS or activations.get(name) is not act:
        raise _unsupported_for_keras(where, f"uses activation {name!r}, which Keras does not have. Keras's "
                                            f"activations that glassnet shares: {', '.join(_KERAS_ACTIVATIONS)}")
    return name


def _object_to_keras(obj, module, known, where):
    """Initializer / regularizer / constraint instance -> Keras's serialized dict (None stays None)."""
    if obj is None:
        return None
    name = type(obj).__name__
    if name not in known or not hasattr(obj, "get_config"):
        raise _unsupported_for_keras(where, f"uses {getattr(obj, '__name__', name)!r}, which has no Keras "
                                            f"equivalent. Keras-compatible choices: {', '.join(known)}")
    return _keras_object(module, name, dict(obj.get_config()))


def _generic_to_keras(layer, kind):
    """A layer whose get_config keys are Keras's: convert the dtype and the serialized objects."""
    where = f"{kind} '{layer.name}'"
    config = {}
    for key, value in layer.get_config().items():
        if key == "dtype":
            value = _policy(layer.dtype)
        elif key.endswith("_initializer") and value is not None:
            obj = _from_glassnet("initializers", value)
            value = _object_to_keras(obj, "keras.initializers", _KERAS_INITIALIZERS, where)
        elif key.endswith("_regularizer") and value is not None:
            obj = _from_glassnet("regularizers", value)
            value = _object_to_keras(obj, "keras.regularizers", _KERAS_REGULARIZERS, where)
        elif key.endswith("_constraint") and value is not None:
            obj = _from_glassnet("constraints", value)
            value = _object_to_keras(obj, "keras.constraints", _KERAS_CONSTRAINTS, where)
        elif key in ("activation", "recurrent_activation"):
            from .. import activations
            value = _activation_to_keras(activations.get(value), where)
        elif isinstance(value, tuple):
            value = list(value)
        config[key] = value
    entry = _keras_object("keras.layers", kind, config)
    shape = layer.input_shape
    if kind == "MultiHeadAttention":
        names = ("query_shape", "value_shape", "key_shape")
        entry["build_config"] = {"shapes_dict": {n: list(s) for n, s in zip(names, shape)}}
    elif shape is not None:
        entry["build_config"] = {"input_shape": [list(s) for s in shape] if isinstance(shape, list) else list(shape)}
    return entry


def _wrapper_to_keras(layer, kind):
    config = {"name": layer.name, "trainable": bool(layer.trainable), "dtype": _policy(layer.dtype)}
    if kind == "Bidirectional":
        config.update(merge_mode=layer.merge_mode, layer=_layer_to_keras(layer.forward_layer),
                      backward_layer=_layer_to_keras(layer.backward_layer))
    else:
        config["layer"] = _layer_to_keras(layer.layer)
    entry = _keras_object("keras.layers", kind, config)
    entry["build_config"] = {"input_shape": list(layer.input_shape)}
    return entry


def _inner_layers(layer):
    """(h5 sub-group, inner layer) for a wrapper layer, in the order of its weights; [] for others."""
    kind = type(layer).__name__
    if kind == "Bidirectional":
        return [("forward_layer", layer.forward_layer), ("backward_layer", layer.backward_layer)]
    if kind == "TimeDistributed":
        return [("layer", layer.layer)]
    return []


def _config_var_paths(kind, config):
    """Where Keras keeps a layer's variables, relative to its h5 group ("" is the group itself), in glassnet's
    weight order; from the translated (glassnet) config, before the layer exists (``_write_vars`` writes them)."""
    if kind in _CELL_LAYERS:
        return ["cell"]
    if kind == "MultiHeadAttention":
        return list(_MHA_PARTS)
    if kind in _WRAPPERS:
        subs = [("forward_layer", config["layer"])] if kind == "Bidirectional" else [("layer", config["layer"])]
        if kind == "Bidirectional":
            subs.append(("backward_layer", config["backward_layer"]))
        return [f"{sub}/{p}".rstrip("/") for sub, inner in subs
                for p in _config_var_paths(inner["class_name"], inner["config"])]
    return [""]


def _from_glassnet(kind, value):
    from .. import constraints, initializers, regularizers
    module = {"initializers": initializers, "regularizers": regularizers, "constraints": constraints}[kind]
    return module.get(value)


def _layer_to_keras(layer):
    from ..layers import Activation, Dense, Dropout, Flatten, Normalization, Reshape
    from .. import layers as L
    kind = type(layer).__name__
    if kind in _GENERIC_LAYERS and type(layer) is getattr(L, kind):
        return _generic_to_keras(layer, kind)
    if kind in _WRAPPERS and type(layer) is getattr(L, kind):
        return _wrapper_to_keras(layer, kind)
    if type(layer) not in (Dense, Activation, Dropout, Flatten, Reshape, Normalization):
        raise _unsupported_for_keras(f"layer '{layer.name}'", f"is a {kind}; the `.keras` writer handles "
                                                                f"{', '.join(SUPPORTED_LAYERS[1:])}")
    where = f"{kind} '{layer.name}'"
    config = {"name": layer.name, "trainable": bool(layer.trainable), "dtype": _policy(layer.dtype)}
    build = True
    if isinstance(layer, Dense):
        if layer.activity_regularizer is not None:
            config["activity_regularizer"] = _object_to_keras(layer.activity_regularizer, "keras.regularizers",
                                                              _KERAS_REGULARIZERS, where)
        config.update(
            units=layer.units, activation=_activation_to_keras(layer.activation, where), use_bias=layer.use_bias,
            kernel_initializer=_object_to_keras(layer.kernel_initializer, "keras.initializers",
                                                _KERAS_INITIALIZERS, where),
            bias_initializer=_object_to_keras(layer.bias_initializer, "keras.initializers", _KERAS_INITIALIZERS,
                                              where),
            kernel_regularizer=_object_to_keras(layer.kernel_regularizer, "keras.regularizers",
                                                _KERAS_REGULARIZERS, where),
            bias_regularizer=_object_to_keras(layer.bias_regularizer, "keras.regularizers", _KERAS_REGULARIZERS,
                                              where),
            kernel_constraint=_object_to_keras(layer.kernel_constraint, "keras.constraints", _KERAS_CONSTRAINTS,
                                               where),
            bias_constraint=_object_to_keras(layer.bias_constraint, "keras.constraints", _KERAS_CONSTRAINTS,
                                             where),
            quantization_config=None)
    elif isinstance(layer, Activation):
        config["activation"] = _activation_to_keras(layer.activation, where)
        build = False
    elif isinstance(layer, Dropout):
        config.update(rate=layer.rate, seed=layer.seed,
                      noise_shape=list(layer.noise_shape) if layer.noise_shape is not None else None)
        build = False
    elif isinstance(layer, Flatten):
        config["data_format"] = layer.data_format
    elif isinstance(layer, Reshape):
        config["target_shape"] = list(layer.target_shape)
        build = False
    else:  # Normalization: statistics given as arguments stay in the config (Keras then has no variables)
        fixed = layer._init_mean is not None
        config.update(axis=list(layer.axis), invert=layer.invert,
                      mean=layer.mean.value.tolist() if fixed else None,
                      variance=layer.variance.value.tolist() if fixed else None)
    entry = _keras_object("keras.layers", kind, config)
    if build:
        entry["build_config"] = {"input_shape": list(layer.input_shape)}
    return entry


def _keras_variables(layer):
    """The arrays Keras stores for ``layer`` under layers/<key>/vars, in Keras's order."""
    from ..layers import Normalization
    if isinstance(layer, Normalization):
        if layer._init_mean is not None:
            return []
        count = layer.count.value
        if 0 <= int(count) < 2 ** 31:
            count = count.astype(np.int32)  # Keras's "int" variable
        return [layer.mean.value, layer.variance.value, count]
    return [w.value for w in layer.weights]


def _schedule_to_keras(schedule, where):
    from ..optimizers import schedules
    name = type(schedule).__name__
    if name not in _KERAS_SCHEDULES or schedules.deserialize(name) is not type(schedule):
        raise _unsupported_for_keras(where, f"uses the learning-rate schedule {name}, which Keras does not have; "
                                            f"Keras-compatible schedules: {', '.join(_KERAS_SCHEDULES)}")
    return _keras_object("keras.optimizers.schedules", name, dict(schedule.get_config()))


def _optimizer_to_keras(opt):
    from ..optimizers import schedules
    name = type(opt).__name__
    where = f"optimizer {name}"
    if name not in _KERAS_OPTIMIZERS or _slot_layout(opt) is None:
        raise _unsupported_for_keras(where, "is not one of Keras's built-in optimizers "
                                            f"({', '.join(_KERAS_OPTIMIZERS)})")
    if getattr(opt, "schedule_decay", None) is not None:
        raise _unsupported_for_keras(where, "uses Keras 2's schedule_decay, which Keras 3's Nadam does not have")
    config = dict(opt.get_config())
    decay = config.pop("decay", None)
    lr = opt._learning_rate
    if isinstance(lr, schedules.LearningRateSchedule):
        if decay:
            raise _unsupported_for_keras(where, "combines a learning-rate schedule with Keras 2's decay")
        config["learning_rate"] = _schedule_to_keras(lr, where)
    elif callable(lr):
        raise _unsupported_for_keras(where, "has a callable learning rate, which cannot be stored in a file")
    elif decay:  # Keras 2's lr / (1 + decay * iterations) is Keras 3's InverseTimeDecay(lr, 1, decay)
        config["learning_rate"] = _keras_object("keras.optimizers.schedules", "InverseTimeDecay", {
            "initial_learning_rate": float(lr), "decay_steps": 1, "decay_rate": float(decay), "staircase": False,
            "name": "InverseTimeDecay"})
    base = {k: config.pop(k) for k in ("name", "learning_rate", "weight_decay", "clipnorm", "global_clipnorm",
                                        "clipvalue")}
    return _keras_object("keras.optimizers", name, {**base, **_OPTIMIZER_OFF, **config})


def _loss_to_keras(loss):
    from .. import losses
    if loss is None or isinstance(loss, str):
        return _LOSS_ALIASES.get(loss, loss)
    if isinstance(loss, losses.Loss):
        name = type(loss).__name__
        if losses.get(name) is None or type(losses.get(name)) is not type(loss):
            raise _unsupported_for_keras("the loss", f"{name} is not one of Keras's losses")
        return _keras_object("keras.losses", name, dict(loss.get_config()))
    name = getattr(loss, "__name__", None)
    if name is None:
        raise _unsupported_for_keras("the loss", f"{loss!r} cannot be named in a Keras file")
    return _LOSS_ALIASES.get(name, name)


def _metric_to_keras(metric):
    from .. import metrics
    from ..engine.registry import table
    if isinstance(metric, str):
        return metric
    if isinstance(metric, metrics.Metric):
        if table("metrics").get(type(metric).__name__) is not type(metric):
            raise _unsupported_for_keras("a metric", f"{type(metric).__name__} is not one of Keras's metrics")
        return _keras_object("keras.metrics", type(metric).__name__, dict(metric.get_config()))
    name = getattr(metric, "__name__", None)
    if name is None:
        raise _unsupported_for_keras("a metric", f"{metric!r} cannot be named in a Keras file")
    return name


def _compile_config(model):
    if not model.compiled or getattr(model, "_compile_args", None) is None:
        return None
    metrics = [_metric_to_keras(m) for m in model._metrics_spec or []]
    weighted = [_metric_to_keras(m) for m in model._weighted_spec or []]
    loss_weight = getattr(model, "loss_weight", 1.0)
    return {"optimizer": _optimizer_to_keras(model.optimizer), "loss": _loss_to_keras(model._compile_args["loss"]),
            "loss_weights": None if loss_weight == 1.0 else loss_weight, "metrics": metrics or None,
            "weighted_metrics": weighted or None, "run_eagerly": False, "steps_per_execution": 1,
            "jit_compile": True}


def _input_layer_to_keras(layer, shape, dtype):
    return _keras_object("keras.layers", "InputLayer", {
        "batch_shape": list(shape), "dtype": dtype, "sparse": False, "ragged": False, "name": layer.name,
        "optional": False})


def _keras_layer_order(model):
    """The order of Keras's ``Functional.layers`` for this graph (keras/src/ops/function.py map_graph): by depth
    from the outputs, deepest first, ties in the order a depth-first walk from the outputs first meets them."""
    model_nodes = {id(n) for n in model._nodes}
    finished, nodes, index, layers = set(), [], {}, {}

    def enter(t):  # a node not yet met: note its layer, and walk its inputs (None: nothing to walk)
        node = t.node
        if node is None or id(node) in finished or id(node) not in model_nodes:
            return None
        layers[id(node.layer)] = node.layer
        index.setdefault(id(node.layer), len(index))
        return node, iter(node.inputs)

    for t in model._outputs:  # a depth-first walk (an explicit stack: graphs may be thousands of layers deep)
        stack = [entered for entered in (enter(t),) if entered is not None]
        while stack:
            node, pending = stack[-1]
            for u in pending:
                entered = enter(u)
                if entered is not None:
                    stack.append(entered)
                    break
            else:
                stack.pop()
                finished.add(id(node))
                nodes.append(node)
    node_depth, layer_depth = {}, {}
    for node in reversed(nodes):
        depth = max(node_depth.setdefault(id(node), 0), layer_depth.get(id(node.layer), 0))
        layer_depth[id(node.layer)] = node_depth[id(node)] = depth
        for u in node.inputs:
            if u.node is not None and id(u.node) in finished:
                node_depth[id(u.node)] = max(depth + 1, node_depth.get(id(u.node), 0))
    for t in model._inputs:
        layer = t.node.layer
        if id(layer) not in layer_depth:
            layers[id(layer)] = layer
            layer_depth[id(layer)], index[id(layer)] = 0, -1
    return [layers[i] for i in sorted(layers, key=lambda i: (-layer_depth[i], index[i]))]


def _keras_trainable(model):
    """The model's trainable weights in Keras's order (its layers' order), which its optimizer variables follow."""
    from ..models.functional import Functional
    if type(model) is not Functional:
        return model.trainable_weights
    ours = {id(w) for w in model.trainable_weights}
    out, seen = [], set()
    for layer in _keras_layer_order(model):
        for w in layer.trainable_weights:
            if id(w) in ours and id(w) not in seen:
                seen.add(id(w))
                out.append(w)
    return out if len(out) == len(ours) else model.trainable_weights


def _saved_layers(model):
    """The layers in the order Keras names their h5 groups."""
    from ..models.functional import Functional
    return _keras_layer_order(model) if type(model) is Functional else model.layers


def _functional_config(model):
    """glassnet's Functional -> Keras's functional config (layers with inbound_nodes of Keras tensors)."""
    from ..layers import InputLayer
    gconfig = model.get_config()
    tensors = {}
    ids = {id(n) for n in model._nodes}
    for layer in model.layers:
        for k, node in enumerate(n for n in layer._inbound_nodes if id(n) in ids):
            for i, t in enumerate(node.outputs):
                tensors[(layer.name, k, i)] = t
    for t in model.inputs:
        tensors[(t.node.layer.name, 0, t.index)] = t

    def tensor(ref):
        t = tensors.get(tuple(ref))
        shape = list(t.shape) if t is not None else None
        dtype = getattr(t, "dtype", None) or model.dtype
        return {"class_name": "__keras_tensor__", "config": {"shape": shape, "dtype": np.dtype(dtype).name,
                                                             "keras_history": list(ref)}}

    layers, by_name = [], {la.name: la for la in model.layers}
    specs = {spec["name"]: spec for spec in gconfig["layers"]}
    for spec in (specs[la.name] for la in _keras_layer_order(model)):
        layer = by_name[spec["name"]]
        if isinstance(layer, InputLayer):
            t = tensors.get((layer.name, 0, 0))
            shape = list(t.shape) if t is not None else list(layer.batch_shape)
            entry = _input_layer_to_keras(layer, shape, np.dtype(getattr(t, "dtype", None) or model.dtype).name)
            entry["inbound_nodes"] = []
        else:
            entry = _layer_to_keras(layer)
            nodes = []
            for node in spec["inbound_nodes"]:
                args = [tensor(r) for r in node["args"]]
                if type(layer).__name__ == "MultiHeadAttention":  # mha(query, value[, key], attention_mask=...)
                    refs = node["args"]
                    positional = args[:2] + (args[2:3] if refs[2] != refs[1] else [])
                    nodes.append({"args": positional, "kwargs": {"attention_mask": args[3]} if len(args) > 3 else {}})
                    continue
                nodes.append({"args": [args] if node["list_input"] else args, "kwargs": {}})
            entry["inbound_nodes"] = nodes
        entry["name"] = layer.name
        layers.append(entry)
    config = {"name": model.name, "trainable": bool(model.trainable), "layers": layers,
              "input_layers": gconfig["input_layers"], "output_layers": gconfig["output_layers"]}
    out = {"module": "keras.src.models.functional", "class_name": "Functional", "config": config,
           "registered_name": "Functional", "build_config": {"input_shape": None}}
    out["compile_config"] = _compile_config(model)
    return out


def _model_config(model):
    from ..models import Sequential
    from ..models.functional import Functional
    if type(model) is Functional:
        return _functional_config(model)
    if type(model) is not Sequential:
        raise _unsupported_for_keras(f"model '{model.name}'", f"is a {type(model).__name__}; the `.keras` writer "
                                                              "handles Sequential models")
    input_shape = list(model.input_shape)
    input_layer = model._input_layer
    input_config = {"batch_shape": input_shape, "dtype": model._input_dtype(), "sparse": False, "ragged": False,
                    "name": input_layer.name if input_layer is not None else "input_layer", "optional": False}
    layers = [_keras_object("keras.layers", "InputLayer", input_config)]
    layers += [_layer_to_keras(layer) for layer in model.layers]
    config = {"name": model.name, "trainable": bool(model.trainable), "dtype": _policy(model.dtype),
              "layers": layers, "build_input_shape": input_shape}
    out = _keras_object("keras", "Sequential", config)
    out["build_config"] = {"input_shape": input_shape}
    out["compile_config"] = _compile_config(model)
    return out


def _optimizer_arrays(model):
    """Keras's optimizer variables for ``model.optimizer`` (fresh zeros where glassnet has not built it)."""
    opt = model.optimizer
    blocks, u_product = _slot_layout(opt)
    trainable = _keras_trainable(model)
    arrays = [np.asarray(opt.iterations, np.int32 if opt.iterations < 2 ** 31 else np.int64)]
    if not _has_schedule(opt):
        arrays.append(np.asarray(opt._learning_rate, np.float32))  # Keras's learning rate is a floatx variable
    built = opt.built and [id(w) for w in opt.weights] == [id(w) for w in model.trainable_weights]
    where = {}
    if built:
        for g, group in enumerate(opt.groups):
            for w, sl in zip(group.weights, group.slices):
                where[id(w)] = (g, sl)
    for block in blocks:
        for w in trainable:
            for name in block:
                if built:
                    g, sl = where[id(w)]
                    arrays.append(opt.slots[g][name][sl].reshape(w.shape))
                else:  # what build() would create for this weight
                    arrays.append(opt.build_slots(np.zeros(w.size, w.dtype))[name].reshape(w.shape))
    if u_product:
        arrays.append(np.asarray(opt.u_product if built else 1.0, trainable[0].dtype if trainable else np.float32))
    return arrays


def _write_vars(group, layer):
    """Write ``layer``'s variables under ``group`` where Keras keeps them (inner layers, RNN cells)."""
    vars_group = group.create_group("vars")
    vars_group.attrs["name"] = layer.name
    inner = _inner_layers(layer)
    if inner:
        for sub, la in inner:
            _write_vars(group.create_group(sub), la)
        return
    if type(layer).__name__ == "MultiHeadAttention":
        arrays = _keras_variables(layer)
        per = len(arrays) // len(_MHA_PARTS)
        for part, i in zip(_MHA_PARTS, range(0, len(arrays), per)):
            sub = group.create_group(part).create_group("vars")
            sub.attrs["name"] = part
            for j, arr in enumerate(arrays[i:i + per]):
                sub[str(j)] = np.array(arr, order="C")
        for part in ("_dropout_layer", "_softmax"):
            group.create_group(part).create_group("vars").attrs["name"] = part.strip("_")
        return
    if type(layer).__name__ in _CELL_LAYERS:
        vars_group = group.create_group("cell").create_group("vars")
        vars_group.attrs["name"] = f"{_snake_case(type(layer).__name__)}_cell"
    for i, arr in enumerate(_keras_variables(layer)):
        vars_group[str(i)] = np.array(arr, order="C")  # (ascontiguousarray would make scalars 1-d)
    if getattr(layer, "adapted", True) is False and getattr(layer, "_init_mean", None) is None:
        vars_group.attrs[_ADAPTED_ATTR] = np.int8(0)  # Keras ignores it; glassnet reads the layer back unadapted


def _weights_h5(model, include_optimizer):
    h5py = _h5py()
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        layers = f.create_group("layers")
        saved = _saved_layers(model)
        for key, layer in zip(_h5_keys(type(layer).__name__ for layer in saved), saved):
            _write_vars(layers.create_group(key), layer)
        if include_optimizer and model.compiled and model.optimizer is not None:
            group = f.create_group("optimizer").create_group("vars")
            group.attrs["name"] = model.optimizer.name
            for i, arr in enumerate(_optimizer_arrays(model)):
                group[str(i)] = np.array(arr, order="C")  # (ascontiguousarray would make scalars 1-d)
        f.create_group("vars").attrs["name"] = model.name
    return buf.getvalue()


def save_model(model, filepath, overwrite=True, include_optimizer=True):
    """Write ``model`` as a Keras 3 ``.keras`` file that ``keras.saving.load_model`` opens."""
    filepath = os.fspath(filepath)
    if not filepath.endswith(".keras"):
        raise ValueError(f"A Keras model file must end in `.keras`. Received: filepath={filepath}")
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built; build it (or train it) before saving.")
    native._check_overwrite(filepath, overwrite)
    config = _model_config(model)
    weights = _weights_h5(model, include_optimizer)
    metadata = {"keras_version": KERAS_VERSION, "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("metadata.json", json.dumps(metadata))
        zf.writestr("config.json", json.dumps(config, default=native.json_plain))
        zf.writestr("model.weights.h5", weights)
    native.atomic_write(filepath, buf.getvalue())


# =====================================================================================================
# Reading
# =====================================================================================================
def _bad(filepath, problem):
    return ValueError(f"{filepath}: {problem}")


def _open(filepath):
    return native.open_archive(filepath, allowed=MEMBERS, what="Keras `.keras` file")


def _read_member(zf, filepath, name):
    return native.read_member(zf, name, MEMBERS)


def _malformed(filepath, problem):
    return _bad(filepath, f"config.json is malformed: {problem}.")


def _refuse_code(node, filepath, path="config", depth=0):
    """Refuse Lambda layers and marshalled Python functions anywhere in the config, before anything else."""
    if depth > _MAX_DEPTH:
        raise _bad(filepath, f"config.json nests deeper than {_MAX_DEPTH} levels (at {path[:200]}): corrupt or "
                             "hostile.")
    if isinstance(node, dict):
        name = node.get("class_name")
        if name == "Lambda" or name == "__lambda__" or name == "TFSMLayer":
            layer = (node.get("config") or {}).get("name") if isinstance(node.get("config"), dict) else None
            raise _bad(filepath, f"it holds a {name} {'layer ' + repr(layer) + ' ' if layer else ''}at {path}, i.e. "
                                 "Python code. glassnet never runs code from a model file (Keras refuses it too in "
                                 "safe_mode). Rebuild the model with built-in layers, or rebuild the layer in code "
                                 "and load only the weights.")
        for key, value in node.items():
            _refuse_code(value, filepath, f"{path}.{key}", depth + 1)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _refuse_code(value, filepath, f"{path}[{i}]", depth + 1)


def _policy_name(value, where):
    if value is None:
        return None
    name = value
    if isinstance(value, dict):
        if value.get("class_name") not in ("DTypePolicy", "FloatDTypePolicy") or not isinstance(value.get("config"),
                                                                                                 dict):
            raise ValueError(f"{where}: dtype policy {value.get('class_name')!r} is not supported; glassnet reads the "
                             f"plain policies {', '.join(_FLOAT_POLICIES)} (no quantized policies).")
        name = value["config"].get("name")
    if name not in _FLOAT_POLICIES:
        raise ValueError(f"{where}: dtype {name!r} is not supported; glassnet computes in one of "
                         f"{', '.join(_FLOAT_POLICIES)} (no mixed precision).")
    return name


def _read_named(kind, value, where, known, what):
    """A Keras serialized initializer/regularizer/constraint -> glassnet's {"class_name", "config"} (or a name)."""
    from ..engine.registry import table
    if value is None:
        return None
    if isinstance(value, str):
        if value not in table(kind):
            raise ValueError(f"{where}: unknown {what} {value!r}.")
        return value
    if not isinstance(value, dict) or not isinstance(value.get("class_name"), str):
        raise ValueError(f"{where}: cannot read {what} {value!r}.")
    name = value["class_name"]
    if name not in known or name not in table(kind):
        raise ValueError(f"{where}: {what} {name!r} is not supported by glassnet. Supported: {', '.join(known)}.")
    config = value.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError(f"{where}: the config of {what} {name} must be an object, got {config!r}.")
    config = {k: v for k, v in config.items() if not (k in ("input_axes", "output_axes") and v is None)}
    return {"class_name": name, "config": config}


def _read_activation(value, where):
    from .. import activations
    if value is None:
        return "linear"
    if isinstance(value, dict) and value.get("class_name") == "function" and isinstance(value.get("config"), str):
        value = value["config"]  # a function saved by name only
    if not isinstance(value, str) or value not in activations.ALL:
        raise ValueError(f"{where}: activation {value!r} is not supported by glassnet. Supported: "
                         f"{', '.join(activations.ALL)}.")
    return value


# Keras config keys that glassnet can drop when they hold the value that means "not used"
_HARMLESS = {"quantization_config": (None,), "lora_rank": (None, 0), "lora_alpha": (None,),
             "sparse": (False, None), "ragged": (False, None), "optional": (False, None),
             "activity_regularizer": (None,), "rms_scaling": (False,), "use_gate": (False,),
             "sliding_window": (None,), "kernel_regularizer": (None,), "bias_regularizer": (None,),
             "kernel_constraint": (None,), "bias_constraint": (None,)}
_LAYER_KEYS = {
    "Dense": ("units", "activation", "use_bias", "kernel_initializer", "bias_initializer", "kernel_regularizer",
              "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"),
    "Activation": ("activation",),
    "Dropout": ("rate", "seed", "noise_shape"),
    "Flatten": ("data_format",),
    "Reshape": ("target_shape",),
    "Normalization": ("axis", "invert", "mean", "variance"),
}


def _init_keys(cls):
    """The config keys a generic glassnet layer class takes (its constructor's named arguments)."""
    import inspect
    from ..engine.layer import Layer
    keys = []
    for c in cls.__mro__:
        if c is Layer or "__init__" not in vars(c):
            if c is Layer:
                break
            continue
        params = inspect.signature(c.__init__).parameters
        keys += [k for k, p in params.items() if k != "self" and k not in keys and p.kind in (
            p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return tuple(k for k in keys if k != "weights")


def _shape_list(value, where, what, batch=True):
    ok = isinstance(value, list) and len(value) <= 16 and all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in value)
    if not ok:
        raise ValueError(f"{where}: {what} must be a list of positive ints or null, got {value!r}.")
    return value


def _translate_layer(entry, index, custom_objects):
    """One Keras layer entry -> (glassnet class, glassnet config, Keras class name)."""
    from .. import layers as L
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) or not isinstance(
            entry.get("config"), dict):
        raise ValueError(f"layer {index} must be {{\"class_name\": ..., \"config\": {{...}}}}, got {entry!r:.200}")
    kind, config = entry["class_name"], dict(entry["config"])
    name = config.get("name")
    where = f"layer {index} ({kind} {name!r})"
    if custom_objects and kind in custom_objects:  # a user's own glassnet layer class, given in code
        config["dtype"] = _policy_name(config.get("dtype"), where)
        for key, allowed in _HARMLESS.items():
            if key in config and config[key] in allowed:
                del config[key]
        return custom_objects[kind], config, kind
    classes = {"InputLayer": L.InputLayer, "Dense": L.Dense, "Activation": L.Activation, "Dropout": L.Dropout,
               "Flatten": L.Flatten, "Reshape": L.Reshape, "Normalization": L.Normalization,
               **{k: getattr(L, k) for k in _GENERIC_LAYERS + tuple(_WRAPPERS)}}
    if kind not in classes:
        extra = " (a nested model)" if kind in ("Sequential", "Functional", "Model") else ""
        raise ValueError(f"{where}: Keras layer class {kind!r}{extra} is not supported by glassnet's .keras reader. "
                         f"Supported layers: {', '.join(SUPPORTED_LAYERS)} (in a Sequential or Functional model). "
                         "Rebuild the model with these, or save it from Keras in another way glassnet can use.")
    if kind == "InputLayer":
        shape = config.pop("batch_shape", config.pop("batch_input_shape", None))
        out = {"name": config.pop("name", None), "dtype": _policy_name(config.pop("dtype", None), where),
               "batch_shape": _shape_list(shape, where, "batch_shape")}
        if len(shape) < 2:
            raise ValueError(f"{where}: batch_shape must include the batch axis and at least one feature axis, "
                             f"got {shape!r}.")
    else:
        out = {"name": config.pop("name", None), "trainable": bool(config.pop("trainable", True)),
               "dtype": _policy_name(config.pop("dtype", None), where)}
        for key in _LAYER_KEYS.get(kind) or _init_keys(classes[kind]):
            if key in config:
                out[key] = config.pop(key)
    for key in list(config):
        allowed = _HARMLESS.get(key, ())
        if key in _HARMLESS and config[key] in allowed:
            del config[key]
    if config.get("lora_rank"):
        raise ValueError(f"{where}: LoRA (lora_rank={config['lora_rank']}) is not supported by glassnet; merge the "
                         "LoRA weights into the kernel in Keras before saving.")
    if config:
        raise ValueError(f"{where}: config keys {sorted(config)} are not supported by glassnet (with these values: "
                         f"{json.dumps(config, default=str)[:200]}).")
    if not isinstance(out.get("name"), str) or not out["name"]:
        raise ValueError(f"{where}: every layer needs a name.")
    if kind == "Dense":
        if out.get("activity_regularizer") is None:
            out.pop("activity_regularizer", None)
        out["activation"] = _read_activation(out.get("activation"), where)
        for key in ("kernel_initializer", "bias_initializer"):
            if key in out:
                out[key] = _read_named("initializers", out[key], where, _KERAS_INITIALIZERS, "initializer")
        for key in ("kernel_regularizer", "bias_regularizer", "activity_regularizer"):
            if key in out:
                out[key] = _read_named("regularizers", out[key], where, _KERAS_REGULARIZERS, "regularizer")
        for key in ("kernel_constraint", "bias_constraint"):
            if key in out:
                out[key] = _read_named("constraints", out[key], where, _KERAS_CONSTRAINTS, "constraint")
    elif kind == "Activation":
        out["activation"] = _read_activation(out.get("activation"), where)
    elif kind in _WRAPPERS:
        for key in _WRAPPERS[kind]:
            if not isinstance(out.get(key), dict):
                if key == "backward_layer" and out.get(key) is None:
                    continue
                raise ValueError(f"{where}: '{key}' must be a layer config.")
            cls, cfg, inner = _translate_layer(out[key], f"{index}.{key}", custom_objects)
            if inner in _WRAPPERS or inner == "InputLayer" or cls not in classes.values():
                raise ValueError(f"{where}: Keras layer class {inner!r} inside a {kind} is not supported.")
            out[key] = {"class_name": inner, "config": cfg}
        if kind == "Bidirectional" and out.get("backward_layer") is None:
            raise ValueError(f"{where}: Bidirectional needs its backward_layer config.")
    elif kind in _GENERIC_LAYERS:
        for key in list(out):
            if key in ("activation", "recurrent_activation"):
                out[key] = _read_activation(out[key], where)
            elif key.endswith("_initializer"):
                out[key] = _read_named("initializers", out[key], where, _KERAS_INITIALIZERS, "initializer")
            elif key.endswith("_regularizer"):
                out[key] = _read_named("regularizers", out[key], where, _KERAS_REGULARIZERS, "regularizer")
                if out[key] is None and key == "activity_regularizer":
                    del out[key]
            elif key.endswith("_constraint"):
                out[key] = _read_named("constraints", out[key], where, _KERAS_CONSTRAINTS, "constraint")
    elif kind == "Normalization":
        for key in ("mean", "variance"):
            if out.get(key) is not None:
                try:
                    values = np.asarray(out[key], dtype=np.float64)
                except (TypeError, ValueError):
                    raise ValueError(f"{where}: {key} must be numbers, got {out[key]!r:.200}.") from None
                out[key] = values.tolist()
    return classes[kind], out, kind


def _h5_child(parent, name, want, where):
    """parent[name] if it is a group/dataset stored in this file (hard link); None if absent."""
    h5py = _h5py()
    link = parent.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"{where}/{name} is a {type(link).__name__}: links to other files or paths are refused.")
    obj = parent[name]
    kind = h5py.Group if want == "group" else h5py.Dataset
    if not isinstance(obj, kind):
        raise ValueError(f"{where}/{name} must be an HDF5 {want}, got {type(obj).__name__}.")
    return obj


def _vars(root, path, where):
    """The datasets of the group ``path``/vars, in order 0, 1, ...; each checked before any data is read."""
    group = root
    for part in path.split("/"):
        group = _h5_child(group, part, "group", where)
        if group is None:
            return []
    group = _h5_child(group, "vars", "group", where)
    if group is None:
        return []
    names = list(group.keys())
    if sorted(names, key=lambda n: int(n) if n.isdigit() else -1) != [str(i) for i in range(len(names))]:
        raise ValueError(f"{where}: {path}/vars must hold datasets named 0, 1, ..., got {sorted(names)[:10]}.")
    out = []
    for i in range(len(names)):
        ds = _h5_child(group, str(i), "dataset", f"{where}: {path}/vars")
        label = f"{where}: {path}/vars/{i}"
        if ds.is_virtual or ds.external:
            raise ValueError(f"{label} takes its data from outside the file (virtual or external storage): refused.")
        if ds.dtype.kind not in "fiu" or ds.dtype.itemsize > 8 or len(ds.shape) > 16:
            raise ValueError(f"{label} has dtype {ds.dtype} and rank {len(ds.shape)}; weights are numeric arrays.")
        nbytes = math.prod(int(d) for d in ds.shape) * ds.dtype.itemsize
        if ds.id.get_storage_size() != nbytes:
            raise ValueError(f"{label} declares shape {ds.shape} ({nbytes} bytes) but stores "
                             f"{ds.id.get_storage_size()} bytes: compressed, sparse or corrupt datasets are refused.")
        out.append(ds)
    return out


def _read_dataset(ds, shape, kind, label):
    """Check a dataset against the architecture (shape, float/int kind), then read it."""
    if tuple(ds.shape) != tuple(shape) or (kind == "f") != (ds.dtype.kind == "f"):
        raise ValueError(f"{label} has shape {tuple(ds.shape)} and dtype {ds.dtype}, but the architecture needs "
                         f"shape {tuple(shape)} and {'a float' if kind == 'f' else 'an integer'} dtype: the config "
                         "and the weights disagree (corrupt or hostile file).")
    try:
        return np.asarray(ds[()])
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        raise ValueError(f"{label} cannot be read ({e}): corrupt file.") from None


def _compile_args(comp, filepath):
    """Keras's compile_config -> glassnet compile() arguments (ValueError naming what is unsupported)."""
    from .. import losses, metrics
    from ..engine.registry import table
    hint = " Load with compile=False to get the model without its compile settings."

    def fail(problem):
        return _bad(filepath, f"compile settings: {problem}.{hint}")

    opt = comp.get("optimizer")
    if isinstance(opt, str):  # a name, as compile() accepts
        names = {n.lower(): n for n in _KERAS_OPTIMIZERS}
        opt = {"class_name": names.get(opt.lower(), opt), "config": {}}
    if not isinstance(opt, dict) or opt.get("class_name") not in _KERAS_OPTIMIZERS:
        name = opt.get("class_name") if isinstance(opt, dict) else opt
        raise fail(f"optimizer {name!r} is not supported; glassnet has {', '.join(_KERAS_OPTIMIZERS)}")
    config = opt.get("config")
    if config is not None and not isinstance(config, dict):
        raise fail(f"the config of optimizer {opt['class_name']} must be an object, got {config!r:.200}")
    config = dict(config or {})
    for key, off in _OPTIMIZER_OFF.items():
        value = config.pop(key, off)
        if value != off and not (key == "ema_momentum"):
            raise fail(f"optimizer argument {key}={value!r} is not supported by glassnet")
    lr = config.get("learning_rate")
    if isinstance(lr, dict):
        if lr.get("class_name") not in _KERAS_SCHEDULES:
            raise fail(f"learning-rate schedule {lr.get('class_name')!r} is not supported; glassnet has "
                       f"{', '.join(_KERAS_SCHEDULES)}")
        if not isinstance(lr.get("config") or {}, dict):
            raise fail(f"the config of learning-rate schedule {lr['class_name']} must be an object, got "
                       f"{lr.get('config')!r:.200}")
        try:
            config["learning_rate"] = table("schedules")[lr["class_name"]].from_config(dict(lr.get("config") or {}))
        except (TypeError, ValueError) as e:
            raise fail(f"learning-rate schedule {lr['class_name']}: {e}") from None
    try:
        optimizer = table("optimizers")[opt["class_name"]].from_config(config)
    except (TypeError, ValueError) as e:
        raise fail(f"optimizer {opt['class_name']}: {e}") from None

    def read(value, module, what):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, dict) and value.get("class_name") == "function" and isinstance(value.get("config"), str):
            return value["config"]
        if not isinstance(value, dict) or not isinstance(value.get("class_name"), str):
            raise fail(f"{what} {value!r:.200} is not supported (glassnet models have a single output)")
        try:
            return module.get({"class_name": value["class_name"], "config": value.get("config") or {}})
        except (TypeError, ValueError) as e:
            raise fail(f"{what} {value['class_name']!r} is not supported ({e})") from None

    loss = read(comp.get("loss"), losses, "loss")
    if isinstance(loss, str):
        try:
            losses.get(loss)
        except (TypeError, ValueError) as e:
            raise fail(str(e)) from None
    lists = {}
    for key in ("metrics", "weighted_metrics"):
        value = comp.get(key)
        if value is not None and not isinstance(value, list):
            raise fail(f"{key} must be a list (glassnet models have a single output), got {value!r:.200}")
        lists[key] = [read(m, metrics, "metric") for m in value or []] or None
        for m in lists[key] or []:
            if isinstance(m, str) and m.lower() not in ("accuracy", "acc"):
                try:
                    metrics.get(m)
                except (TypeError, ValueError) as e:
                    raise fail(str(e)) from None
    loss_weights = comp.get("loss_weights")
    if loss_weights is not None and not (isinstance(loss_weights, (int, float)) or (
            isinstance(loss_weights, list) and len(loss_weights) == 1)):
        raise fail(f"loss_weights {loss_weights!r} is not supported (glassnet models have a single output)")
    return {"optimizer": optimizer, "loss": loss, "loss_weights": loss_weights, **lists}


def _restore_optimizer(model, datasets, filepath):
    """Keras's optimizer variables -> glassnet's iterations and slots (all checked before any is set)."""
    opt = model.optimizer
    layout = _slot_layout(opt)
    if not datasets or layout is None:
        return
    blocks, u_product = layout
    trainable = _keras_trainable(model)
    head = 1 if _has_schedule(opt) else 2  # iterations (+ learning_rate, which the config also holds)
    full = head + sum(len(b) for b in blocks) * len(trainable) + int(u_product)
    if len(datasets) not in (head, full):
        raise _bad(filepath, f"the optimizer state holds {len(datasets)} variables, but {type(opt).__name__} on this "
                             f"model has {full} (or {head} before its first step): the compile settings and the "
                             "state disagree. Load with compile=False to skip them.")
    label = f"{filepath}: optimizer/vars"
    iterations = int(_read_dataset(datasets[0], (), "i", f"{label}/0"))
    if head == 2:
        _read_dataset(datasets[1], (), "f", f"{label}/1")
    if iterations < 0:
        raise _bad(filepath, f"optimizer iterations is negative ({iterations}).")
    if len(datasets) == full:  # else Keras saved the optimizer before its first step: no slots yet
        values, i = [], head
        for block in blocks:
            for w in trainable:
                for name in block:
                    value = _read_dataset(datasets[i], w.shape, "f", f"{label}/{i}")
                    if not np.isfinite(value).all():
                        raise _bad(filepath, f"optimizer state optimizer/vars/{i} ({name} of weight '{w.path}') holds "
                                             "NaN or Inf; the run it comes from diverged. Load an earlier checkpoint, "
                                             "or load_model(..., compile=False).")
                    values.append((w, name, value))
                    i += 1
        product = float(_read_dataset(datasets[i], (), "f", f"{label}/{i}")) if u_product else None
        opt.build(model.trainable_weights)
        where = {id(w): (g, sl) for g, group in enumerate(opt.groups) for w, sl in zip(group.weights, group.slices)}
        for w, name, value in values:
            g, sl = where[id(w)]
            opt.slots[g][name][sl] = value.ravel()
        if u_product:
            opt.u_product = product
    opt.iterations = iterations


def _read_config(zf, filepath, custom_objects):
    """config.json -> (model config, translated layers, build shape or None, compile config or None)."""
    try:
        config = json.loads(_read_member(zf, filepath, "config.json"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise _bad(filepath, f"config.json is not valid JSON ({e}).") from None
    _refuse_code(config, filepath)
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise _malformed(filepath, "expected {\"class_name\": \"Sequential\", \"config\": {...}}")
    if config.get("class_name") == "Functional":
        return _read_functional_config(config, filepath, custom_objects)
    if config.get("class_name") != "Sequential":
        raise _bad(filepath, f"the model is a Keras {config.get('class_name')!r}; glassnet reads Sequential and "
                             f"Functional models (of the layers {', '.join(SUPPORTED_LAYERS)}).")
    model_config = config["config"]
    entries = model_config.get("layers")
    if not isinstance(entries, list) or not entries:
        raise _malformed(filepath, "'layers' must be a non-empty list")
    try:
        translated = [_translate_layer(entry, i, custom_objects) for i, entry in enumerate(entries)]
        _policy_name(model_config.get("dtype"), "the model")
    except ValueError as e:
        raise _bad(filepath, str(e)) from None
    if any(kind == "InputLayer" for _, _, kind in translated[1:]):
        raise _malformed(filepath, "an InputLayer may only be the first layer")
    build_config = config.get("build_config")
    if build_config is not None and not isinstance(build_config, dict):
        raise _malformed(filepath, f"'build_config' must be an object or null, got {build_config!r:.200}")
    build_shape = model_config.get("build_input_shape") or (build_config or {}).get("input_shape")
    if translated[0][2] != "InputLayer":
        if build_shape is None:
            raise _bad(filepath, "the model has no input shape (it was never built), so it has no weights.")
        _shape_list(build_shape, f"{filepath}: build_input_shape", "build_input_shape")
    comp = config.get("compile_config")
    if comp is not None and not isinstance(comp, dict):
        raise _malformed(filepath, "'compile_config' must be an object or null")
    return model_config, translated, build_shape, comp


def _history(t, where):
    history = (t.get("config") or {}).get("keras_history") if isinstance(t, dict) and t.get(
        "class_name") == "__keras_tensor__" else None
    if not (isinstance(history, list) and len(history) == 3 and isinstance(history[0], str) and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in history[1:])):
        raise ValueError(f"{where}: layer inputs must be Keras tensors with a keras_history, got {t!r:.200}.")
    return list(history)


def _tensor_refs(node, where, kind=None):
    """One Keras inbound node -> (refs [[layer, node, index], ...], list_input)."""
    if not isinstance(node, dict) or not isinstance(node.get("args"), list):
        raise ValueError(f"{where}: an inbound node must be {{\"args\": [...], \"kwargs\": {{...}}}}.")
    kwargs = node.get("kwargs", {})
    if kind == "MultiHeadAttention" and isinstance(kwargs, dict):  # mha(query, value[, key], attention_mask=...)
        kwargs = dict(kwargs)
        args = list(node["args"])
        if len(args) == 2 and kwargs.get("key") is not None:
            args.append(kwargs.pop("key"))
        mask = kwargs.pop("attention_mask", None)
        for k in ("key", "query_mask", "value_mask", "key_mask", "return_attention_scores", "use_causal_mask"):
            if kwargs.get(k) in (None, False):
                kwargs.pop(k, None)
        if kwargs or len(args) not in (2, 3):
            raise ValueError(f"{where}: MultiHeadAttention calls other than mha(query, value[, key], "
                             f"attention_mask=...) are not supported (got {len(args)} arguments and keyword arguments "
                             f"{json.dumps(kwargs, default=str)[:200]}).")
        refs = [_history(t, where) for t in args]
        refs = refs + ([refs[1]] if len(refs) == 2 else []) + ([_history(mask, where)] if mask is not None else [])
        return refs, True
    if not isinstance(kwargs, dict) or any(not (k in ("mask", "training") and v in (None, False))
                                           for k, v in kwargs.items()):
        raise ValueError(f"{where}: layer calls with keyword arguments {json.dumps(kwargs, default=str)[:200]} are "
                         "not supported by glassnet's .keras reader.")
    args = node["args"]
    list_input = len(args) == 1 and isinstance(args[0], list)
    tensors = args[0] if list_input else args
    if not list_input and len(tensors) != 1:
        raise ValueError(f"{where}: a layer call must take one tensor or one list of tensors.")
    return [_history(t, where) for t in tensors], list_input


def _layer_refs(value, where):
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not value or not all(
            isinstance(r, list) and len(r) == 3 and isinstance(r[0], str) and all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in r[1:]) for r in value):
        raise ValueError(f"{where} must be a list of [layer name, node, index], got {value!r:.200}.")
    return [list(r) for r in value]


def _model_calls(layers, translated, gconfig):
    """Keep the layer calls the model's inputs and outputs lead to, as Keras does (it builds a Functional from
    its inputs and outputs: a layer or call nothing on that path reads is not part of the model); each kept
    layer's calls are renumbered, and so are the references to them. Returns the kept (layers, translated)."""
    specs = {spec["name"]: spec for spec in layers}
    needed = set()  # (layer name, call index)
    stack = [(r[0], r[1]) for r in gconfig["output_layers"] + gconfig["input_layers"]]
    while stack:  # (iterative: a config may chain thousands of layers)
        name, k = stack.pop()
        if (name, k) in needed:
            continue
        calls = specs[name]["inbound_nodes"]
        if k >= len(calls):
            raise ValueError(f"a reference names call {k} of layer {name!r}, which is called {len(calls)} time(s).")
        needed.add((name, k))
        stack.extend((r[0], r[1]) for r in calls[k]["args"])
    index, kept, kept_translated = {}, [], []
    for spec, entry in zip(layers, translated):
        calls = [k for k in range(len(spec["inbound_nodes"])) if (spec["name"], k) in needed]
        if not calls:
            continue  # never read on the way to the outputs (Keras leaves it out of the model too)
        index.update(((spec["name"], old), new) for new, old in enumerate(calls))
        kept.append({**spec, "inbound_nodes": [spec["inbound_nodes"][k] for k in calls]})
        kept_translated.append(entry)

    def renumber(ref):
        return [ref[0], index[(ref[0], ref[1])], ref[2]]

    for spec in kept:
        spec["inbound_nodes"] = [{**node, "args": [renumber(r) for r in node["args"]]}
                                 for node in spec["inbound_nodes"]]
    for key in ("input_layers", "output_layers"):
        gconfig[key] = [renumber(r) for r in gconfig[key]]
    return kept, kept_translated


def _read_functional_config(config, filepath, custom_objects):
    """Keras's functional config -> glassnet's Functional config (translated layers and inbound nodes)."""
    model_config = config["config"]
    entries = model_config.get("layers")
    if not isinstance(entries, list) or not entries:
        raise _malformed(filepath, "'layers' must be a non-empty list")
    layers, translated, names = [], [], set()
    # every name the layers declare, built once (a layer may read the output of one listed after it)
    declared = {e["config"].get("name") for e in entries if isinstance(e, dict) and isinstance(e.get("config"), dict)
                and isinstance(e["config"].get("name"), str)}
    try:
        for i, entry in enumerate(entries):
            cls, cfg, kind = _translate_layer(entry, i, custom_objects)
            name = cfg.get("name")
            if name in names:
                raise ValueError(f"layer {i}: the name {name!r} is used twice.")
            names.add(name)
            nodes = entry.get("inbound_nodes") or []
            if not isinstance(nodes, list):
                raise ValueError(f"layer {i} ({kind} {name!r}): inbound_nodes must be a list.")
            gnodes = []
            for node in nodes:
                refs, list_input = _tensor_refs(node, f"layer {i} ({kind} {name!r})", kind)
                if any(r[0] not in declared for r in refs):
                    raise ValueError(f"layer {i} ({kind} {name!r}): an input comes from an unknown layer.")
                gnodes.append({"args": refs, "list_input": list_input})
            if kind == "InputLayer":
                gnodes = [{"args": [], "list_input": False}]
            elif not gnodes:
                raise ValueError(f"layer {i} ({kind} {name!r}) is never called.")
            layers.append({"class_name": kind, "config": cfg, "name": name, "inbound_nodes": gnodes})
            translated.append((cls, cfg, kind))
        gconfig = {"name": model_config.get("name"), "trainable": bool(model_config.get("trainable", True)),
                   "layers": layers,
                   "input_layers": _layer_refs(model_config.get("input_layers"), "input_layers"),
                   "output_layers": _layer_refs(model_config.get("output_layers"), "output_layers"),
                   "input_names": None, "output_names": None}
        for ref in gconfig["input_layers"] + gconfig["output_layers"]:
            if ref[0] not in names:
                raise ValueError(f"the model's inputs/outputs name an unknown layer {ref[0]!r}.")
        layers, translated = _model_calls(layers, translated, gconfig)
        gconfig["layers"] = layers
    except ValueError as e:
        raise _bad(filepath, str(e)) from None
    comp = config.get("compile_config") or None
    if comp is not None and not isinstance(comp, dict):
        raise _malformed(filepath, "'compile_config' must be an object or null")
    return gconfig, translated, "functional", comp


def _build_functional(config, translated):
    """The Functional that ``_read_functional_config``'s config describes: every layer call made once its inputs
    exist (and after the layer's earlier calls), in one pass over the calls (Kahn's algorithm), so the time grows
    linearly with the number of layers whatever order the file lists them in."""
    from ..layers import InputLayer
    from ..models.functional import Functional
    created, outputs_of, waiting, readers, ready = {}, {}, {}, {}, []
    for spec, (cls, cfg, _) in zip(config["layers"], translated):
        name = spec["name"]
        layer = created[name] = cls.from_config(dict(cfg))
        if isinstance(layer, InputLayer):
            outputs_of[(name, 0)] = [layer.output]
            continue
        for k, node in enumerate(spec["inbound_nodes"]):
            needs = {(r[0], r[1]) for r in node["args"]} | ({(name, k - 1)} if k else set())
            needs = {n for n in needs if n not in outputs_of}
            waiting[(name, k)] = [spec, k, len(needs)]
            for n in needs:
                readers.setdefault(n, []).append((name, k))
            if not needs:
                ready.append((name, k))
    while ready:
        call = ready.pop()
        spec, k, _ = waiting.pop(call)
        node = spec["inbound_nodes"][k]
        args = [outputs_of[(r[0], r[1])][r[2]] for r in node["args"]]
        out = created[call[0]](args if node["list_input"] else args[0])
        outputs_of[call] = out if isinstance(out, list) else [out]
        for reader in readers.pop(call, ()):
            waiting[reader][2] -= 1
            if not waiting[reader][2]:
                ready.append(reader)
    if waiting:
        stuck = list(dict.fromkeys(name for name, _ in waiting))
        raise ValueError(f"Functional config could not be rebuilt: layers {stuck[:10]} refer to tensors that never "
                         "appear (their calls depend on each other in a cycle).")

    def tensors(refs):
        out = [outputs_of[(r[0], r[1])][r[2]] for r in refs]
        return out if len(out) > 1 else out[0]

    return Functional(tensors(config["input_layers"]), tensors(config["output_layers"]), name=config.get("name"),
                      trainable=config.get("trainable", True))


def _build(filepath, model_config, translated, build_shape, budget):
    """The glassnet Sequential the config describes, allocating at most ``budget`` bytes of weights."""
    from ..models import Sequential
    try:
        with backend.weight_budget(budget, filepath):
            if build_shape == "functional":
                return _build_functional(model_config, translated)
            layers = [cls.from_config(dict(cfg)) for cls, cfg, _ in translated]
            model = Sequential(layers, name=model_config.get("name"),
                               trainable=bool(model_config.get("trainable", True)))
            if not model.built:
                model.build(tuple(build_shape))
    except (TypeError, KeyError, AttributeError, IndexError) as e:
        raise _malformed(filepath, f"{type(e).__name__}: {e}") from None
    except ValueError as e:
        raise _bad(filepath, str(e).replace(filepath + ": ", "")) from None
    return model


def _unadapted(h5, keys, body, where):
    """The h5 keys of Normalization layers that glassnet saved before they were adapted: their vars group carries
    ``_ADAPTED_ATTR = 0``. Keras itself keeps no such mark (it normalizes with whatever statistics the layer holds,
    zeros and ones until adapt()), so without the mark a layer counts as adapted, as in Keras."""
    out = set()
    for key, (_, _, kind) in zip(keys, body):
        if kind != "Normalization":
            continue
        layer_group = _h5_child(h5, "layers", "group", where)
        group = _h5_child(layer_group, key, "group", where) if layer_group is not None else None
        group = _h5_child(group, "vars", "group", where) if group is not None else None
        if group is None or _ADAPTED_ATTR not in group.attrs:
            continue
        try:
            value = group.attrs[_ADAPTED_ATTR]
        except (OSError, ValueError, TypeError, RuntimeError) as e:
            raise ValueError(f"{where}: layers/{key}/vars attribute {_ADAPTED_ATTR!r} cannot be read ({e}).") from None
        if np.shape(value) != () or np.asarray(value).dtype.kind not in "iub" or int(value) not in (0, 1):
            raise ValueError(f"{where}: layers/{key}/vars attribute {_ADAPTED_ATTR!r} must be 0 or 1, got "
                             f"{value!r:.100}: corrupt or hostile file.")
        if int(value) == 0:
            out.add(key)
    return out


def _assign_weights(model, keys, layer_vars, filepath, layers=None, unadapted=()):
    """Check every layer's datasets against its weights (count, shape, kind, finite), then assign them all."""
    from ..layers import Normalization
    assignments = []
    layers = layers or model.layers
    for key, layer, datasets in zip(keys, layers, layer_vars):
        # Keras keeps Normalization statistics given as arguments in the config, not in variables
        fixed = isinstance(layer, Normalization) and layer._init_mean is not None
        targets = [] if fixed else layer.weights
        if len(datasets) != len(targets):
            raise _bad(filepath, f"layer '{layer.name}' ({type(layer).__name__}) has {len(targets)} weight arrays but "
                                 f"model.weights.h5 holds {len(datasets)} under layers/{key}: the config and the "
                                 "weights disagree.")
        for i, (w, ds) in enumerate(zip(targets, datasets)):
            label = f"{filepath}: layers/{key}/vars/{i} (weight '{w.path}' of layer '{layer.name}')"
            value = _read_dataset(ds, w.shape, "f" if w.dtype.kind == "f" else "i", label)
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise ValueError(f"{label} contains NaN or Inf; the model it comes from diverged. glassnet refuses to "
                                 "load it; retrain or load an earlier checkpoint.")
            assignments.append((w, value))
    for w, value in assignments:
        w.assign(value.astype(w.dtype))  # Keras stores float64 layers as float32 on JAX/NumPy; count as int32
    for key, layer in zip(keys, layers):
        if isinstance(layer, Normalization):
            # Keras normalizes with whatever statistics it holds; glassnet marks a layer saved unadapted
            layer.adapted = layer._init_mean is not None or key not in unadapted


def load_model(filepath, custom_objects=None, compile=True):
    """Rebuild a Sequential model from a Keras 3 ``.keras`` file; nothing in the file is executed.

    ``custom_objects`` may map a Keras layer class name to a glassnet Layer class (your code); its
    weights are read in ``layer.weights`` order.
    """
    h5py = _h5py()
    filepath = os.fspath(filepath)
    with _open(filepath) as zf:
        model_config, translated, build_shape, comp = _read_config(zf, filepath, custom_objects)
        functional = build_shape == "functional"
        body = translated[1:] if translated[0][2] == "InputLayer" and not functional else translated
        weights_data = _read_member(zf, filepath, "model.weights.h5")
    try:
        h5 = h5py.File(io.BytesIO(weights_data), "r")
    except (OSError, ValueError, RuntimeError) as e:
        raise _bad(filepath, f"model.weights.h5 is not a valid HDF5 file ({e}).") from None
    with h5:
        kinds = [kind for _, _, kind in body]
        keys = _h5_keys(kinds)
        where = f"{filepath}: model.weights.h5"
        try:
            layer_vars = [sum((_vars(h5, f"layers/{key}/{p}".rstrip("/"), where) for p in _config_var_paths(
                kind, cfg)), []) + (_vars(h5, f"layers/{key}", where) if kind in _CELL_LAYERS + tuple(_WRAPPERS)
                                    else []) for key, (_, cfg, kind) in zip(keys, body)]
            layers_group = _h5_child(h5, "layers", "group", where)
            extra = sorted(set(layers_group.keys()) - set(keys)) if layers_group is not None else []
            opt_vars = _vars(h5, "optimizer", where) if compile and comp else []
        except (OSError, KeyError, RuntimeError, TypeError) as e:
            raise _bad(filepath, f"model.weights.h5 is corrupt ({type(e).__name__}: {e}).") from None
        if extra:
            raise _bad(filepath, f"model.weights.h5 holds weights for layers {extra[:5]} that the config does not "
                                 "have: the config and the weights disagree.")
        stored = sum(ds.id.get_storage_size() for group in layer_vars + [opt_vars] for ds in group)
        if stored > len(weights_data):
            raise _bad(filepath, f"model.weights.h5 declares {stored} bytes of weights but is only "
                                 f"{len(weights_data)} bytes long: corrupt or hostile file.")
        # The architecture may allocate what the file holds (at up to 8 bytes a value), plus the
        # statistics of Normalization layers given in the config (a scalar may broadcast to 4096 values).
        budget = sum(ds.size * 8 for group in layer_vars for ds in group)
        budget += sum(16 * max(np.size(cfg["mean"]), 4096) + 8 for _, cfg, kind in body
                      if kind == "Normalization" and cfg.get("mean") is not None)
        model = _build(filepath, model_config, translated, build_shape, budget)
        layers = None
        if functional:
            by_name = {la.name: la for la in model.layers}
            missing = [cfg["name"] for _, cfg, _ in body if cfg["name"] not in by_name]
            if missing:
                raise _malformed(filepath, f"layers {missing[:5]} are not part of the model its inputs and outputs "
                                           "define")
            layers = [by_name[cfg["name"]] for _, cfg, _ in body]
        unadapted = _unadapted(h5, keys, body, where)
        _assign_weights(model, keys, layer_vars, filepath, layers, unadapted)
        model.metadata = {}
        model.training_seed = None
        if compile and comp:
            model.compile(**_compile_args(comp, filepath))
            _restore_optimizer(model, opt_vars, filepath)
    return model
