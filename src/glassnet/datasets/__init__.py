"""Data sets that ship with glassnet or load from local files (no downloads)."""
from . import mnist, pima

__all__ = ["mnist", "pima"]


def __getattr__(name):
    if name in ("cifar10", "cifar100", "imdb", "reuters", "boston_housing", "fashion_mnist",
                "california_housing"):
        raise AttributeError(f"glassnet.datasets.{name} is not bundled: glassnet never downloads data. Load your "
                             f"local copy with numpy (e.g. np.loadtxt) and pass the arrays to fit().")
    raise AttributeError(f"module 'glassnet.datasets' has no attribute {name!r}")
