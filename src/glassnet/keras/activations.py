"""keras.activations"""
from ..activations import *  # noqa: F401,F403
from ..activations import get  # noqa: F401
