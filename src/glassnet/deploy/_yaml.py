"""A small YAML writer for manifests (dicts, lists, strings, numbers, booleans) — no PyYAML needed.

Strings are written plain when YAML would read them back as the same string, else double-quoted
with JSON escaping (valid YAML), so "8501", "true", "1.0" and "*" stay strings.
"""
import json
import re

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    s = str(v)
    if _PLAIN.match(s) and s.lower() not in _RESERVED:
        return s
    return json.dumps(s)


def _lines(obj, indent):
    pad = " " * indent
    if isinstance(obj, dict):
        if not obj:
            yield pad + "{}"
        for k, v in obj.items():
            key = _scalar(k)
            if isinstance(v, (dict, list)) and v:
                yield f"{pad}{key}:"
                yield from _lines(v, indent + (2 if isinstance(v, dict) else 0))
            else:
                yield f"{pad}{key}: {_scalar(v) if not isinstance(v, (dict, list)) else ('{}' if isinstance(v, dict) else '[]')}"
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                sub = list(_lines(item, indent + 2))
                yield pad + "- " + sub[0][indent + 2:]
                yield from sub[1:]
            else:
                yield f"{pad}- {_scalar(item) if not isinstance(item, (dict, list)) else json.dumps(item)}"
    else:
        yield pad + _scalar(obj)


def dump(obj):
    return "\n".join(_lines(obj, 0)) + "\n"


def dump_all(docs, header=""):
    return header + "---\n".join(dump(d) for d in docs)
