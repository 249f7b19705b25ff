"""keras.optimizers (Keras 2's lr= and decay= accepted with a notice)."""
import types as _types

from ..optimizers import (SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Nadam, Optimizer, RMSprop, deserialize, get,
                          schedules, serialize)

# Keras 2.11–2.15 kept the pre-2.11 optimizers under keras.optimizers.legacy; here they are the same classes,
# which already follow the Keras 2 rules when given lr=/decay=.
legacy = _types.SimpleNamespace(SGD=SGD, Adam=Adam, RMSprop=RMSprop, Adagrad=Adagrad, Adadelta=Adadelta,
                                Adamax=Adamax, Nadam=Nadam, Optimizer=Optimizer)

__all__ = ["SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta", "Optimizer", "schedules",
           "get", "serialize", "deserialize", "legacy"]
