"""``keras`` as glassnet: module paths and names of Keras, Keras 2 spellings included.

``glassnet run script.py`` makes ``import keras`` (and ``tensorflow.keras``) resolve here, so a
Keras script runs unchanged on glassnet's engine. It can also be imported directly:
``from glassnet.keras.models import Sequential``.
"""
from .. import __version__ as _glassnet_version
from . import (activations, backend, callbacks, constraints, datasets, initializers, layers, losses, metrics, models,
               optimizers, regularizers, utils)
from .models import Model, Sequential
from .layers import Input

__version__ = f"3.glassnet-{_glassnet_version}"
version = lambda: __version__  # noqa: E731

__all__ = ["Model", "Sequential", "Input", "activations", "backend", "callbacks", "constraints", "datasets",
           "initializers", "layers", "losses", "metrics", "models", "optimizers", "regularizers", "utils"]
