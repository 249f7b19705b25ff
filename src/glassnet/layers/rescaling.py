"""Rescaling: y = x·scale + offset (e.g. scale=1/255 maps pixel values to [0, 1] inside the model)."""
import numpy as np

from ..engine.layer import Layer
from ..engine.registry import register


def _number_or_array(value, what):
    """A float, or an array for per-feature values; also reads Keras's serialized arrays
    ({"class_name": "__numpy__" or "__tensor__", "config": {"value": [...], "dtype": ...}})."""
    if isinstance(value, dict) and value.get("class_name") in ("__numpy__", "__tensor__"):
        value = (value.get("config") or {}).get("value")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"Rescaling expects `{what}` to be a number or an array of numbers, got {value!r}.") from None
    if not np.isfinite(array).all():
        raise ValueError(f"Rescaling expects a finite `{what}`, got {value!r}.")
    return float(array) if array.ndim == 0 else array


@register("layers")
class Rescaling(Layer):
    """Rescale and shift the inputs:  y = x·scale + offset;  backward: dx = dy·scale.

    ``scale`` and ``offset`` are numbers, or arrays that broadcast against the trailing axes of x
    (one value per channel, say). Integer inputs are cast to the layer's dtype first. No weights.
    """

    supports_masking = True

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = _number_or_array(scale, "scale")
        self.offset = _number_or_array(offset, "offset")

    def forward(self, x, training=False):
        if x.dtype.kind != "f":
            x = x.astype(self.dtype)
        scale = np.asarray(self.scale, dtype=x.dtype)
        y = x * scale + np.asarray(self.offset, dtype=x.dtype)
        if y.shape != x.shape:
            raise ValueError(f"Rescaling '{self.name}': scale {np.shape(self.scale)} and offset "
                             f"{np.shape(self.offset)} must broadcast to the input shape {x.shape} without "
                             "changing it.")
        return y, lambda dy: dy * scale

    def get_config(self):
        config = super().get_config()
        config.update(scale=np.asarray(self.scale).tolist(), offset=np.asarray(self.offset).tolist())
        return config
