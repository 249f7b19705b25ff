"""Layers: each one's forward and backward math in one place."""
from ..engine.layer import Layer
from ..engine.graph import KerasTensor
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer, Reshape
from .attention import MultiHeadAttention
from .embedding import Embedding
from .recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from .merge import Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract, add, concatenate
from .normalization import BatchNormalization, GroupNormalization, LayerNormalization
from .preprocessing import Normalization
from .regularization import GaussianDropout, GaussianNoise, SpatialDropout1D, SpatialDropout2D
from .rescaling import Rescaling
from .reshaping import Cropping1D, Cropping2D, Permute, RepeatVector, UpSampling1D, UpSampling2D, ZeroPadding1D, \
    ZeroPadding2D
from .wrappers import TimeDistributed

__all__ = ["Layer", "Activation", "Dense", "Dropout", "Flatten", "Input", "InputLayer", "KerasTensor",
           "Reshape", "Normalization", "Add", "Average", "Concatenate", "Dot", "Maximum", "Minimum", "Multiply",
           "Subtract", "add", "concatenate", "MultiHeadAttention", "TimeDistributed", "Embedding", "SimpleRNN", "LSTM", "GRU",
           "Bidirectional", "BatchNormalization", "GroupNormalization", "LayerNormalization", "GaussianDropout",
           "GaussianNoise", "SpatialDropout1D", "SpatialDropout2D", "Rescaling", "Cropping1D", "Cropping2D", "Permute",
           "RepeatVector", "UpSampling1D", "UpSampling2D", "ZeroPadding1D", "ZeroPadding2D"]
