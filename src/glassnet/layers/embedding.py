"""Embedding: a trainable lookup table from integer token ids to dense vectors."""
import numpy as np

from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..engine.layer import Layer
from ..engine.registry import register, serialize
from ..utils.legacy import legacy_notice


def _ser(obj, module):
    return None if obj is None else (module.serialize(obj) if hasattr(module, "serialize") else serialize(obj))


@register("layers")
class Embedding(Layer):
    """Turns integer ids into vectors:  y[..., :] = E[x[...], :]  with E of shape (input_dim, output_dim).

    forward:  y = E[x]                       (a row gather; x holds integers in [0, input_dim))
    backward: dE[x[k]] += dy[k] for every position k, so an id that occurs several times collects the
              sum of its gradients (``np.add.at``; plain ``dE[x] += dy`` would keep only one of them).
              The input is a set of integer ids, which have no gradient: backward returns ``None``.
              (An Embedding is normally a model's first layer, so nothing upstream needs a dx.)
    mask:     with ``mask_zero=True`` id 0 is padding, and the output mask is ``x != 0``; RNNs further
              down skip the padded steps.

    Ids may arrive as floats (a model casts its inputs to floatx): whole numbers are accepted and
    converted back (float32 holds every integer up to 2**24 exactly); anything else is a clear error.
    Keras 2's ``input_length`` is accepted and ignored, as Keras 3 does (give the model
    ``Input(shape=(length,))`` instead).
    """

    _LEGACY_KWARGS = {"init": "embeddings_initializer", "W_regularizer": "embeddings_regularizer",
                      "W_constraint": "embeddings_constraint"}

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 embeddings_constraint=None, mask_zero=False, weights=None, activity_regularizer=None, **kwargs):
        if "input_length" in kwargs:
            kwargs.pop("input_length")
            legacy_notice("Embedding(input_length=...)",
                          "Embedding(input_dim, output_dim) after Input(shape=(input_length,)); Keras 3 ignores "
                          "input_length, and so does glassnet")
        for arg, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Embedding expects `{arg}` to be a positive integer, got {value!r}. "
                                 "E.g. Embedding(input_dim=10000, output_dim=64) for a 10,000-word vocabulary.")
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = _initializers.get(embeddings_initializer)
        self.embeddings_regularizer = _regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = _constraints.get(embeddings_constraint)
        self.activity_regularizer = _regularizers.get(activity_regularizer)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.embeddings = None
        self._initial_weights = weights

    def build(self, input_shape=None):
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim),
                                          self.embeddings_initializer, self.embeddings_regularizer,
                                          self.embeddings_constraint)
        if self._initial_weights is not None:
            w = self._initial_weights
            self.set_weights(w if isinstance(w, list) and len(w) == 1 else [w])
            self._initial_weights = None
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def compute_mask(self, x, mask=None):
        if not self.mask_zero:
            return None
        return np.asarray(x) != 0

    # --- the math -------------------------------------------------------------------------------
    def _ids(self, x):
        """The integer ids in ``x``, checked: whole numbers in [0, input_dim)."""
        x = np.asarray(x)
        if x.dtype.kind == "f":  # models cast their inputs to floatx; the ids survive exactly
            if not np.all(np.isfinite(x)) or not np.all(x == np.floor(x)):
                bad = x[~(np.isfinite(x) & (x == np.floor(x)))].flat[0]
                raise ValueError(f"Embedding '{self.name}' expects integer token ids, got the non-integer value "
                                 f"{bad!r}. Pass the ids as integers (e.g. the output of a tokenizer).")
            x = x.astype(np.int64)
        elif x.dtype.kind not in "iu":
            raise TypeError(f"Embedding '{self.name}' expects integer token ids, got an array of dtype "
                            f"{x.dtype}. Pass the ids as integers (e.g. x.astype('int32')).")
        if x.size and (x.min() < 0 or x.max() >= self.input_dim):
            bad_pos = np.argwhere((x < 0) | (x >= self.input_dim))[0]
            bad = int(x[tuple(bad_pos)])
            raise ValueError(f"Embedding '{self.name}' got token id {bad} at position {tuple(int(i) for i in bad_pos)}"
                             f" of its input of shape {x.shape}, but input_dim={self.input_dim} allows ids 0 to "
                             f"{self.input_dim - 1}. Raise input_dim to the vocabulary size (largest id + 1), or "
                             "check the tokenizer.")
        return x

    def forward(self, x, training=False):
        ids = self._ids(x)
        E = self.embeddings.value
        y = E[ids]                                      # (..., output_dim)
        penalty_grad = self._activity_gradient(y)

        def backward(dy):
            if penalty_grad is not None:
                dy = dy + penalty_grad
            # scatter-add: repeated ids sum their gradients
            np.add.at(self.embeddings.grad, ids.reshape(-1), dy.reshape(-1, self.output_dim))
            return None  # integer ids have no gradient

        return y, backward

    def call(self, x, training=False):
        return self.embeddings.value[self._ids(x)]

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim, output_dim=self.output_dim,
            embeddings_initializer=_initializers.serialize(self.embeddings_initializer),
            embeddings_regularizer=_ser(self.embeddings_regularizer, _regularizers),
            activity_regularizer=_ser(self.activity_regularizer, _regularizers),
            embeddings_constraint=_ser(self.embeddings_constraint, _constraints),
            mask_zero=self.mask_zero)
        return config
