"""glassnet's own files: ``.glassnet`` models (a zip of JSON + safetensors) and ``.weights.safetensors``.

Nothing here unpickles or evaluates: layers are rebuilt by registered class name only. Every file
is written atomically (temporary file in the same folder, fsync, rename), so a crash mid-write
leaves the previous file intact and never a partial one.
"""
import io
import json
import os
import tempfile
import time
import zipfile
import zlib

import numpy as np

from .. import __version__
from ..engine import backend
from ..engine.registry import deserialize
from . import safetensors

FORMAT = "glassnet"
FORMAT_VERSION = 1
MAX_RATIO = 200  # the largest expansion a compressed member may claim
MAX_JSON_DEPTH = 64
MEMBERS = {"config.json": 16 * 1024 * 1024, "model.weights.safetensors": 8 * 1024 ** 3,
           "optimizer.safetensors": 16 * 1024 ** 3}



def json_plain(value):
    """``json.dumps``'s fallback for configs: a NumPy number or array as the Python number or list it holds
    (``Dice(axis=np.int64(-1))``, ``BinaryIoU(threshold=np.float32(0.4))``), as Keras does; anything else is
    refused as json would."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

def _new_file_mode(path):
    """The permissions a saved file gets: the replaced file's, else what ``open()`` would give (0666 less the
    umask) — not mkstemp's 0600, which would lock a shared model folder's readers out."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask():
    """The process's umask: read from /proc on Linux (setting it to read it back, the portable way, is not
    thread-safe: a file another thread creates meanwhile would get the temporary mask)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def atomic_write(path, data):
    """Write bytes to ``path`` so that readers see the old file or the whole new one, never a part. A symbolic
    link is followed (the file it points to is replaced; the link stays)."""
    path = os.path.realpath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    mode = _new_file_mode(path)
    # created as ".<name>.<random>.part", locked, then named ".tmp": remove_stale_temporaries only ever sees a
    # ".tmp" that is locked while its writer lives, and leaves locked ones alone
    fd, part = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".part", dir=folder)
    tmp = part
    try:
        with os.fdopen(fd, "wb") as f:
            locked = _lock(f.fileno()) is True  # (held until the file is renamed over path, or this process dies)
            if locked:  # (without flock, e.g. on Windows, which cannot rename an open file, it stays ".part")
                tmp = part[:-len(".part")] + ".tmp"
                os.rename(part, tmp)
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if locked:
                os.replace(tmp, path)
        if not locked:  # (no flock here, e.g. Windows, which cannot rename an open file)
            os.replace(tmp, path)
    except BaseException:
        for leftover in {part, tmp}:
            if os.path.exists(leftover):
                os.remove(leftover)
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _lock(fd, blocking=True):
    """An exclusive advisory lock (flock) on an open file: True when taken, False (non-blocking) when another
    process holds it, None where there is no flock (not POSIX, or a file system without locks)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


PART_AFTER_S = 60.0  # a ".part" file this old belongs to no live write (its writer renames it within microseconds)


def remove_stale_temporaries(path):
    """Delete ``.<name>.*.tmp`` files that atomic_write left behind when its process was killed mid-write.

    ``path`` may be a pattern with ``{epoch}``-style fields; those match a formatted number (``3``, ``0.4127``,
    ``nan``), so another save's temporary in the same folder (``.final.glassnet.*.tmp``) is left alone, and so is
    a temporary that a live process is writing (atomic_write holds a lock on it while it writes). A ``.part`` file
    (a write killed between creating its file and locking it: microseconds) goes once it is ``PART_AFTER_S`` old.
    """
    import re
    import time
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    parts = re.split(r"(\{[^}]*\})", os.path.basename(path))
    name = "".join("[-+0-9.eEnaifNAIF]+" if part.startswith("{") else re.escape(part) for part in parts)
    pattern = re.compile(r"\." + name + r"\.[^/]+\.(tmp|part)")
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if pattern.fullmatch(entry):
            stale = os.path.join(folder, entry)
            try:
                fd = os.open(stale, os.O_RDONLY)
            except OSError:
                continue
            try:
                fresh = entry.endswith(".part") and time.time() - os.fstat(fd).st_mtime < PART_AFTER_S
                if not fresh and _lock(fd, blocking=False) is not False:  # (no flock: every match is stale)
                    os.remove(stale)
            except OSError:
                pass
            finally:
                os.close(fd)


