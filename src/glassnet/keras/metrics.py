"""keras.metrics"""
from ..metrics import *  # noqa: F401,F403
from ..metrics import Metric, Mean, MeanMetricWrapper, get  # noqa: F401
