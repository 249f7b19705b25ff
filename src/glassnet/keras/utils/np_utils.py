"""keras.utils.np_utils (Keras 2 path, removed in Keras 3)."""
from ...utils.legacy import legacy_notice
from ...utils import normalize, to_categorical  # noqa: F401

legacy_notice("keras.utils.np_utils", "keras.utils")
