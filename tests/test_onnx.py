"""ONNX export: every layer and activation runs in ONNX Runtime and matches glassnet's predict."""
import json
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import glassnet  # noqa: E402
from glassnet import Sequential, activations  # noqa: E402
from glassnet.engine.layer import Layer  # noqa: E402
from glassnet.layers import Activation, Dense, Dropout, Flatten, Input, Normalization, Reshape  # noqa: E402
from glassnet.saving.onnx_export import export_onnx, to_onnx  # noqa: E402

BATCHES = (1, 7)  # the batch dimension is dynamic: one graph serves both


def _run(path):
    """Run the exported file in ONNX Runtime on the CPU: returns x -> y."""
    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _assert_matches(model, tmp_path, opset=17, tol=1e-5, run=None, seed=0):
    """Export ``model``, run it for batches of 1 and 7, compare with ``model.predict``."""
    path = export_onnx(model, tmp_path / "model.onnx", opset=opset)
    run = run or _run(path)
    dtype = np.dtype(glassnet.floatx())
    x = np.random.default_rng(seed).normal(size=(max(BATCHES),) + tuple(model.input_shape[1:])).astype(dtype)
    for n in BATCHES:
        got, want = run(x[:n]), model.predict(x[:n], verbose=0)
        assert got.dtype == want.dtype == dtype
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    return path


# --- every activation -------------------------------------------------------------------------------
def _activation(name):
    """A glassnet activation by name; 'gelu_tanh' and 'leaky_relu_0.05' are parametrised copies."""
    if name == "gelu_tanh":
        return activations.Activation("gelu", activations.gelu.fn, activations.gelu.grad, approximate=True)
    if name == "leaky_relu_0.05":
        leaky = activations.leaky_relu
        return activations.Activation("leaky_relu", leaky.fn, leaky.grad, negative_slope=0.05)
    return name


ACTIVATIONS = list(activations.ALL) + ["gelu_tanh", "leaky_relu_0.05"]


def _activation_model(name):
    # once inside Dense, once as an Activation layer
    return Sequential([Input((5,), name="features"), Dense(6, activation=_activation(name)),
                       Activation(_activation(name))])


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_onnxruntime(name, opset, tmp_path):
    _assert_matches(_activation_model(name), tmp_path, opset=opset)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_onnxruntime_float64(name, float64, tmp_path):
    model = _activation_model(name)
    run = None
    if name == "gelu":
        # ONNX Runtime's CPU provider has no float64 Erf kernel; onnx's reference evaluator runs the
        # graph instead (its Erf rounds through float32, hence the looser tolerance)
        from onnx.reference import ReferenceEvaluator
        ref = ReferenceEvaluator(to_onnx(model))
        run, tol = (lambda x: ref.run(None, {"features": x})[0]), 1e-6
    else:
        tol = 1e-12
    _assert_matches(model, tmp_path, tol=tol, run=run)


def test_gelu_uses_the_gelu_op_from_opset_20():
    ops17 = {n.op_type for n in to_onnx(_activation_model("gelu"), opset=17).graph.node}
    ops20 = {n.op_type for n in to_onnx(_activation_model("gelu"), opset=20).graph.node}
    assert "Erf" in ops17 and "Gelu" not in ops17
    assert "Gelu" in ops20 and "Erf" not in ops20


def test_float64_activations_avoid_float32_only_kernels(float64):
    # ONNX Runtime implements these ops for float32 only; float64 graphs compose them from basic ops
    ops = {n.op_type for name in ("elu", "selu", "softplus", "softsign", "leaky_relu", "hard_sigmoid")
           for n in to_onnx(_activation_model(name)).graph.node}
    assert not ops & {"Elu", "Selu", "Softplus", "Softsign", "LeakyRelu", "HardSigmoid"}


# --- every layer ------------------------------------------------------------------------------------
def _adapted(shape=(5,), **kwargs):
    layer = Normalization(**kwargs)
    data = np.random.default_rng(1).normal(3.0, 10.0, size=(100,) + shape)
    layer.adapt(data)
    return layer


def _constant_column():
    layer = Normalization()
    data = np.random.default_rng(1).normal(size=(50, 5))
    data[:, 2] = 4.0  # variance 0: the std is clamped to epsilon
    layer.adapt(data)
    return layer


