"""Saving and loading: glassnet's safe model format."""