def _check_overwrite(path, overwrite):
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and overwrite=False.")


def _weight_tensors(model):
    tensors = {}
    for i, w in enumerate(model.weights):
        key = f"{i:04d}:{w.path}"
        tensors[key] = w.value
    return tensors


def _assign_weights(model, tensors, source):
    bad = [key for key, arr in tensors.items() if arr.dtype.kind == "f" and not np.isfinite(arr).all()]
    if bad:
        raise ValueError(f"{source}: weights {bad[:3]} contain NaN or Inf; the model they come from diverged. glassnet "
                         "refuses to load them; retrain or load an earlier checkpoint.")
    weights = model.weights
    if len(tensors) != len(weights):
        raise ValueError(f"{source} holds {len(tensors)} weight arrays but model '{model.name}' has {len(weights)}: "
                         "the file belongs to a different architecture.")
    ordered = _in_order(tensors, source)
    for (key, arr), w in zip(ordered, weights):
        if arr.shape != w.shape or arr.dtype != w.dtype:
            raise ValueError(f"{source}: weight {key!r} has shape {arr.shape} and dtype {arr.dtype}, but model weight "
                             f"'{w.path}' has shape {w.shape} and dtype {w.dtype}.")
    for (key, arr), w in zip(ordered, weights):
        w.assign(arr)
    for layer in (model._all_layers() if hasattr(model, "_all_layers") else model.layers):
        if hasattr(layer, "adapted") and not layer.adapted:
            layer.adapted = _holds_statistics(layer)


def _in_order(tensors, source):
    """The ``(key, array)`` pairs in the order of the model's weights: keys are ``<index>:<path>`` with indices
    0 … n−1 (numerically: ``10000`` comes after ``9999``, not after ``1000``)."""
    indexed = {}
    for key, arr in tensors.items():
        index = key.split(":", 1)[0]
        if not (index.isascii() and index.isdigit()) or int(index) in indexed:
            raise ValueError(f"{source}: weight key {key!r} is not '<index>:<path>' with a distinct index; the file "
                             "was not written by glassnet or is corrupt.")
        indexed[int(index)] = (key, arr)
    if sorted(indexed) != list(range(len(indexed))):
        raise ValueError(f"{source}: weight indices are not 0 to {len(indexed) - 1}; the file is corrupt.")
    return [indexed[i] for i in range(len(indexed))]


def _holds_statistics(layer):
    """True when a preprocessing layer loaded without constructor statistics carries adapted ones: adapt() counted
    samples, or the statistics differ from the untouched zeros/ones (set by set_weights)."""
    count = getattr(layer, "count", None)
    if count is not None and np.any(count.value > 0):
        return True
    mean, variance = getattr(layer, "mean", None), getattr(layer, "variance", None)
    if mean is None or variance is None:
        return True
    return bool(np.any(mean.value != 0) or np.any(variance.value != 1))


def save_weights(model, filepath, overwrite=True):
    filepath = os.fspath(filepath)
    if not filepath.endswith(".weights.safetensors"):
        raise ValueError(f"The filename must end in `.weights.safetensors`. Received: filepath={filepath}")
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built, so it has no weights to save yet.")
    _check_overwrite(filepath, overwrite)
    atomic_write(filepath, safetensors.dumps(_weight_tensors(model), {"format": FORMAT, "version": __version__}))


