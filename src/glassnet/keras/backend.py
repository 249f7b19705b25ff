"""keras.backend: the float policy and session helpers."""
from ..engine.backend import clear_session, epsilon, floatx, set_epsilon, set_floatx  # noqa: F401


def backend():
    return "numpy"


image_data_format = lambda: "channels_last"  # noqa: E731
