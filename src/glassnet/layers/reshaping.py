"""Shape layers: Permute, RepeatVector, ZeroPadding1D/2D, Cropping1D/2D, UpSampling1D/2D.

None of them has weights; each moves values around, so its backward pass moves the gradient back:
padding ↔ cropping, repeating ↔ summing, a permutation ↔ its inverse, and bilinear interpolation
(a linear map A) ↔ its transpose Aᵀ.
"""
import numpy as np

from ..engine.layer import Layer
from ..engine.registry import register

_DATA_FORMATS = ("channels_last", "channels_first")


def _data_format(layer_name, value):
    value = "channels_last" if value is None else str(value).lower()
    if value not in _DATA_FORMATS:
        raise ValueError(f"{layer_name} expects data_format 'channels_last' or 'channels_first', got {value!r}.")
    return value


def _int_tuple(value, n, what, allow_zero=True):
    """Keras's ``standardize_tuple``: an int becomes (v,)·n; a sequence must hold n integers (>= 0, or > 0)."""
    values = (value,) * n if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    low = 0 if allow_zero else 1
    if len(values) != n or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low
                                   for v in values):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"The `{what}` argument must be an integer or a tuple of {n} {kind} integers. "
                         f"Received: {what}={value!r}")
    return tuple(int(v) for v in values)