def load_weights(model, filepath):
    filepath = os.fspath(filepath)
    if filepath.endswith(".glassnet"):
        with open_archive(filepath) as zf:
            tensors, _ = safetensors.loads(read_member(zf, "model.weights.safetensors"), filepath)
    else:
        with open(filepath, "rb") as f:
            tensors, _ = safetensors.loads(f.read(), filepath)
    if not model.built:
        raise ValueError(f"Build model '{model.name}' (give it an input shape) before loading weights into it.")
    _assign_weights(model, tensors, filepath)


def _serialize_compile(model):
    from .. import losses as _losses
    from .. import optimizers as _optimizers
    args = getattr(model, "_compile_args", None)
    if not model.compiled or args is None:
        return None

    def ser(obj):  # a loss/metric spec: a name, an object, or a list/dict of them (one per output)
        if isinstance(obj, (list, tuple)):
            return [ser(o) for o in obj]
        if isinstance(obj, dict):
            return {"per_output": {k: ser(v) for k, v in obj.items()}}
        if obj is None or isinstance(obj, (str, int, float)):
            return obj
        if isinstance(obj, _losses.Loss) or hasattr(obj, "get_config"):
            return {"class_name": type(obj).__name__, "config": obj.get_config()}
        return getattr(obj, "__name__", None)

    return {"optimizer": _optimizers.serialize(model.optimizer), "loss": ser(args["loss"]),
            "metrics": ser(args["metrics"] or []), "loss_weights": ser(model._loss_weights_spec)}


def _deserialize_spec(spec, kind):
    """Inverse of ser() above: {"per_output": {...}} dicts map output names; class configs become objects."""
    from .. import losses as _losses
    from .. import metrics as _metrics
    if isinstance(spec, list):
        return [_deserialize_spec(s, kind) for s in spec]
    if isinstance(spec, dict):
        if "per_output" in spec:
            return {k: _deserialize_spec(v, kind) for k, v in spec["per_output"].items()}
        return (_losses if kind == "loss" else _metrics).get(spec)
    return spec


def _signature(model):
    """Names, shapes and dtypes of the model's inputs and outputs (what a server needs to know)."""
    in_shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    out_shapes = model.output_shape if isinstance(model.output_shape, list) else [model.output_shape]
    in_names = getattr(model, "input_names", None) or ["input"]
    out_names = getattr(model, "output_names", None) or ["output"]
    # inputs: what predict computes in (model._input_dtype()), or an integer dtype an Input declares (ids for an
    # Embedding: a server then refuses 1.5 as an id); outputs: as model.outputs declare them
    compute = str(np.dtype(model._input_dtype()))
    in_dtypes = [str(np.dtype(t.dtype)) if np.dtype(t.dtype).kind in "iub" else compute for t in model.inputs]
    out_dtypes = [str(np.dtype(t.dtype)) for t in model.outputs]
    return {"inputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in zip(in_names, in_shapes, in_dtypes)],
            "outputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in zip(out_names, out_shapes, out_dtypes)]}


def save_model(model, filepath, overwrite=True, include_optimizer=True):
    filepath = os.fspath(filepath)
    if not filepath.endswith(".glassnet"):
        raise ValueError("Invalid filepath extension for saving. Use a `.glassnet` extension (glassnet's own format), "
                         f"or save_weights('...weights.safetensors'). Received: filepath={filepath}")
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built; build it (or train it) before saving.")
    _check_overwrite(filepath, overwrite)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "glassnet_version": __version__,
              "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S"),
              "model": {"class_name": type(model).__name__, "config": model.get_config()},
              "build_input_shape": [list(s) for s in model.input_shape] if isinstance(model.input_shape, list)
              else list(model.input_shape), "compile": _serialize_compile(model),
              "signature": _signature(model),
              "metadata": getattr(model, "metadata", {}) or {},
              "training": {"seed": getattr(model, "training_seed", None)}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("config.json", json.dumps(config, indent=1, default=json_plain))
        zf.writestr("model.weights.safetensors", safetensors.dumps(_weight_tensors(model)))
        opt = model.optimizer if include_optimizer else None
        if opt is not None and opt.built:
            tensors = {f"{g}:{name}": arr for g, slots in enumerate(opt.slots) for name, arr in slots.items()}
            zf.writestr("optimizer.safetensors", safetensors.dumps(
                tensors, {"iterations": opt.iterations, "u_product": getattr(opt, "u_product", 1.0)}))
    atomic_write(filepath, buf.getvalue())


