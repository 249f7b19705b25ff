"""glassnet: Keras-compatible neural networks on a readable NumPy engine.

Every layer's forward and backward pass is plain NumPy in one place (``glassnet.layers``).
"""
__version__ = "0.1.0"

from . import activations, callbacks, constraints, initializers, losses, metrics, optimizers, regularizers  # noqa: E402
from . import datasets, layers, models, utils  # noqa: E402
from .engine.backend import clear_session, epsilon, floatx, set_floatx  # noqa: E402
from .layers import Input  # noqa: E402
from .models import Model, Sequential, load_model  # noqa: E402
from .utils import set_random_seed  # noqa: E402

__all__ = ["Input", "Model", "Sequential", "load_model", "set_random_seed", "floatx", "set_floatx", "epsilon",
           "clear_session", "activations", "callbacks", "constraints", "initializers", "layers", "losses", "metrics",
           "models", "optimizers", "regularizers", "datasets", "utils", "__version__"]
