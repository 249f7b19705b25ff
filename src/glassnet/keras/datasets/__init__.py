"""keras.datasets: the bundled Pima data; the download-based Keras data sets are not available."""
from ...datasets import pima  # noqa: F401


def __getattr__(name):
    # ImportError (not AttributeError) so that `from keras.x import Name` shows this message
    if name in ("mnist", "cifar10", "cifar100", "imdb", "reuters", "boston_housing", "fashion_mnist",
                "california_housing"):
        raise ImportError(f"keras.datasets.{name} downloads its data, which glassnet never does. Load a local copy "
                             "with numpy (np.load / np.loadtxt) and pass the arrays to fit().")
    raise AttributeError(f"module 'keras.datasets' has no attribute {name!r}")