def read_member(zf, name, limits=MEMBERS):
    """The bytes of member ``name``, refusing oversized, bomb-like or corrupt members before trusting them."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ValueError(f"{zf.filename} is missing its {name}: it is not a complete model file.") from None
    limit = limits[name]
    if info.file_size > limit:
        raise ValueError(f"{zf.filename}: {name} declares {info.file_size} bytes, above the {limit}-byte limit.")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):  # bzip2/lzma decompress without a cap
        raise ValueError(f"{zf.filename}: {name} uses zip compression method {info.compress_type}; model files are "
                         "stored or deflated.")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_RATIO * max(info.compress_size, 1024):
        raise ValueError(f"{zf.filename}: {name} expands {info.compress_size} compressed bytes to {info.file_size} "
                         f"(more than {MAX_RATIO}x): refusing a likely zip bomb.")
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise ValueError(f"{zf.filename}: {name} is corrupt ({e}).") from None
    if len(data) != info.file_size:
        raise ValueError(f"{zf.filename}: {name} holds {len(data)} bytes but declares {info.file_size}: corrupt or "
                         "hostile archive.")
    return data


def open_archive(filepath, allowed=None, what="glassnet model file"):
    """Open a model archive read-only, refusing duplicate, linked or unexpected members up front."""
    try:
        zf = zipfile.ZipFile(filepath)
    except (zipfile.BadZipFile, EOFError):
        raise ValueError(f"{filepath} is not a {what} (not a zip archive; it may be truncated).") from None
    names = zf.namelist()
    unsafe = [n for n in names if n.startswith(("/", "\\")) or ":" in n or "\\" in n or ".." in n.split("/")]
    problem = None
    if unsafe:
        problem = f"unsafe member names {unsafe[:5]} (absolute or path-traversal paths)"
    elif len(set(names)) != len(names):
        problem = f"duplicate members {sorted({n for n in names if names.count(n) > 1})[:5]}"
    elif any((info.external_attr >> 16) & 0o170000 == 0o120000 for info in zf.infolist()):
        problem = "symbolic-link members"
    elif allowed is not None and any(n not in allowed for n in names):
        problem = (f"unexpected members {[n for n in names if n not in allowed][:5]}; it may hold only "
                   f"{sorted(allowed)}")
    if problem:
        zf.close()
        raise ValueError(f"{filepath}: refusing an archive with {problem}.")
    return zf


def json_depth(value, limit=MAX_JSON_DEPTH):
    """Depth of nested lists/objects, raising ValueError past ``limit`` (checked iteratively)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                raise ValueError(f"JSON nested deeper than {limit} levels")
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _malformed(filepath, problem):
    return ValueError(f"{filepath}: config.json is malformed: {problem}. The file is corrupt or was not written by "
                      "glassnet.")