LAYER_MODELS = {
    "dense_gemm": lambda: [Input((5,)), Dense(3)],
    "dense_no_bias": lambda: [Input((5,)), Dense(3, use_bias=False, activation="relu")],
    "dense_rank3": lambda: [Input((4, 5)), Dense(3, activation="softmax")],
    "dense_rank3_no_bias": lambda: [Input((4, 5)), Dense(3, use_bias=False)],
    "dense_rank4": lambda: [Input((2, 3, 5)), Dense(3, activation="tanh")],
    "dense_input_dim": lambda: [Dense(4, input_dim=5, activation="relu"), Dense(2)],
    "activation": lambda: [Input((5,)), Activation("sigmoid")],
    "activation_rank3_softmax": lambda: [Input((3, 4)), Activation("log_softmax")],
    "activation_linear_only": lambda: [Input((5,)), Activation("linear")],  # graph is one Identity
    "dropout": lambda: [Input((5,)), Dense(4), Dropout(0.5), Dense(2)],
    "dropout_only": lambda: [Input((5,)), Dropout(0.3)],
    "flatten": lambda: [Input((3, 4)), Flatten(), Dense(2)],
    "flatten_rank2": lambda: [Input((5,)), Flatten()],
    "flatten_rank4": lambda: [Input((2, 3, 4)), Flatten()],
    "flatten_channels_first": lambda: [Input((3, 4, 2)), Flatten(data_format="channels_first"), Dense(2)],
    "flatten_channels_first_rank3": lambda: [Input((3, 4)), Flatten(data_format="channels_first")],
    "reshape": lambda: [Input((12,)), Reshape((3, 4)), Dense(2)],
    "reshape_minus_one_first": lambda: [Input((12,)), Reshape((-1, 4))],
    "reshape_minus_one_middle": lambda: [Input((12,)), Reshape((2, -1, 3)), Flatten()],
    "reshape_rank3_to_rank2": lambda: [Input((3, 4)), Reshape((12,)), Dense(2)],
    "normalization": lambda: [Input((5,)), _adapted(), Dense(2)],
    "normalization_given_stats": lambda: [Input((3,)), Normalization(mean=[1.0, -2.0, 3.0],
                                                                     variance=[4.0, 0.25, 9.0])],
    "normalization_invert": lambda: [Input((5,)), _adapted(invert=True)],
    "normalization_rank3": lambda: [Input((4, 3)), _adapted(shape=(4, 3))],
    "normalization_two_axes": lambda: [Input((4, 3)), _adapted(shape=(4, 3), axis=(1, 2))],
    "normalization_axis_none": lambda: [Input((5,)), _adapted(axis=None)],
    "normalization_zero_variance": lambda: [Input((5,)), _constant_column(), Dense(2)],
    "nested_sequential": lambda: [Input((5,)), Sequential([Dense(4, activation="relu"), Dense(2)]),
                                  Activation("softmax")],
}


@pytest.mark.parametrize("name", sorted(LAYER_MODELS))
def test_layer_matches_onnxruntime(name, tmp_path):
    _assert_matches(Sequential(LAYER_MODELS[name]()), tmp_path)


def test_float64_model(float64, tmp_path):
    # gelu's tanh form: ONNX Runtime's CPU provider has no float64 Erf kernel for the exact form
    model = Sequential([Input((12,), name="x"), _adapted(shape=(12,)), Reshape((3, -1)),
                        Dense(5, activation=_activation("gelu_tanh")), Dropout(0.2), Flatten(),
                        Dense(6, activation="elu"), Dense(3, activation="softmax")])
    graph = to_onnx(model).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    floats = [t for t in graph.initializer if t.data_type != onnx.TensorProto.INT64]  # all but Reshape's shape
    assert len(floats) > 6 and all(t.data_type == onnx.TensorProto.DOUBLE for t in floats)
    _assert_matches(model, tmp_path, tol=1e-12)


