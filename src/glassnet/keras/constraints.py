"""keras.constraints"""
from ..constraints import *  # noqa: F401,F403
from ..constraints import get  # noqa: F401