def _pairs(value, what):
    """((before, after), (before, after)) for ZeroPadding2D/Cropping2D from an int, 2 ints, or 2 pairs."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"`{what}` cannot be negative. Received: {what}={value}.")
        return ((int(value),) * 2,) * 2
    if not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"`{what}` should be either an int, a tuple of 2 ints (symmetric_height, symmetric_width), "
                         "or a tuple of 2 tuples of 2 ints ((top, bottom), (left, right)). "
                         f"Received: {what}={value!r}.")
    return (_int_tuple(value[0], 2, f"1st entry of {what}"), _int_tuple(value[1], 2, f"2nd entry of {what}"))


def _check_rank(layer, input_shape, rank, example):
    if len(input_shape) != rank:
        raise ValueError(f"{type(layer).__name__} '{layer.name}' expects inputs of rank {rank}, e.g. {example}; got "
                         f"shape {tuple(input_shape)}.")


def _spatial_axes(data_format, n):
    """The indices of the n spatial axes of a (batch, spatial..., channels) or (batch, channels, spatial...) array."""
    return tuple(range(1, n + 1)) if data_format == "channels_last" else tuple(range(2, n + 2))


def _sum_repeats(dy, axis, size):
    """The backward of np.repeat(x, size, axis): sum each run of ``size`` consecutive gradients."""
    shape = dy.shape
    return dy.reshape(shape[:axis] + (shape[axis] // size, size) + shape[axis + 1:]).sum(axis=axis + 1)


@register("layers")
class Permute(Layer):
    """Permute the non-batch axes: ``dims`` is a permutation of 1..rank−1 (the batch axis 0 stays).

    forward:  y = transpose(x, (0, *dims));   backward: dx = transpose(dy, inverse permutation)
    """

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        self.dims = tuple(int(d) for d in dims)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError("Invalid permutation argument `dims` for Permute Layer. The set of indices in `dims` must "
                             f"be consecutive and start from 1. Received dims={tuple(dims)}. E.g. Permute((2, 1)) "
                             "swaps the two axes of (batch, steps, features) inputs.")
        self._perm = (0,) + self.dims
        self._inverse = tuple(int(i) for i in np.argsort(self._perm))

    def build(self, input_shape):
        _check_rank(self, input_shape, len(self.dims) + 1, f"(batch, {', '.join('d%d' % d for d in self.dims)})")

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[d] for d in self.dims)

    def forward(self, x, training=False):
        return x.transpose(self._perm), lambda dy: dy.transpose(self._inverse)

    def get_config(self):
        config = super().get_config()
        config["dims"] = list(self.dims)
        return config


@register("layers")
class RepeatVector(Layer):
    """Repeat each input vector n times: (batch, features) → (batch, n, features).

    forward:  y[:, t, :] = x for t = 1..n;   backward: dx = Σ_t dy[:, t, :]
    """

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise TypeError(f"Expected an integer value for `n`, got {type(n)}.")
        if n <= 0:
            raise ValueError(f"Argument `n` should be a positive integer. Received: n={n}")
        self.n = int(n)

    def build(self, input_shape):
        _check_rank(self, input_shape, 2, "(batch, features)")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n, input_shape[1])

    def forward(self, x, training=False):
        y = np.repeat(x[:, None, :], self.n, axis=1)
        return y, lambda dy: dy.sum(axis=1)

    def get_config(self):
        config = super().get_config()
        config["n"] = self.n
        return config


class _Pad(Layer):
    """Zero padding of the spatial axes:  y = x surrounded by zeros;  backward: dx = dy with the border cut off."""

    def _pad_width(self, ndim):
        width = [(0, 0)] * ndim
        for axis, pair in zip(_spatial_axes(self.data_format, len(self._padding)), self._padding):
            width[axis] = pair
        return width

    def build(self, input_shape):
        n = len(self._padding)
        _check_rank(self, input_shape, n + 2, "(batch, " + "steps, " * n + "channels)")

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis, (before, after) in zip(_spatial_axes(self.data_format, len(self._padding)), self._padding):
            if shape[axis] is not None:
                shape[axis] += before + after
        return tuple(shape)

    def forward(self, x, training=False):
        width = self._pad_width(x.ndim)
        inner = tuple(slice(before, before + size) for (before, _), size in zip(width, x.shape))
        return np.pad(x, width), lambda dy: dy[inner]

    def get_config(self):
        config = super().get_config()
        config.update(padding=self._padding_config(), data_format=self.data_format)
        return config


@register("layers")
class ZeroPadding1D(_Pad):
    """Add ``padding`` zeros before/after the steps axis: (batch, steps, channels) → (batch, steps + p₀ + p₁, channels).

    ``padding``: an int (both sides) or (before, after).  backward: dx = dy[:, p₀ : p₀ + steps]
    """

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _data_format("ZeroPadding1D", data_format)
        self.padding = _int_tuple(padding, 2, "padding")
        self._padding = (self.padding,)

    def _padding_config(self):
        return list(self.padding)


@register("layers")
class ZeroPadding2D(_Pad):
    """Add rows and columns of zeros around each image (channels_last: (batch, rows, cols, channels)).

    ``padding``: an int, (symmetric_height, symmetric_width) or ((top, bottom), (left, right)).
    backward: dx = dy[:, top : top + rows, left : left + cols, :]
    """

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _data_format("ZeroPadding2D", data_format)
        self.padding = _pairs(padding, "padding")
        self._padding = self.padding

    def _padding_config(self):
        return [list(p) for p in self.padding]


class _Crop(Layer):
    """Cropping of the spatial axes:  y = x without its border;  backward: dx = dy padded back with zeros."""

    def build(self, input_shape):
        n = len(self._cropping)
        _check_rank(self, input_shape, n + 2, "(batch, " + "steps, " * n + "channels)")

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis, (before, after) in zip(_spatial_axes(self.data_format, len(self._cropping)), self._cropping):
            if shape[axis] is not None:
                if before + after >= shape[axis]:
                    raise ValueError(f"{type(self).__name__} '{self.name}': the cropping {(before, after)} must leave "
                                     f"at least one entry of axis {axis} (of size {shape[axis]}); got input shape "
                                     f"{tuple(input_shape)}. Crop less.")
                shape[axis] -= before + after
        return tuple(shape)

    def forward(self, x, training=False):
        index = [slice(None)] * x.ndim
        width = [(0, 0)] * x.ndim
        for axis, (before, after) in zip(_spatial_axes(self.data_format, len(self._cropping)), self._cropping):
            if before + after >= x.shape[axis]:
                self.compute_output_shape(x.shape)  # raises the error
            index[axis] = slice(before, x.shape[axis] - after)
            width[axis] = (before, after)
        return x[tuple(index)], lambda dy: np.pad(dy, width)


@register("layers")
class Cropping1D(_Crop):
    """Remove ``cropping`` = (before, after) steps: (batch, steps, ch) → (batch, steps − c₀ − c₁, ch).

    forward: y = x[:, c₀ : steps − c₁];  backward: dx = dy with c₀ zeros before and c₁ after on the steps axis
    """

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.data_format = "channels_last"
        self.cropping = _int_tuple(cropping, 2, "cropping")
        self._cropping = (self.cropping,)

    def get_config(self):
        config = super().get_config()
        config["cropping"] = list(self.cropping)
        return config


@register("layers")
class Cropping2D(_Crop):
    """Remove rows and columns at the border of each image.

    ``cropping``: an int, (symmetric_height, symmetric_width) or ((top, bottom), (left, right)).
    forward: y = x[:, top : rows − bottom, left : cols − right, :] (channels_last);  backward: zero-pad dy back
    """

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _data_format("Cropping2D", data_format)
        self.cropping = _pairs(cropping, "cropping")
        self._cropping = self.cropping

    def get_config(self):
        config = super().get_config()
        config.update(cropping=[list(p) for p in self.cropping], data_format=self.data_format)
        return config


@register("layers")
class UpSampling1D(Layer):
    """Repeat each step ``size`` times: (batch, steps, ch) → (batch, steps·size, ch).

    forward: y[:, t·size + k] = x[:, t] for k < size;  backward: dx[:, t] = Σ_k dy[:, t·size + k]
    """

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
            raise TypeError(f"Expected an integer value for `size`, got {type(size)}.")
        if size <= 0:
            raise ValueError(f"Argument `size` should be a positive integer. Received: size={size}")
        self.size = int(size)

    def build(self, input_shape):
        _check_rank(self, input_shape, 3, "(batch, steps, channels)")

    def compute_output_shape(self, input_shape):
        steps = None if input_shape[1] is None else input_shape[1] * self.size
        return (input_shape[0], steps, input_shape[2])

    def forward(self, x, training=False):
        return np.repeat(x, self.size, axis=1), lambda dy: _sum_repeats(dy, 1, self.size)

    def get_config(self):
        config = super().get_config()
        config["size"] = self.size
        return config


def _bilinear_matrix(n_in, factor, dtype):
    """The (n_in·factor, n_in) matrix A of 1-D linear interpolation with half-pixel centres.

    Output i samples the input at s = (i + ½)/factor − ½, clamped to [0, n_in − 1]:
    y[i] = (1 − t)·x[⌊s⌋] + t·x[⌊s⌋ + 1], t = s − ⌊s⌋ (as Keras's image.resize, TF, JAX, and torch
    with align_corners=False, when upsampling by an integer factor).
    """
    n_out = n_in * factor
    s = np.clip((np.arange(n_out) + 0.5) / factor - 0.5, 0, n_in - 1)
    lo = np.floor(s).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    t = s - lo
    A = np.zeros((n_out, n_in))
    np.add.at(A, (np.arange(n_out), lo), 1 - t)
    np.add.at(A, (np.arange(n_out), hi), t)
    return A.astype(dtype)


@register("layers")
class UpSampling2D(Layer):
    """Enlarge each image by ``size`` = (rows, cols) factors.

    nearest:  repeat each row size[0] times and each column size[1] times; backward sums each block of dy.
    bilinear: y = A_r · x · A_cᵀ per image and channel, A the 1-D interpolation matrices of
              ``_bilinear_matrix`` (half-pixel centres, as Keras);  backward: dx = A_rᵀ · dy · A_c
    """

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.data_format = _data_format("UpSampling2D", data_format)
        self.size = _int_tuple(size, 2, "size", allow_zero=False)
        self.interpolation = str(interpolation).lower()
        if self.interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"UpSampling2D supports interpolation='nearest' or 'bilinear' in glassnet, got "
                             f"{interpolation!r}.")

    def build(self, input_shape):
        _check_rank(self, input_shape, 4, "(batch, rows, cols, channels)")

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis, factor in zip(_spatial_axes(self.data_format, 2), self.size):
            if shape[axis] is not None:
                shape[axis] *= factor
        return tuple(shape)

    def forward(self, x, training=False):
        (ra, ca), (fr, fc) = _spatial_axes(self.data_format, 2), self.size
        if self.interpolation == "nearest":
            y = np.repeat(np.repeat(x, fr, axis=ra), fc, axis=ca)
            return y, lambda dy: _sum_repeats(_sum_repeats(dy, ca, fc), ra, fr)
        A_r = _bilinear_matrix(x.shape[ra], fr, x.dtype)
        A_c = _bilinear_matrix(x.shape[ca], fc, x.dtype)
        if self.data_format == "channels_last":  # x: (n, i, j, c)
            y = np.einsum("ri,nijc,sj->nrsc", A_r, x, A_c, optimize=True)
            return y, lambda dy: np.einsum("ri,nrsc,sj->nijc", A_r, dy, A_c, optimize=True)
        y = np.einsum("ri,ncij,sj->ncrs", A_r, x, A_c, optimize=True)
        return y, lambda dy: np.einsum("ri,ncrs,sj->ncij", A_r, dy, A_c, optimize=True)

    def get_config(self):
        config = super().get_config()
        config.update(size=list(self.size), data_format=self.data_format, interpolation=self.interpolation)
        return config
