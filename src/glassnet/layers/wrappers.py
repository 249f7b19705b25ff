"""Wrappers: apply a layer to every time step."""
from ..engine.layer import Layer
from ..engine.registry import deserialize, register, serialize


@register("layers")
class TimeDistributed(Layer):
    """Apply ``layer`` to each time step: (batch, time, ...) → (batch·time, ...) → layer → (batch, time, ...).

    backward reshapes dy the same way, runs the layer's backward once, and reshapes dx back."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed wraps a layer, got {layer!r}.")
        self.layer = layer

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(f"TimeDistributed '{self.name}' expects inputs of rank >= 3 (batch, time, ...), got "
                             f"{tuple(input_shape)}.")
        self.layer._maybe_build((None,) + tuple(input_shape[2:]))

    @property
    def weights(self):
        return self.layer.weights

    @property
    def trainable_weights(self):
        return self.layer.trainable_weights if self.trainable else []

    @property
    def non_trainable_weights(self):
        return self.layer.non_trainable_weights if self.trainable else self.layer.weights

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None,) + tuple(input_shape[2:]))
        return tuple(input_shape[:2]) + tuple(inner[1:])

    def forward(self, x, training=False):
        n, t = x.shape[:2]
        y, backward = self.layer.forward(x.reshape((n * t,) + x.shape[2:]), training)

        def time_backward(dy):
            dx = backward(dy.reshape((n * t,) + dy.shape[2:]))
            return None if dx is None else dx.reshape(x.shape)

        return y.reshape((n, t) + y.shape[1:]), time_backward

    def call(self, x, training=False):
        n, t = x.shape[:2]
        y = self.layer.call(x.reshape((n * t,) + x.shape[2:]), training)
        return y.reshape((n, t) + y.shape[1:])

    def get_config(self):
        return {**super().get_config(), "layer": serialize(self.layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = deserialize("layers", config["layer"], "layer")
        return cls(**config)
