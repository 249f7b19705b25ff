"""keras.layers: the layers glassnet implements; others fail with a message naming what exists."""
from ...layers import *  # noqa: F401,F403
from ...layers import __all__ as _available
from ...models.sequential import Sequential  # noqa: F401

__all__ = list(_available)


def __getattr__(name):
    # ImportError (not AttributeError) so that `from keras.x import Name` shows this message
    if name[:1].isupper():
        raise ImportError(f"keras.layers.{name} is not available in glassnet {__import__('glassnet').__version__}. "
                             f"Layers available: {', '.join(sorted(_available))}.")
    raise AttributeError(f"module 'keras.layers' has no attribute {name!r}")
