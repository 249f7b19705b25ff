"""`import glassnet` stays light; `glassnet tutorial` (make run's job) and `glassnet info` work end to end."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import glassnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))


def test_import_pulls_in_numpy_only():
    code = ("import sys, glassnet; heavy = [m for m in ('matplotlib', 'torch', 'scipy', 'keras', 'jax', 'tensorflow', "
            "'pandas', 'numba', 'glassnet.keras') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
    assert out.stdout.strip() == "[]"


def test_version_says_whether_the_compiled_kernels_are_on():
    def version(**env):
        out = subprocess.run([sys.executable, "-m", "glassnet", "--version"], capture_output=True, text=True,
                             env={**ENV, **env}, check=True, timeout=120)
        return out.stdout.strip()
    assert version().startswith(f"glassnet {glassnet.__version__} (numpy {np.__version__}; ")
    try:
        import numba
    except ImportError:
        assert "NumPy path only" in version()
    else:
        assert f"compiled kernels on (numba {numba.__version__})" in version()
        assert "compiled kernels off (GLASSNET_COMPILED=0)" in version(GLASSNET_COMPILED="0")


def test_version_says_whether_convnet_batches_split():
    from glassnet.engine import parallel

    def version(**env):
        out = subprocess.run([sys.executable, "-m", "glassnet", "--version"], capture_output=True, text=True,
                             env={**ENV, **env}, check=True, timeout=120)
        return out.stdout.strip()
    assert "; batch split off (GLASSNET_BATCH_SPLIT=0); " in version(GLASSNET_BATCH_SPLIT="0")
    one_thread = version(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    assert "; batch split off (BLAS limited to one thread); " in one_thread
    assert "; row split off (GLASSNET_ROW_SPLIT=0); " in version(GLASSNET_ROW_SPLIT="0")
    assert version(GLASSNET_BLAS_POOL="0").endswith("; optimizer updates on one core (GLASSNET_BLAS_POOL=0))")
    if parallel.blas_threads() is not None and min(parallel.blas_threads(), parallel._cores()) == 2:
        assert "; convnet batches split over 2 threads; " in version()  # this machine: two cores
        from glassnet.engine import blas_pool, compiled, gemv
        if compiled.available() and gemv._load():
            assert "; 1-row dense products on 2 cores; " in version()
            assert "; row split off (BLAS limited to one thread); " in one_thread
            assert "; row split off (compiled kernels off); " in version(GLASSNET_COMPILED="0")
        if compiled.available() and blas_pool._unusable() is None:
            assert version().endswith("; large optimizer updates on up to 2 BLAS threads)")
            assert one_thread.endswith("; optimizer updates on one core (one core, or BLAS limited to one thread))")
            assert version(GLASSNET_COMPILED="0").endswith("; optimizer updates on one core (compiled kernels off))")


def test_tutorial_job_trains_saves_and_plots(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "glassnet", "tutorial", "--out", str(out)], capture_output=True,
                            text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Epoch 100/100" in result.stdout
    assert "Test loss (MSE):" in result.stdout
    for name in ("pima.glassnet", "pima.weights.safetensors", "learning_curves.png", "history.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "history.json").read_text())
    assert len(history["val_accuracy"]) == 100
    # the saved model takes RAW features: its Normalization layer carries the training statistics
    model = glassnet.load_model(out / "pima.glassnet")
    (x, y), (xt, yt) = glassnet.datasets.pima.load_data()
    accuracy = float(((model.predict(xt, verbose=0)[:, 0] > 0.5) == yt).mean())
    assert accuracy >= 0.75
    assert accuracy == pytest.approx(history["val_accuracy"][-1])
    np.testing.assert_allclose(model.layers[0].mean.value, x.mean(axis=0), rtol=1e-5)
    assert model.metadata["feature_names"][1] == "glucose"

    info = subprocess.run([sys.executable, "-m", "glassnet", "info", str(out / "pima.glassnet")],
                          capture_output=True, text=True, env=ENV, check=True)
    assert "standardize (Normalization)" in info.stdout
    assert '"shape": [null, 8]' in info.stdout
    info = subprocess.run([sys.executable, "-m", "glassnet", "info", str(out / "pima.weights.safetensors")],
                          capture_output=True, text=True, env=ENV, check=True)
    assert "dense/kernel" in info.stdout and "(8, 10)" in info.stdout


def test_pima_loader_split():
    (x, y), (xt, yt) = glassnet.datasets.pima.load_data()
    assert x.shape == (614, 8) and xt.shape == (154, 8)
    assert x.dtype == np.float32
    assert y.mean() == pytest.approx(0.3469, abs=1e-4)
    assert yt.mean() == pytest.approx(0.3571, abs=1e-4)
    np.testing.assert_array_equal(x[0], np.array([6, 148, 72, 35, 0, 33.6, 0.627, 50], dtype=np.float32))


def test_export_onnx_cli_and_info(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    glassnet.set_random_seed(3)
    from glassnet.tutorial import build_model
    (x, y), (xt, yt) = glassnet.datasets.pima.load_data()
    model = build_model(x)
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "pima.glassnet")
    out = tmp_path / "pima.onnx"
    result = subprocess.run([sys.executable, "-m", "glassnet", "export", "onnx", str(tmp_path / "pima.glassnet"),
                             str(out)], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features"]
    (onnx_out,) = session.run(None, {"features": xt})
    np.testing.assert_allclose(onnx_out, model.predict(xt, verbose=0), atol=1e-5)
    info = subprocess.run([sys.executable, "-m", "glassnet", "info", str(out)], capture_output=True, text=True,
                          env=ENV, check=True)
    assert "inputs: features float32 ['batch', 8]" in info.stdout
    assert "opset [17]" in info.stdout
    with pytest.raises(ValueError, match="format='onnx' only"):
        model.export(tmp_path / "m", format="tf_saved_model")


def test_info_reads_keras_files(tmp_path):
    pytest.importorskip("h5py")
    glassnet.set_random_seed(3)
    from glassnet.tutorial import build_model
    (x, _), _ = glassnet.datasets.pima.load_data()
    build_model(x).save(tmp_path / "pima.keras")
    info = subprocess.run([sys.executable, "-m", "glassnet", "info", str(tmp_path / "pima.keras")],
                          capture_output=True, text=True, env=ENV)
    assert info.returncode == 0, info.stderr
    assert "Keras 3 model file" in info.stdout and '"keras_version": "3.15.1"' in info.stdout
    assert "standardize (Normalization)" in info.stdout


@pytest.fixture
def small_model_file(tmp_path):
    import glassnet
    model = glassnet.Sequential([glassnet.Input((3,)), glassnet.layers.Dense(1)])
    model.save(tmp_path / "m.glassnet")
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    (tmp_path / "bad.safetensors").write_bytes(b"xx")
    (tmp_path / "bad.glassnet").write_bytes(b"xx")
    (tmp_path / "afile").write_text("not a folder")
    return tmp_path


@pytest.mark.parametrize("argv,message", [
    (["info", "{d}/nonexist.glassnet"], "no such file"),
    (["info", "{d}"], "is a folder"),
    (["info", "{d}/bad.onnx"], "not a readable ONNX file"),
    (["info", "{d}/bad.safetensors"], "truncated"),
    (["info", "{d}/bad.glassnet"], "not a glassnet model file"),
    (["export", "onnx", "{d}/m.glassnet", "{d}/m.glassnet"], "is the model file itself"),
    (["export", "onnx", "{d}/m.glassnet", "{d}"], "is a folder"),
    (["export", "onnx", "{d}/m.glassnet", "{d}/x.onnx", "--opset", "5"], "opset between 17"),
    (["export", "onnx", "{d}/nope.glassnet", "{d}/x.onnx"], "no such model file"),
    (["tutorial", "--out", "{d}/afile"], "is a file; give a folder"),
    (["run", "{d}/m.glassnet"], "is an archive (a model file?), not a Python script"),
])
def test_bad_input_to_a_command_is_one_line_and_exit_status_2(small_model_file, capsys, argv, message):
    """A missing, wrong or corrupt file is the user's mistake: one line naming it, exit 2 — not a traceback."""
    from glassnet.cli import main
    before = (small_model_file / "m.glassnet").read_bytes()
    assert main([a.format(d=small_model_file) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert (small_model_file / "m.glassnet").read_bytes() == before  # the model survives (export onto itself)


@pytest.mark.parametrize("argv,message", [
    (["tutorial", "--epochs", "0"], "must be a whole number >= 1"),
    (["tutorial", "--epochs", "-1"], "must be a whole number >= 1"),
    (["serve", "m.glassnet", "--port", "99999"], "a TCP port is 1 to 65535"),
    (["serve", "m.glassnet", "--workers", "0"], "must be a whole number >= 1"),
])
def test_out_of_range_numbers_are_refused_by_the_parser(capsys, argv, message):
    """``--port 99999`` printed a banner for :99999 while the server listened elsewhere; ``--epochs 0`` trained,
    saved and then crashed plotting an empty history."""
    from glassnet.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    from glassnet.tutorial import main as tutorial
    with pytest.raises(ValueError, match="epochs >= 1"):
        tutorial(epochs=0)


def test_run_resolves_keras_in_processes_the_script_spawns(tmp_path):
    """Processes started with multiprocessing's spawn method do not inherit the import hook; before, they imported
    the real Keras (no backend here) and the pool hung. They inherit sys.path, where glassnet run puts stand-ins."""
    script = tmp_path / "pool.py"
    script.write_text(
        "import multiprocessing as mp\n"
        "import numpy as np\n"
        "from keras.models import Sequential\n"
        "from keras.layers import Dense\n"
        "from tensorflow import keras as tfk\n\n"
        "def work(n):\n"
        "    import keras\n"
        "    model = Sequential([keras.Input((3,)), Dense(2)])\n"
        "    return type(model).__module__, model.predict(np.ones((n, 3)), verbose=0).shape, tfk.__name__\n\n"
        "if __name__ == '__main__':\n"
        "    with mp.get_context('spawn').Pool(2) as pool:\n"
        "        print(pool.map(work, [1, 2]))\n")
    result = subprocess.run([sys.executable, "-m", "glassnet", "run", str(script)], capture_output=True, text=True,
                            env=ENV, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == ("[('glassnet.models.sequential', (1, 2), 'glassnet.keras'), "
                                     "('glassnet.models.sequential', (2, 2), 'glassnet.keras')]"), result.stdout
    import importlib
    from glassnet.keras_import import KerasFinder
    hooked = any(isinstance(f, KerasFinder) for f in sys.meta_path)
    stand_in = importlib.import_module("glassnet._run_shim.keras")  # under its package name it stays inert:
    assert sys.modules.get("keras") is not stand_in  # no module replaced, no hook installed
    assert any(isinstance(f, KerasFinder) for f in sys.meta_path) == hooked
