"""Merge layers: combine a list of tensors. ``forward([x1, x2, ...]) -> (y, backward)``, where
``backward(dy)`` returns the list ``[dx1, dx2, ...]``."""
import numpy as np

from ..engine.layer import Layer
from ..engine.registry import register


class _Merge(Layer):
    """Checks that the inputs form a list of at least two tensors of the same shape (batch excluded)."""

    min_inputs = 2
    max_inputs = None

    def _check_shapes(self, input_shapes):
        if not isinstance(input_shapes, (list, tuple)) or not input_shapes or not isinstance(input_shapes[0],
                                                                                             (list, tuple)):
            raise ValueError(f"{type(self).__name__} '{self.name}' expects a list of inputs, e.g. "
                             f"{type(self).__name__}()([a, b]); got one input of shape {input_shapes}.")
        n = len(input_shapes)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = f"exactly {self.min_inputs}" if self.max_inputs == self.min_inputs else f"at least {self.min_inputs}"
            raise ValueError(f"{type(self).__name__} '{self.name}' expects {want} inputs, got {n}.")
        return [tuple(s) for s in input_shapes]

    def build(self, input_shapes):
        shapes = self._check_shapes(input_shapes)
        first = shapes[0][1:]
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(a is not None and b is not None and a != b for a, b in zip(first, s[1:])):
                raise ValueError(f"{type(self).__name__} '{self.name}' needs inputs of the same shape, got "
                                 f"{[tuple(x) for x in shapes]}. Reshape or project them (e.g. with Dense) first.")

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0])

    def forward(self, xs, training=False):
        return self._merge(list(xs))

    def call(self, xs, training=False):
        return self._merge(list(xs))[0]


@register("layers")
class Add(_Merge):
    """y = Σᵢ xᵢ;  dxᵢ = dy."""

    def _merge(self, xs):
        y = xs[0].copy()
        for x in xs[1:]:
            y += x
        return y, lambda dy: [dy] * len(xs)


@register("layers")
class Subtract(_Merge):
    """y = x₁ − x₂;  dx₁ = dy, dx₂ = −dy."""

    min_inputs = max_inputs = 2

    def _merge(self, xs):
        return xs[0] - xs[1], lambda dy: [dy, -dy]


@register("layers")
class Multiply(_Merge):
    """y = Πᵢ xᵢ;  dxᵢ = dy · Π_{j≠i} xⱼ."""

    def _merge(self, xs):
        y = xs[0].copy()
        for x in xs[1:]:
            y *= x

        def backward(dy):
            grads = []
            for i in range(len(xs)):
                g = dy.copy()
                for j, x in enumerate(xs):
                    if j != i:
                        g *= x
                grads.append(g)
            return grads

        return y, backward


@register("layers")
class Average(_Merge):
    """y = (1/n) Σᵢ xᵢ;  dxᵢ = dy / n."""

    def _merge(self, xs):
        n = len(xs)
        return sum(xs[1:], xs[0].copy()) / n, lambda dy: [dy / n] * n


class _Extreme(_Merge):
    """y = max (or min) over the inputs; the gradient goes to the first input that attains it."""

    pick = None

    def _merge(self, xs):
        stacked = np.stack(xs)
        winner = self.pick(stacked, axis=0)
        y = np.take_along_axis(stacked, winner[None], axis=0)[0]

        def backward(dy):
            return [np.where(winner == i, dy, 0).astype(dy.dtype) for i in range(len(xs))]

        return y, backward


@register("layers")
class Maximum(_Extreme):
    pick = staticmethod(np.argmax)


@register("layers")
class Minimum(_Extreme):
    pick = staticmethod(np.argmin)


