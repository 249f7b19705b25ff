"""Optimizers with Keras 3 defaults; Keras 2's ``lr=`` and ``decay=`` are accepted (with a notice)."""
from ..engine.registry import deserialize as _deserialize
from . import schedules
from .adam import Adam, Adamax, AdamW, Nadam
from .base import Optimizer
from .rmsprop import Adadelta, Adagrad, RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta", "schedules",
           "get", "serialize", "deserialize"]


def get(identifier):
    """An optimizer from a name ('sgd', 'adam' ...), a config dict, or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        from ..engine.registry import table
        cls = table("optimizers").get(key) or table("optimizers").get(identifier)
        if cls is None:
            raise ValueError(f"Unknown optimizer {identifier!r}. Known optimizers: sgd, adam, adamw, adamax, nadam, "
                             "rmsprop, adagrad, adadelta.")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"Could not interpret optimizer {identifier!r}: pass a name such as 'adam' or an instance "
                    "such as glassnet.optimizers.SGD(learning_rate=0.01).")


def serialize(optimizer):
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def deserialize(config):
    return _deserialize("optimizers", config, "optimizer")
