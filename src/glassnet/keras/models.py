"""keras.models"""
from ..models import Model, Sequential, load_model

__all__ = ["Model", "Sequential", "load_model"]