@register("layers")
class Concatenate(_Merge):
    """y = [x₁ | x₂ | …] along ``axis``;  backward splits dy back into the inputs' sizes."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def build(self, input_shapes):
        shapes = self._check_shapes(input_shapes)
        rank = len(shapes[0])
        axis = self.axis % rank
        if axis == 0:
            raise ValueError(f"Concatenate '{self.name}' cannot join along the batch axis.")
        for s in shapes[1:]:
            if len(s) != rank or any(a is not None and b is not None and a != b
                                     for k, (a, b) in enumerate(zip(shapes[0], s)) if k not in (0, axis)):
                raise ValueError(f"Concatenate '{self.name}' needs inputs that match except along axis {self.axis}, got "
                                 f"{shapes}.")

    def compute_output_shape(self, input_shapes):
        shapes = [tuple(s) for s in input_shapes]
        axis = self.axis % len(shapes[0])
        sizes = [s[axis] for s in shapes]
        out = list(shapes[0])
        out[axis] = None if None in sizes else sum(sizes)
        return tuple(out)

    def _merge(self, xs):
        axis = self.axis % xs[0].ndim
        bounds = np.cumsum([x.shape[axis] for x in xs])[:-1]
        return np.concatenate(xs, axis=axis), lambda dy: np.split(dy, bounds, axis=axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@register("layers")
class Dot(_Merge):
    """Batched dot product over ``axes``: for (N, d)·(N, d) → (N, 1), for (N, a, d)·(N, b, d) with axes=2
    → (N, a, b). With ``normalize=True`` both inputs are L2-normalised along those axes first (cosine).

    forward: y = a · b (contracting the chosen axes);  backward: da = dy · b, db = dy · a (transposed to fit)."""

    min_inputs = max_inputs = 2

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        self.axes = axes
        self.normalize = bool(normalize)

    def _axes(self, ranks):
        axes = self.axes if isinstance(self.axes, (list, tuple)) else (self.axes, self.axes)
        return [a % r for a, r in zip(axes, ranks)]

    def build(self, input_shapes):
        shapes = self._check_shapes(input_shapes)
        ranks = [len(s) for s in shapes]
        if any(r not in (2, 3) for r in ranks):
            raise ValueError(f"Dot '{self.name}' supports inputs of rank 2 or 3, got shapes {shapes}.")
        a, b = self._axes(ranks)
        if 0 in (a, b):
            raise ValueError(f"Dot '{self.name}' cannot contract the batch axis (axes={self.axes}).")
        if shapes[0][a] is not None and shapes[1][b] is not None and shapes[0][a] != shapes[1][b]:
            raise ValueError(f"Dot '{self.name}': the contracted dimensions differ: {shapes[0][a]} (axis {a} of the "
                             f"first input) vs {shapes[1][b]} (axis {b} of the second).")

    def compute_output_shape(self, input_shapes):
        s1, s2 = (tuple(s) for s in input_shapes)
        a, b = self._axes([len(s1), len(s2)])
        rest = [d for k, d in enumerate(s1) if k not in (0, a)] + [d for k, d in enumerate(s2) if k not in (0, b)]
        return (s1[0],) + tuple(rest or [1])

    @staticmethod
    def _as_matrix(x, axis, contract_last):
        """(N, rest, d) with the contracted axis last (or (N, d, rest) when not contract_last)."""
        moved = np.moveaxis(x, axis, -1)
        m = moved.reshape(len(x), -1, x.shape[axis])
        return m if contract_last else m.transpose(0, 2, 1)

    def _merge(self, xs):
        x1, x2 = xs
        a, b = self._axes([x1.ndim, x2.ndim])
        n1 = n2 = None
        if self.normalize:
            n1 = np.sqrt(np.maximum((x1 * x1).sum(axis=a, keepdims=True), 1e-12))
            n2 = np.sqrt(np.maximum((x2 * x2).sum(axis=b, keepdims=True), 1e-12))
            u1, u2 = x1 / n1, x2 / n2
        else:
            u1, u2 = x1, x2
        m1 = self._as_matrix(u1, a, True)          # (N, p, d)
        m2 = self._as_matrix(u2, b, False)         # (N, d, q)
        y = m1 @ m2                                # (N, p, q)
        out_shape = (len(x1),) + self.compute_output_shape([x1.shape, x2.shape])[1:]

        def unmatrix(g, x, axis, contract_last):
            g = g if contract_last else g.transpose(0, 2, 1)
            moved_shape = np.moveaxis(x, axis, -1).shape
            return np.moveaxis(g.reshape(moved_shape), -1, axis)

        def backward(dy):
            g = dy.reshape(y.shape)
            du1 = unmatrix(g @ m2.transpose(0, 2, 1), u1, a, True)
            du2 = unmatrix(m1.transpose(0, 2, 1) @ g, u2, b, False)
            if not self.normalize:
                return [du1, du2]
            # through u = x / ‖x‖: dx = (du − u·Σ(du·u)) / ‖x‖
            dx1 = (du1 - u1 * (du1 * u1).sum(axis=a, keepdims=True)) / n1
            dx2 = (du2 - u2 * (du2 * u2).sum(axis=b, keepdims=True)) / n2
            return [dx1, dx2]

        return y.reshape(out_shape), backward

    def get_config(self):
        return {**super().get_config(), "axes": self.axes, "normalize": self.normalize}


def add(inputs, **kwargs):
    return Add(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    return Concatenate(axis=axis, **kwargs)(inputs)
