"""One-line notices for Keras 2 spellings that glassnet still accepts."""
import os
import sys

_seen = set()
_enabled = os.environ.get("GLASSNET_LEGACY_NOTICES", "1") != "0"


def set_legacy_notices(enabled):
    """Turn the one-line Keras 2 notices on or off (env GLASSNET_LEGACY_NOTICES=0 also silences them)."""
    global _enabled
    _enabled = bool(enabled)


def legacy_notice(old, new):
    """Print once per spelling: what the Keras 2 code said and the Keras 3 spelling that replaces it."""
    key = (old, new)
    if not _enabled or key in _seen:
        return
    _seen.add(key)
    print(f"glassnet: {old} is Keras 2 spelling; accepted, the Keras 3 spelling is {new}.", file=sys.stderr)
