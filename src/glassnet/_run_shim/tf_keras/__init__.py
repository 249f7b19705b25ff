"""Stand-in found first on sys.path in processes started by a ``glassnet run`` script (see glassnet._run_shim)."""
from glassnet.keras_import import _become

_become(__name__)
