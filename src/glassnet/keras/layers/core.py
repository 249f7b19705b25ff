"""keras.layers.core (Keras 2 path, removed in Keras 3)."""
from ...utils.legacy import legacy_notice
from ...layers import Activation, Dense, Dropout, Flatten, Reshape  # noqa: F401

legacy_notice("keras.layers.core", "keras.layers")
