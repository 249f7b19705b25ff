"""keras.initializers"""
from ..initializers import *  # noqa: F401,F403
from ..initializers import get  # noqa: F401
