"""The engine: backend, Weight, Layer, flat parameter buffers, registry."""
