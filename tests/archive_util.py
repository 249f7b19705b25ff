"""Reading and rewriting model archives (zip files) in tests that tamper with them."""
import zipfile


def members(path):
    """{member name: bytes} of the zip archive at ``path``."""
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info.filename) for info in zf.infolist()}


def write_zip(path, parts):
    """Write ``parts`` ({member name: bytes}) as a stored zip archive at ``path``; returns ``path``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return path


def rewrite_h5(src, dst, edit):
    """Copy the ``.keras`` archive ``src`` to ``dst`` with ``edit(h5py.File)`` applied to its model.weights.h5."""
    import io

    import h5py
    parts = members(src)
    buf = io.BytesIO(parts["model.weights.h5"])
    with h5py.File(buf, "a") as f:
        edit(f)
    parts["model.weights.h5"] = buf.getvalue()
    return write_zip(dst, parts)
