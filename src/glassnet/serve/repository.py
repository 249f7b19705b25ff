"""Which models and versions are served: a model file, or a repository laid out like TensorFlow Serving's.

    models/                     a repository of several models          glassnet serve models/
      pima/                     (or point at one model's folder:        glassnet serve models/pima/)
        1/model.glassnet
        2/model.keras
      mnist/
        3/model.glassnet

``refresh()`` compares the disk with what is loaded: new versions are loaded (a file that does not
load yet — still being copied — is retried on the next refresh), removed ones are dropped, and the
version policy picks what is served. The swap is one assignment, so a request that already holds a
:class:`ServedModel` finishes on it while new requests see the new set.
"""
import logging
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from .protocol import ProtocolError, signature

log = logging.getLogger("glassnet.serve")
MODEL_SUFFIXES = (".glassnet", ".keras")
LARGE_BATCH = 1024  # requests with more rows are predicted in chunks of this size


def model_name_from_file(path):
    base = os.path.basename(path)
    for suffix in MODEL_SUFFIXES:
        if base.endswith(suffix):
            return base[:-len(suffix)] or "model"
    return base


@dataclass(eq=False)
class ServedModel:
    """One loaded version of one model."""
    name: str
    version: int
    path: str
    model: object
    signature: object
    stamp: tuple = field(default=(), repr=False)  # (mtime_ns, size) of the file it was loaded from

    def predict(self, arrays):
        """Validated input arrays (model input order) -> list of output arrays."""
        x = arrays[0] if len(arrays) == 1 else arrays
        if len(arrays[0]) <= LARGE_BATCH:
            out = self.model.predict_on_batch(x)
        else:
            out = self.model.predict(x, batch_size=LARGE_BATCH, verbose=0)
        return list(out) if isinstance(out, (list, tuple)) else [out]


def parse_version_policy(text):
    """``latest`` / ``latest:N`` / ``all`` / ``specific:1,2`` -> (kind, argument)."""
    text = (text or "latest").strip()
    kind, _, arg = text.partition(":")
    try:
        if kind == "latest":
            n = int(arg) if arg else 1
            if n >= 1:
                return "latest", n
        elif kind == "all" and not arg:
            return "all", None
        elif kind == "specific" and arg:
            versions = tuple(sorted({int(v) for v in arg.split(",")}))
            if all(v >= 0 for v in versions):
                return "specific", versions
    except ValueError:
        pass
    raise ValueError(f"Unknown version policy {text!r}. Use 'latest' (the highest version), 'latest:N' (the N "
                     "highest), 'all', or 'specific:1,2' (exactly those versions).")


def _apply_policy(versions, policy):
    kind, arg = policy
    versions = sorted(versions)
    if kind == "latest":
        return versions[-arg:]
    if kind == "all":
        return versions
    return [v for v in versions if v in arg]


def _stamp(path):
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


