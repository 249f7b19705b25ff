"""keras.utils"""
from ...utils import PyDataset, Sequence, normalize, set_random_seed, to_categorical  # noqa: F401
from ...engine.registry import register_serializable as register_keras_serializable  # noqa: F401
