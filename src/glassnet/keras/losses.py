"""keras.losses"""
from ..losses import *  # noqa: F401,F403
from ..losses import Loss, LossFunctionWrapper, get  # noqa: F401
