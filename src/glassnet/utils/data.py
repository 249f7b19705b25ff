"""Checks on user data at the public boundary (fit, evaluate, predict): each names the problem and the fix."""
import numpy as np


def as_array(value, what, where):
    """``value`` as a numeric ndarray, or a clear error for strings, objects, ragged lists or None."""
    if value is None:
        raise ValueError(f"{where}() needs `{what}`, got None.")
    _refuse_batch_sources(value, what, where)
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], np.ndarray):
        value = value[0]  # [x] for a single-input model, as Keras takes it
    if isinstance(value, (dict, list, tuple)) and value and isinstance(
            value[0] if not isinstance(value, dict) else next(iter(value.values())), np.ndarray) and len(value) > 1:
        raise ValueError(f"{where}() got `{what}` as a {type(value).__name__} of {len(value)} arrays, but this model "
                         f"has a single input/output. Pass one array.")
    try:
        arr = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"`{what}` passed to {where}() cannot be turned into an array ({e}). Make every row the "
                         "same length.") from None
    if arr.dtype.kind in "USO":
        raise TypeError(f"`{what}` passed to {where}() has non-numeric values (dtype {arr.dtype}). Convert it to "
                        f"numbers first, e.g. {what}.astype('float32'), or encode text columns.")
    if arr.dtype.kind == "c":
        raise TypeError(f"`{what}` passed to {where}() is complex (dtype {arr.dtype}); glassnet works with real numbers.")
    if arr.ndim == 0:
        raise ValueError(f"`{what}` passed to {where}() is a scalar; pass a batch of samples (first axis = samples).")
    if arr.shape[0] == 0:
        raise ValueError(f"`{what}` passed to {where}() is empty (shape {arr.shape}); pass at least one sample.")
    return arr


def _refuse_batch_sources(value, what, where):
    """Generators, iterators and keras.utils.Sequence/PyDataset-style objects (``__len__`` batches by
    ``__getitem__``) give batches, not arrays: ``fit``, ``evaluate`` and ``predict`` take them as ``x``
    (models/sources.py); anywhere else they are refused here — NumPy would take a Sequence for a nested list and
    index it forever (it never raises IndexError): a hang eating memory. Array-likes (``__array__``) pass."""
    if isinstance(value, (np.ndarray, list, tuple, dict, range, str, bytes)) or hasattr(value, "__array__") \
            or hasattr(value, "__array_interface__"):
        return
    kind = None
    if hasattr(value, "__next__"):
        kind = "a generator or iterator of batches"
    elif hasattr(value, "__getitem__") and hasattr(value, "__len__"):
        kind = f"a {type(value).__name__} of batches (a keras.utils.Sequence / PyDataset)"
    if kind:
        raise TypeError(f"`{what}` passed to {where}() is {kind}; {where}() takes arrays here (NumPy arrays, lists, "
                        "or dicts of them for named inputs). fit, evaluate and predict take such batches as x; "
                        "elsewhere load them into arrays, e.g. x = np.concatenate([xb for xb, yb in batches]).")


_FINITE_BLOCK = 1 << 16  # elements per block of all_finite: its boolean buffer stays in cache


def all_finite(arr):
    """``np.isfinite(arr).all()`` block by block, without a full-size boolean temporary (for a 60k x 784
    float32 data set that temporary is 47 MB, and allocating it cost more than the test itself)."""
    if arr.dtype.kind not in "fc":
        return True
    if arr.size <= _FINITE_BLOCK or arr.ndim == 0:
        return bool(np.isfinite(arr).all())
    if not arr.flags.c_contiguous:  # blocks of whole rows (a reshape(-1) would copy the whole array)
        rows = max(1, _FINITE_BLOCK // max(1, arr[0].size))
        return all(np.isfinite(arr[start:start + rows]).all() for start in range(0, len(arr), rows))
    flat = arr.reshape(-1)
    buf = np.empty(_FINITE_BLOCK, bool)
    for start in range(0, flat.size, _FINITE_BLOCK):
        part = flat[start:start + _FINITE_BLOCK]
        if not np.isfinite(part, out=buf[:part.size]).all():
            return False
    return True


def check_finite(arr, what, where):
    if arr.dtype.kind == "f" and not all_finite(arr):
        bad = np.argwhere(~np.isfinite(arr))[0]
        kind = "NaN" if np.isnan(arr[tuple(bad)]) else "Inf"
        count = int((~np.isfinite(arr)).sum())
        raise ValueError(f"`{what}` passed to {where}() contains {count} NaN/Inf value(s), the first ({kind}) at index "
                         f"{tuple(int(i) for i in bad)}. Impute or drop them before training or predicting.")


def check_same_length(n, arr, what, where):
    if len(arr) != n:
        raise ValueError(f"{where}(): x has {n} samples but `{what}` has {len(arr)}. They must have the same "
                         "number of rows, one per sample.")


def check_input_shape(arr, expected, where, model_name):
    """``expected`` is the model's input shape with the batch axis (None) first."""
    if expected is None:
        return
    want = tuple(expected[1:])
    got = arr.shape[1:]
    if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
        want_text = "(None, " + ", ".join("None" if d is None else str(d) for d in want) + ")"
        hint = ""
        if len(want) == 1 and len(got) == 1:
            hint = f" Check the columns of x: the model was built for {want[0]} features."
        elif len(want) == 1 and arr.ndim == 1:
            hint = " x is 1-D: for a single feature use x.reshape(-1, 1); for one sample use x.reshape(1, -1)."
        raise ValueError(f"Model '{model_name}' expects inputs of shape {want_text}, got x of shape {arr.shape}."
                         + hint)


def class_weight_to_sample_weight(y, class_weight):
    """Per-sample weights from {class: weight}; the class is argmax(y) for one-hot y, else round(y). A class the
    dict does not name weighs 1.0, as in Keras 3 (``class_weight={1: 5.0}`` up-weights class 1 alone; Keras 2
    refused such a dict)."""
    y = np.asarray(y)
    classes = np.argmax(y, axis=-1) if y.ndim > 1 and y.shape[-1] > 1 else np.round(y.reshape(len(y), -1)[:, 0])
    classes = classes.astype(np.int64)
    lookup = {int(k): float(v) for k, v in class_weight.items()}
    return np.array([lookup.get(c, 1.0) for c in classes.tolist()], dtype=np.float64)
