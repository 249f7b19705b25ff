"""Saving and loading: glassnet's safe model format, Keras 3 ``.keras`` interchange, ONNX export.

Files are read by their content, never by executing anything in them.
"""
import os
import zipfile


def save_model(model, filepath, overwrite=True, include_optimizer=True):
    """Save by extension: ``.glassnet`` (glassnet's format) or ``.keras`` (Keras 3's format)."""
    path = os.fspath(filepath)
    if path.endswith(".keras"):
        from . import keras_format
        return keras_format.save_model(model, path, overwrite=overwrite, include_optimizer=include_optimizer)
    if path.endswith(".h5") or path.endswith(".hdf5"):
        raise ValueError(f"Legacy HDF5 model files are not written by glassnet. Save as `.glassnet` (glassnet's format) "
                         f"or `.keras` (Keras 3's format). Received: filepath={path}")
    from . import native
    return native.save_model(model, path, overwrite=overwrite, include_optimizer=include_optimizer)


def _is_keras_archive(path):
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile, EOFError):
        return False
    return "model.weights.h5" in names and "config.json" in names


def load_model(filepath, custom_objects=None, compile=True):
    """Load a ``.glassnet`` or Keras 3 ``.keras`` model file."""
    path = os.fspath(filepath)
    if path.endswith(".keras") or _is_keras_archive(path):
        from . import keras_format
        return keras_format.load_model(path, custom_objects=custom_objects, compile=compile)
    from . import native
    return native.load_model(path, custom_objects=custom_objects, compile=compile)
