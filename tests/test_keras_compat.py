"""The keras namespace, Keras 2 spellings, and `glassnet run` on the unchanged tutorial."""
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import glassnet
from glassnet.utils import legacy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, "examples", "tutorial.py")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

TUTORIAL_TEXT = """\
from keras.models import Sequential
from keras.layers import Dense
from keras.optimizers import SGD

model = Sequential()
model.add(Dense(10, input_dim=8, activation='relu'))
model.add(Dense(1, activation='sigmoid'))

sgd = SGD(lr=0.01, decay=1e-6, momentum=0.9, nesterov=True)
model.compile(loss='mse', optimizer=sgd, metrics=['accuracy'])

model.fit(x_train, y_train, epochs=100, batch_size=32, validation_data=(x_test, y_test))
"""


def run_cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    return subprocess.run([sys.executable, "-m", "glassnet", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def final_epoch_line(stdout):
    screen = ANSI.sub("", stdout).replace("\b", "\r")
    lines = [seg for seg in re.split(r"[\r\n]", screen) if seg.strip().startswith("20/20")]
    return lines[-1]


def logged(line, key):
    return float(re.search(rf"(?<![a-z_]){key}: ([0-9.e+-]+)", line).group(1))


def test_example_is_the_tutorial_character_for_character():
    text = open(TUTORIAL).read()
    assert text.endswith(TUTORIAL_TEXT)


def test_glassnet_run_tutorial_raw_features_collapse_like_keras():
    result = run_cli("run", "--seed", "1", TUTORIAL)
    assert result.returncode == 0, result.stderr
    line = final_epoch_line(result.stdout)
    # Keras 3 on raw features: the majority-class predictor (acc 0.6531 / val 0.6429, MSE = positive rate)
    assert logged(line, "val_accuracy") == pytest.approx(0.6429, abs=2e-4)
    assert logged(line, "accuracy") == pytest.approx(0.6531, abs=2e-4)
    assert logged(line, "val_loss") == pytest.approx(0.3571, abs=2e-4)
    assert "Epoch 100/100" in result.stdout
    assert "SGD(lr=...) is Keras 2 spelling" in result.stderr
    assert "SGD(decay=...) is Keras 2 spelling" in result.stderr


@pytest.mark.parametrize("seed", ["2", "3", "4"])
def test_raw_features_always_collapse_to_a_constant_predictor(seed):
    """As in Keras (9 of 10 seeds to all-zeros, seed 4 to all-ones): saturated sigmoid, vanishing gradients."""
    result = run_cli("run", "--seed", seed, TUTORIAL)
    assert result.returncode == 0, result.stderr
    line = final_epoch_line(result.stdout)
    assert logged(line, "val_accuracy") in (pytest.approx(0.6429, abs=2e-4), pytest.approx(0.3571, abs=2e-4))
    assert logged(line, "accuracy") + logged(line, "loss") == pytest.approx(1.0, abs=2e-4)


def test_glassnet_run_seed_makes_runs_identical():
    first, second = (run_cli("run", "--seed", "5", TUTORIAL, "--standardize") for _ in range(2))
    values = lambda out: re.findall(r"[a-z_]+: [0-9.e+-]+", ANSI.sub("", out))  # noqa: E731
    assert len(values(first.stdout)) > 400
    assert values(first.stdout) == values(second.stdout)


def test_glassnet_run_tutorial_standardized_reaches_keras_accuracy():
    result = run_cli("run", "--seed", "1", TUTORIAL, "--standardize")
    assert result.returncode == 0, result.stderr
    line = final_epoch_line(result.stdout)
    assert logged(line, "val_accuracy") >= 0.75
    assert logged(line, "loss") < 0.16


def test_glassnet_run_resolves_tensorflow_keras(tmp_path):
    script = tmp_path / "tf_script.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        import tensorflow as tf
        from tensorflow.keras.models import Sequential
        from tensorflow.keras.layers import Dense
        from keras.utils.np_utils import to_categorical
        import keras.layers.core
        tf.random.set_seed(3)
        x = np.random.rand(40, 3).astype("float32")
        y = to_categorical((x.sum(1) > 1.5).astype(int), 2)
        model = Sequential([Dense(2, input_shape=(3,), activation="softmax")])
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["acc"])
        h = model.fit(x, y, nb_epoch=2, verbose=0)
        print("keys", sorted(h.history), "module", type(model).__module__, "argv", sys.argv[1:])
        try:
            tf.Session
        except AttributeError as e:
            print("tf error:", e)
    """))
    result = run_cli("run", str(script), "--flag", "7")
    assert result.returncode == 0, result.stderr
    assert "keys ['acc', 'loss'] module glassnet.models.sequential argv ['--flag', '7']" in result.stdout
    assert "tf error: tensorflow.Session is not available" in result.stdout
    assert "fit(nb_epoch=...) is Keras 2 spelling" in result.stderr
    assert "keras.utils.np_utils is Keras 2 spelling" in result.stderr
    assert "keras.layers.core is Keras 2 spelling" in result.stderr


def test_glassnet_run_missing_script():
    result = run_cli("run", "no_such_script.py")
    assert result.returncode == 2
    assert "no such script" in result.stderr


def test_keras_namespace_mirrors_keras_paths():
    from glassnet.keras import callbacks, layers, losses, metrics, models, optimizers, utils
    assert models.Sequential is glassnet.Sequential
    assert layers.Dense is glassnet.layers.Dense
    assert optimizers.SGD is glassnet.optimizers.SGD
    assert optimizers.legacy.SGD is glassnet.optimizers.SGD
    assert losses.MeanSquaredError is glassnet.losses.MeanSquaredError
    assert metrics.AUC is glassnet.metrics.AUC
    assert callbacks.EarlyStopping is glassnet.callbacks.EarlyStopping
    np.testing.assert_array_equal(utils.to_categorical([1, 0, 2]), np.eye(3)[[1, 0, 2]])
    assert utils.to_categorical([1, 0]).dtype == np.float64


def test_unsupported_names_say_what_exists():
    with pytest.raises(ImportError, match="keras.layers.Conv3D is not available in glassnet.*Dense"):
        from glassnet.keras.layers import Conv3D  # noqa: F401
    with pytest.raises(ImportError, match="never does. Load a local copy"):
        from glassnet.keras.datasets import cifar10  # noqa: F401


def test_keras2_layer_spellings(capsys):
    legacy._seen.clear()
    layer = glassnet.layers.Dense(output_dim=4, init="zeros", input_dim=3)
    model = glassnet.Sequential([layer])
    assert layer.units == 4
    np.testing.assert_array_equal(layer.kernel.value, np.zeros((3, 4)))
    err = capsys.readouterr().err
    assert "Dense(output_dim=...) is Keras 2 spelling; accepted, the Keras 3 spelling is Dense(units=...)" in err
    assert "Dense(init=...)" in err
    assert err.count("\n") == 2  # one line per spelling
    glassnet.layers.Dense(output_dim=2)
    assert capsys.readouterr().err == ""  # each notice once
    with pytest.raises(TypeError, match="both 'init'"):
        glassnet.layers.Dense(3, init="zeros", kernel_initializer="ones")
    assert model.built


def test_legacy_notices_can_be_silenced(capsys):
    legacy._seen.clear()
    legacy.set_legacy_notices(False)
    try:
        glassnet.optimizers.SGD(lr=0.1)
    finally:
        legacy.set_legacy_notices(True)
    assert capsys.readouterr().err == ""


def test_predict_classes_and_proba(capsys):
    model = glassnet.Sequential([glassnet.Input((2,)), glassnet.layers.Dense(1, activation="sigmoid")])
    model.set_weights([np.array([[1.0], [-1.0]]), np.array([0.0])])
    x = np.array([[2.0, 0.0], [0.0, 2.0]])
    np.testing.assert_array_equal(model.predict_classes(x), [[1], [0]])
    np.testing.assert_allclose(model.predict_proba(x), model.predict(x, verbose=0))
    multi = glassnet.Sequential([glassnet.Input((2,)), glassnet.layers.Dense(3, activation="softmax")])
    multi.set_weights([np.array([[1.0, 0, 0], [0, 0, 1.0]]), np.zeros(3)])
    np.testing.assert_array_equal(multi.predict_classes(x), [0, 2])
    assert "predict_classes" in capsys.readouterr().err


def test_fit_generator_points_to_fit():
    model = glassnet.Sequential([glassnet.Input((2,)), glassnet.layers.Dense(1)])
    with pytest.raises(AttributeError, match="call fit"):
        model.fit_generator(iter([]))


def test_keras_mnist_is_the_bundled_subset_and_says_so(capsys):
    from glassnet.keras.datasets import mnist
    (x, y), (xt, yt) = mnist.load_data()
    assert x.shape == (4000, 28, 28) and xt.shape == (1000, 28, 28) and x.dtype == np.uint8
    assert sorted(np.unique(y)) == list(range(10))
    assert "bundled 5,000-digit subset" in capsys.readouterr().err
