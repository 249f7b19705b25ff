"""Names to classes, for strings like 'relu' and for configs like {"class_name": "Dense", ...}.

Nothing is ever unpickled or evaluated: a config can only name a class that was registered here.
"""

_REGISTRY = {}  # kind -> {name: object}


def register(kind, *names):
    """Decorator: make ``obj`` findable as ``kind`` under its class name and ``names``."""

    def deco(obj):
        table = _REGISTRY.setdefault(kind, {})
        table[obj.__name__] = obj
        for n in names:
            table[n] = obj
        return obj

    return deco


def register_serializable(kind="custom"):
    """Public decorator for user classes (custom layers, losses ...), found by name only."""

    def deco(cls):
        for k in ("layers", "losses", "metrics", "activations", "initializers", "regularizers",
                  "constraints", "optimizers", "callbacks", "schedules", kind):
            _REGISTRY.setdefault(k, {})[cls.__name__] = cls
        return cls

    return deco


def table(kind):
    return _REGISTRY.setdefault(kind, {})


def lookup(kind, name, what):
    """The object registered as ``name``; a clear error listing the valid names otherwise."""
    found = _REGISTRY.get(kind, {}).get(name)
    if found is None:
        known = sorted(n for n in _REGISTRY.get(kind, {}) if n[:1].islower()) or sorted(_REGISTRY.get(kind, {}))
        raise ValueError(f"Unknown {what} {name!r}. Known {what}s: {', '.join(known)}.")
    return found


def serialize(obj):
    """{"class_name": ..., "config": ...} for an object with get_config()."""
    if obj is None:
        return None
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize(kind, config, what, custom_objects=None):
    """Rebuild an object from a string name or a {"class_name", "config"} dict."""
    if isinstance(config, str):
        if custom_objects and config in custom_objects:
            return custom_objects[config]
        return lookup(kind, config, what)
    if not isinstance(config, dict) or "class_name" not in config:
        raise TypeError(f"Cannot build a {what} from {config!r}: expected a name or a "
                        '{"class_name": ..., "config": {...}} dict.')
    name = config["class_name"]
    cls = custom_objects.get(name) if custom_objects and name in custom_objects else lookup(kind, name, what)
    return cls.from_config(dict(config.get("config") or {}))
