"""Models: Sequential and the training loop they share."""
from .functional import Functional
from .model import Model
from .sequential import Sequential


def load_model(filepath, custom_objects=None, compile=True):
    """Load a model saved with ``model.save('m.glassnet')`` or a Keras 3 ``.keras`` file."""
    from ..saving import load_model as _load
    return _load(filepath, custom_objects=custom_objects, compile=compile)


__all__ = ["Model", "Functional", "Sequential", "load_model"]
