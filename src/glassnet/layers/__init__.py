"""Layers: each one's forward and backward math in one place."""
from ..engine.layer import Layer
from ..engine.graph import KerasTensor
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer, Reshape
from .attention import MultiHeadAttention
from .conv import (Conv1D, Conv1DTranspose, Conv2D, Conv2DTranspose, DepthwiseConv1D, DepthwiseConv2D, SeparableConv1D,
                   SeparableConv2D)
from .pooling import (AveragePooling1D, AveragePooling2D, GlobalAveragePooling1D, GlobalAveragePooling2D,
                      GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPooling1D, MaxPooling2D)
from .embedding import Embedding
from .recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from .merge import Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract, add, concatenate
from .normalization import BatchNormalization, GroupNormalization, LayerNormalization
from .preprocessing import Normalization
from .regularization import GaussianDropout, GaussianNoise, SpatialDropout1D, SpatialDropout2D
from .rescaling import Rescaling
from .text import TextVectorization
from .reshaping import Cropping1D, Cropping2D, Permute, RepeatVector, UpSampling1D, UpSampling2D, ZeroPadding1D, \
    ZeroPadding2D
from .wrappers import TimeDistributed

__all__ = ["Layer", "Activation", "Dense", "Dropout", "Flatten", "Input", "InputLayer", "KerasTensor",
           "Reshape", "Normalization", "Add", "Average", "Concatenate", "Dot", "Maximum", "Minimum", "Multiply",
           "Subtract", "add", "concatenate", "MultiHeadAttention", "TimeDistributed", "Embedding", "SimpleRNN", "LSTM", "GRU",
           "Bidirectional", "BatchNormalization", "GroupNormalization", "LayerNormalization", "GaussianDropout",
           "GaussianNoise", "SpatialDropout1D", "SpatialDropout2D", "Rescaling", "Cropping1D", "Cropping2D", "Permute",
           "RepeatVector", "UpSampling1D", "UpSampling2D", "ZeroPadding1D", "ZeroPadding2D", "Conv1D",
           "Conv1DTranspose", "Conv2D", "Conv2DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
           "SeparableConv2D", "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
           "GlobalMaxPooling1D", "GlobalMaxPooling2D", "MaxPooling1D", "MaxPooling2D",
           "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalMaxPool1D",
           "GlobalMaxPool2D", "Convolution1D", "Convolution2D", "TextVectorization"]

# Keras's aliases
MaxPool1D, MaxPool2D, AvgPool1D, AvgPool2D = MaxPooling1D, MaxPooling2D, AveragePooling1D, AveragePooling2D
GlobalAvgPool1D, GlobalAvgPool2D = GlobalAveragePooling1D, GlobalAveragePooling2D
GlobalMaxPool1D, GlobalMaxPool2D = GlobalMaxPooling1D, GlobalMaxPooling2D
Convolution1D, Convolution2D = Conv1D, Conv2D
