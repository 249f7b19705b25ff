"""keras.callbacks"""
from ..callbacks import (CSVLogger, Callback, CallbackList, EarlyStopping, History, LambdaCallback,  # noqa: F401
                         LearningRateScheduler, ModelCheckpoint, ProgbarLogger, ReduceLROnPlateau, TerminateOnNaN)