def load_model(filepath, custom_objects=None, compile=True):
    """Rebuild a model from a ``.glassnet`` file; nothing in the file is executed or unpickled."""
    from ..models.model import Model
    filepath = os.fspath(filepath)
    with open_archive(filepath, allowed=MEMBERS) as zf:
        try:
            config = json.loads(read_member(zf, "config.json"))
            json_depth(config)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"{filepath}: config.json is not valid JSON or is nested absurdly deep ({e}).") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(f"{filepath} is not a glassnet model file (config.json lacks format='glassnet').")
        spec, comp = config.get("model"), config.get("compile")
        if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
            raise _malformed(filepath, "'model' must be {\"class_name\": ..., \"config\": {...}}")
        if comp is not None and not (isinstance(comp, dict) and isinstance(comp.get("optimizer"), dict)):
            raise _malformed(filepath, "'compile' must be null or an object with an 'optimizer' config")
        shape = config.get("build_input_shape")
        shapes = shape if isinstance(shape, list) and shape and isinstance(shape[0], list) else [shape]
        if not all(isinstance(s, list) and all(d is None or (isinstance(d, int) and d > 0) for d in s) for s in shapes):
            raise _malformed(filepath, f"'build_input_shape' must be a list of positive ints or null, got {shape!r}")
        weights_data = read_member(zf, "model.weights.safetensors")
        tensors, _ = safetensors.loads(weights_data, filepath)
        budget = sum(arr.nbytes for arr in tensors.values())
        try:
            with backend.weight_budget(budget, filepath):
                model = deserialize("layers", spec, "layer", custom_objects)
                if not isinstance(model, Model):
                    raise _malformed(filepath, f"'model' describes a {type(model).__name__}, not a model")
                if not model.built:
                    model.build(tuple(shape))
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise _malformed(filepath, f"{type(e).__name__}: {e}") from None
        _assign_weights(model, tensors, filepath)
        model.metadata = config.get("metadata") or {}
        if not isinstance(model.metadata, dict):
            raise _malformed(filepath, "'metadata' must be an object")
        training = config.get("training") or {}
        if not isinstance(training, dict):
            raise _malformed(filepath, "'training' must be an object")
        seed = training.get("seed")
        if seed is not None and not (isinstance(seed, int) and 0 <= seed < 2 ** 63):
            raise _malformed(filepath, f"training seed must be a non-negative integer, got {seed!r}")
        model.training_seed = seed
        if compile and comp:
            from .. import optimizers as _optimizers
            try:
                model.compile(optimizer=_optimizers.deserialize(comp["optimizer"]),
                              loss=_deserialize_spec(comp.get("loss"), "loss"),
                              metrics=_deserialize_spec(comp.get("metrics"), "metric") or None,
                              loss_weights=_deserialize_spec(comp.get("loss_weights"), "weight"))
            except (KeyError, TypeError, AttributeError) as e:
                raise _malformed(filepath, f"compile settings: {type(e).__name__}: {e}") from None
            if "optimizer.safetensors" in zf.namelist():
                _restore_optimizer(model, zf, filepath)
    return model


def _restore_optimizer(model, zf, filepath):
    slots, meta = safetensors.loads(read_member(zf, "optimizer.safetensors"), filepath)
    opt = model.optimizer
    opt.build(model.trainable_weights)
    for g, group_slots in enumerate(opt.slots):
        for name, arr in group_slots.items():
            saved = slots.get(f"{g}:{name}")
            if saved is None or saved.shape != arr.shape or saved.dtype != arr.dtype:
                raise ValueError(f"{filepath}: optimizer state {g}:{name} is missing or does not fit this model.")
            if saved.dtype.kind == "f" and not np.isfinite(saved).all():
                raise ValueError(f"{filepath}: optimizer state {g}:{name} holds NaN or Inf; the run it comes from "
                                 "diverged. Load an earlier checkpoint, or load_model(..., compile=False).")
            arr[...] = saved
    try:
        iterations = int(meta.get("iterations", "0"))
        u_product = float(meta.get("u_product", "1.0"))
        if iterations < 0 or not 0.0 < u_product <= 1.0:  # (Nadam's Π μ: a product of numbers in (0, 1))
            raise ValueError
    except ValueError:
        raise ValueError(f"{filepath}: optimizer metadata is malformed ({str(meta)[:200]}): iterations must be a "
                         "whole number >= 0 and u_product in (0, 1].") from None
    opt.iterations = iterations
    if hasattr(opt, "u_product"):
        opt.u_product = u_product