# --- the tutorial model -----------------------------------------------------------------------------
def test_tutorial_model_on_pima_test_set(pima, tmp_path):
    from glassnet.tutorial import build_model
    (x_train, y_train), (x_test, _) = pima
    model = build_model(x_train)
    model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    model.metadata = {"feature_names": list(glassnet.datasets.pima.FEATURE_NAMES), "dataset": "Pima"}
    path = export_onnx(model, tmp_path / "pima.onnx")
    run = _run(path)
    np.testing.assert_allclose(run(x_test), model.predict(x_test, verbose=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(x_test[:1]), model.predict(x_test[:1], verbose=0), rtol=1e-5, atol=1e-5)

    proto = onnx.load(path)
    assert [i.name for i in proto.graph.input] == ["features"]
    assert [o.name for o in proto.graph.output] == ["output"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["feature_names"]) == list(glassnet.datasets.pima.FEATURE_NAMES)
    assert props["dataset"] == "Pima"
    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    assert sess.get_modelmeta().custom_metadata_map["glassnet_version"] == glassnet.__version__


# --- the graph's interface --------------------------------------------------------------------------
def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_names_and_dynamic_batch_dimension():
    graph = to_onnx(Sequential([Input((3, 4), name="pixels"), Flatten(), Dense(2)])).graph
    assert graph.input[0].name == "pixels" and graph.output[0].name == "output"
    assert _dims(graph.input[0]) == ["batch", 3, 4]
    assert _dims(graph.output[0]) == ["batch", 2]
    assert {t.name for t in graph.initializer} == {"dense/kernel", "dense/bias"}


def test_name_overrides(tmp_path):
    model = Sequential([Input((5,), name="features"), Dense(2, activation="softmax")])
    path = export_onnx(model, tmp_path / "m.onnx", input_name="x", output_name="probabilities")
    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert [o.name for o in sess.get_outputs()] == ["probabilities"]
    assert sess.get_inputs()[0].shape == ["batch", 5]


def test_unknown_non_batch_dimension(tmp_path):
    model = Sequential([Input((None, 5), name="steps"), Dense(3, activation="softmax"), Dropout(0.1)])
    path = export_onnx(model, tmp_path / "m.onnx")
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and not dims[1].dim_param and not dims[1].HasField("dim_value")
    run = _run(path)
    for shape in ((1, 2, 5), (7, 4, 5)):
        x = np.random.default_rng(0).normal(size=shape).astype("float32")
        np.testing.assert_allclose(run(x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_model_without_input_layer_names_its_input_input():
    model = Sequential([Dense(2)])
    model.build((None, 5))
    assert to_onnx(model).graph.input[0].name == "input"


def test_layer_named_like_the_graph_input_does_not_clash(tmp_path):
    model = Sequential([Input((5,), name="input"), Dense(3, name="output"), Dense(2, name="input/Gemm")])
    _assert_matches(model, tmp_path)


def test_same_input_and_output_name_is_refused():
    model = Sequential([Input((5,)), Dense(2)])
    with pytest.raises(ValueError, match="different input and output names"):
        to_onnx(model, input_name="x", output_name="x")


# --- opsets, errors, metadata, files ----------------------------------------------------------------
@pytest.mark.parametrize("opset", [16, 11, 1000, "17", True])
def test_bad_opset_is_refused(opset):
    with pytest.raises(ValueError, match="opset"):
        to_onnx(Sequential([Input((5,)), Dense(2)]), opset=opset)


@pytest.mark.parametrize("opset", [17, 20])
def test_opset_is_recorded(opset, tmp_path):
    model = Sequential([Input((5,)), Dense(3, activation="gelu")])
    path = _assert_matches(model, tmp_path, opset=opset)
    proto = onnx.load(path)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", opset)]
    onnx.checker.check_model(proto, full_check=True)


class Scale(Layer):
    def forward(self, x, training=False):
        return 2 * x, lambda dy: 2 * dy


class MyDense(Dense):
    pass


def test_unsupported_layer_is_named():
    with pytest.raises(ValueError, match=r"'scale'.*\(Scale\) has no ONNX export.*Dense.*Normalization"):
        to_onnx(Sequential([Input((5,)), Dense(3), Scale()]))
    # a subclass may change the math, so it is not exported as its parent
    with pytest.raises(ValueError, match=r"MyDense"):
        to_onnx(Sequential([Input((5,)), MyDense(3)]))


def test_unsupported_activation_is_named():
    cube = activations.Activation("cube", lambda x: x ** 3, lambda x, y, dy: 3 * dy * x * x)
    with pytest.raises(ValueError, match=r"'cube'.*Exportable activations: relu"):
        to_onnx(Sequential([Input((5,)), Dense(3, activation=cube)]))


def test_unbuilt_model_is_refused():
    with pytest.raises(ValueError, match="not built"):
        to_onnx(Sequential([Dense(2)]))


def test_mixed_dtypes_are_refused():
    with pytest.raises(ValueError, match="float64"):
        to_onnx(Sequential([Input((5,)), Dense(3), Dense(2, dtype="float64")]))


def test_unadapted_normalization_is_refused():
    with pytest.raises(ValueError, match="adapt"):
        to_onnx(Sequential([Input((5,)), Normalization()]))


def test_metadata_props_hold_the_glassnet_version():
    model = Sequential([Input((5,)), Dense(2)])
    proto = to_onnx(model)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props == {"glassnet_version": glassnet.__version__}
    assert proto.producer_name == "glassnet" and proto.producer_version == glassnet.__version__


def test_file_is_written_atomically_and_overwritten(tmp_path):
    model = Sequential([Input((5,)), Dense(2)])
    path = tmp_path / "sub" / "model.onnx"
    assert export_onnx(model, path) == os.fspath(path)
    model.layers[0].bias.assign(np.ones(2))
    export_onnx(model, path)
    assert os.listdir(tmp_path / "sub") == ["model.onnx"]  # no temporary file left behind
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(
        next(t for t in onnx.load(path).graph.initializer if t.name == "dense/bias")), np.ones(2))


def test_missing_onnx_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'glassnet\[onnx\]'"):
        export_onnx(Sequential([Input((5,)), Dense(2)]), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
