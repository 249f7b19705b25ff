"""Layers: each one's forward and backward math in one place."""
from ..engine.layer import Layer
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer, KerasTensor, Reshape
from .preprocessing import Normalization

__all__ = ["Layer", "Activation", "Dense", "Dropout", "Flatten", "Input", "InputLayer", "KerasTensor",
           "Reshape", "Normalization"]
