"""Make ``import keras`` / ``import tensorflow.keras`` resolve to ``glassnet.keras`` (for ``glassnet run``)."""
import importlib
import importlib.abc
import importlib.util
import os
import sys
import types

# stand-in keras/tensorflow/tf_keras packages for processes a `glassnet run` script spawns (see _run_shim)
SHIM_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_run_shim")


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass


def _tensorflow_shim():
    from . import keras as gkeras
    from .utils import set_random_seed

    class TensorFlowShim(types.ModuleType):
        def __getattr__(self, name):
            raise AttributeError(f"tensorflow.{name} is not available: `glassnet run` provides only tf.keras (and "
                                 "tf.random.set_seed). Use keras APIs, or run this script with TensorFlow itself.")

    tf = TensorFlowShim("tensorflow")
    tf.keras = gkeras
    tf.random = types.SimpleNamespace(set_seed=set_random_seed)
    tf.__version__ = "glassnet-shim"
    return tf


class KerasFinder(importlib.abc.MetaPathFinder):
    """Maps ``keras[.x]`` and ``tensorflow.keras[.x]`` to ``glassnet.keras[.x]``."""

    def find_spec(self, fullname, path=None, target=None):
        for prefix in ("keras", "tensorflow.keras", "tf_keras"):
            if fullname == prefix or fullname.startswith(prefix + "."):
                alias = "glassnet.keras" + fullname[len(prefix):]
                return importlib.util.spec_from_loader(fullname, _AliasLoader(alias))
        if fullname == "tensorflow":
            shim = _tensorflow_shim()
            loader = _AliasLoader(None)
            loader.create_module = lambda spec: shim
            return importlib.util.spec_from_loader(fullname, loader, is_package=True)
        return None


def install(spawned_too=False):
    """Put the finder first on sys.meta_path (a real keras/tensorflow installed later is shadowed). With
    ``spawned_too``, also put glassnet._run_shim first on sys.path, so that processes started with
    multiprocessing's spawn method (which inherit sys.path, not the finder) resolve keras the same way."""
    if not any(isinstance(f, KerasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, KerasFinder())
        for name in [n for n in sys.modules if n == "keras" or n.startswith(("keras.", "tensorflow"))]:
            del sys.modules[name]
    if spawned_too and SHIM_PATH not in sys.path:
        sys.path.insert(0, SHIM_PATH)


def _become(name):
    """Called by the stand-in package ``name`` (keras, tensorflow, tf_keras) of glassnet._run_shim while it is being
    imported: install the hook and put what it resolves ``name`` to in the stand-in's place in ``sys.modules``
    (the import statement then returns that). Imported under another name (as glassnet._run_shim.keras), it does
    nothing."""
    if name not in ("keras", "tensorflow", "tf_keras"):
        return
    install()
    stand_in = sys.modules.pop(name, None)
    try:
        sys.modules[name] = importlib.import_module(name)
    except BaseException:
        if stand_in is not None:
            sys.modules[name] = stand_in
        raise