class ModelRepository:
    """The models under ``path`` (a model file, one model's folder of versions, or a repository)."""

    def __init__(self, path, name=None, version_policy="latest", loader=None):
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"No model file or repository at {path}. Pass a .glassnet/.keras file or a "
                                    "folder laid out as <name>/<version>/model.glassnet.")
        if os.path.isfile(self.path) and not self.path.endswith(MODEL_SUFFIXES):
            raise ValueError(f"{path} is not a model file: glassnet serves .glassnet and .keras files (or a folder "
                             "of them laid out as <name>/<version>/model.glassnet).")
        self.name = name
        self.policy = parse_version_policy(version_policy) if isinstance(version_policy, str) else version_policy
        self._loader = loader
        self._models = {}  # name -> {version: ServedModel}, replaced whole on every change
        self.errors = {}  # (name, version) -> message of the last failed load
        self._lock = threading.Lock()  # one refresh at a time

    # --- reading the disk -------------------------------------------------------------------------
    def _layout(self):
        """{name: {version: file}} as found on disk now."""
        if os.path.isfile(self.path):
            return {self.name or model_name_from_file(self.path): {1: self.path}}
        entries = _subdirs(self.path)
        if entries and all(e.isdigit() for e in entries):  # one model's folder of versions
            return {self.name or os.path.basename(self.path): self._versions(self.path)}
        if self.name is not None:
            raise ValueError(f"--model-name names a single model, but {self.path} is a repository of several "
                             f"models ({sorted(entries)}); leave --model-name out.")
        layout = {}
        for entry in entries:
            versions = self._versions(os.path.join(self.path, entry))
            if versions:
                layout[entry] = versions
        return layout

    @staticmethod
    def _versions(folder):
        out = {}
        for entry in _subdirs(folder):
            if not entry.isdigit():
                continue
            vdir = os.path.join(folder, entry)
            try:
                names = os.listdir(vdir)
            except OSError:  # removed since it was listed
                continue
            files = sorted(f for f in names if f.endswith(MODEL_SUFFIXES) and not f.startswith("."))
            preferred = [f for f in files if f in ("model.glassnet", "model.keras")] or files
            if preferred:
                out[int(entry)] = os.path.join(vdir, preferred[0])
        return out

    def _load(self, name, version, path):
        if self._loader is not None:
            model = self._loader(path)
        else:
            from ..saving import load_model
            model = load_model(path, compile=False)
        sig = signature(model)
        served = ServedModel(name, version, path, model, sig, _stamp(path))
        if all(s.dtype.kind in "iuf" for s in sig.inputs):
            # one warm-up prediction builds lazy caches now rather than on the first user's request
            try:
                served.predict([np.zeros((1,) + tuple(max(d, 1) for d in s.shape[1:]), dtype=s.dtype)
                                for s in sig.inputs])
            except Exception as e:  # the model may need real values (e.g. token ids); requests will tell
                log.debug("warm-up prediction of %s version %s failed: %s", name, version, e)
        return served

    # --- refresh ----------------------------------------------------------------------------------
    def refresh(self):
        """Load new versions, drop removed ones; returns (loaded, unloaded) lists of ServedModel."""
        with self._lock:
            layout = self._layout()
            current = self._models
            new, loaded, errors = {}, [], {}
            for name, found in layout.items():
                wanted = _apply_policy(found, self.policy)
                served, failed = {}, False
                for version in wanted:
                    path = found[version]
                    old = current.get(name, {}).get(version)
                    try:
                        stamp = _stamp(path)
                    except OSError:
                        continue
                    if old is not None and old.path == path and old.stamp == stamp:
                        served[version] = old
                        continue
                    try:
                        served[version] = self._load(name, version, path)
                        loaded.append(served[version])
                        log.info("loaded model %s version %s from %s", name, version, path)
                    except Exception as e:  # a file still being copied, or a bad one: keep what we had
                        errors[(name, version)] = f"{type(e).__name__}: {e}"
                        if self.errors.get((name, version)) != errors[(name, version)]:
                            log.warning("cannot load model %s version %s from %s: %s", name, version, path, e)
                        if old is not None:
                            served[version] = old
                        else:
                            failed = True
                if failed:  # a wanted version does not load (yet): keep serving what we had, while on disk
                    for version, old in current.get(name, {}).items():
                        if version in found and version not in served:
                            served[version] = old
                if served:
                    new[name] = dict(sorted(served.items()))
            unloaded = [m for name, versions in current.items() for v, m in versions.items()
                        if new.get(name, {}).get(v) is not m]
            for m in unloaded:
                log.info("unloaded model %s version %s", m.name, m.version)
            self._models = new
            self.errors = errors
            return loaded, unloaded

    # --- lookups ----------------------------------------------------------------------------------
    def names(self):
        return sorted(self._models)

    def versions(self, name):
        return list(self._get_versions(name))

    def _get_versions(self, name):
        versions = self._models.get(name)
        if not versions:
            failed = [f"version {v}: {msg}" for (n, v), msg in self.errors.items() if n == name]
            if failed:
                raise ProtocolError(f"Model {name!r} has no loadable version ({'; '.join(failed)}).", 404)
            known = ", ".join(repr(n) for n in self.names()) or "none"
            raise ProtocolError(f"Unknown model {name!r}. Models served here: {known}.", 404)
        return versions

    def get(self, name, version=None):
        """The served model (the highest version when ``version`` is None); 404 ProtocolError if absent."""
        versions = self._get_versions(name)
        if version is None:
            return versions[next(reversed(versions))]
        try:  # a version is a plain decimal number ("0_1", " 1" or non-ASCII digits name none)
            return versions[int(version) if type(version) is int or str(version).isascii()
                            and str(version).isdigit() else None]
        except (KeyError, ValueError):
            raise ProtocolError(f"Model {name!r} has no version {version!r}; served versions: "
                                f"{[str(v) for v in versions]}.", 404) from None

    def all(self):
        return [m for name in sorted(self._models) for m in self._models[name].values()]


def _subdirs(folder):
    try:
        return sorted(e for e in os.listdir(folder) if not e.startswith(".") and os.path.isdir(os.path.join(folder, e)))
    except OSError:
        return []
