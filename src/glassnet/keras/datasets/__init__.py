"""keras.datasets: the bundled Pima data; the download-based Keras data sets are not available."""
import sys as _sys
import types as _types

from ...datasets import mnist as _mnist
from ...datasets import pima  # noqa: F401


def _mnist_load_data(path=None):
    print("glassnet: keras.datasets.mnist is the bundled 5,000-digit subset (4,000 train / 1,000 test, shuffled), "
          "not the full 70,000 digits, which glassnet cannot download.", file=_sys.stderr)
    return _mnist.load_data()


mnist = _types.SimpleNamespace(load_data=_mnist_load_data)


def __getattr__(name):
    # ImportError (not AttributeError) so that `from keras.x import Name` shows this message
    if name in ("cifar10", "cifar100", "imdb", "reuters", "boston_housing", "fashion_mnist",
                "california_housing"):
        raise ImportError(f"keras.datasets.{name} downloads its data, which glassnet never does. Load a local copy "
                             "with numpy (np.load / np.loadtxt) and pass the arrays to fit().")
    raise AttributeError(f"module 'keras.datasets' has no attribute {name!r}")
