"""Symbolic tensors and nodes: what calling a layer on ``Input(...)`` records, for functional models.

Calling a layer on KerasTensors builds the layer for their shapes and returns new KerasTensors; each
call is a Node (layer, input tensors, output tensors). A functional Model walks the nodes from its
outputs back to its inputs, then runs them in order, keeping each layer's ``backward``.
"""
import contextlib

_tape = None  # while a subclassed Model's call() runs in training, layer calls are recorded here


class KerasTensor:
    """A symbolic tensor: a shape (batch axis None), a dtype, and the node that produces it."""

    def __init__(self, shape, dtype, node=None, index=0, name=None):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.node = node
        self.index = index
        self.name = name or (node.layer.name if node is not None else "tensor")

    @property
    def _layer(self):
        return self.node.layer

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"


class Node:
    """One call of a layer: ``outputs = layer(inputs)``; ``list_input`` when the layer took a list."""

    def __init__(self, layer, inputs, list_input):
        self.layer = layer
        self.inputs = list(inputs)
        self.list_input = list_input
        self.outputs = []
        layer._inbound_nodes.append(self)

    @property
    def index(self):
        return self.layer._inbound_nodes.index(self)


def is_symbolic(x):
    if isinstance(x, KerasTensor):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, KerasTensor) for t in x)


def call_symbolic(layer, x):
    """Record ``layer(x)`` for KerasTensor(s) ``x``: build the layer, return its symbolic output(s)."""
    list_input = isinstance(x, (list, tuple))
    inputs = list(x) if list_input else [x]
    shapes = [t.shape for t in inputs] if list_input else inputs[0].shape
    if not layer.built:
        layer._maybe_build(shapes)
    else:
        if not list_input:
            layer._check_input_shape(shapes)
    out_shape = layer.compute_output_shape(shapes)
    node = Node(layer, inputs, list_input)
    multi = isinstance(out_shape, list)
    shapes_out = out_shape if multi else [out_shape]
    node.outputs = [KerasTensor(s, layer.dtype, node, i) for i, s in enumerate(shapes_out)]
    return node.outputs if multi else node.outputs[0]


def topological_nodes(outputs):
    """Nodes needed for ``outputs``, each after the nodes producing its inputs (depth-first order).

    Iterative (an explicit stack, not recursion), so graphs thousands of layers deep are walked; the order is
    that of the recursive post-order walk: inputs first, in the order each node lists them.
    """
    order, seen, active = [], set(), set()
    for t in outputs:
        root = t.node
        if id(root) in seen:
            continue
        active.add(id(root))
        stack = [(root, iter(root.inputs))]
        while stack:
            node, pending = stack[-1]
            for u in pending:
                child = u.node
                if id(child) in seen:
                    continue
                if id(child) in active:
                    raise ValueError(f"The graph has a cycle through layer '{child.layer.name}'.")
                active.add(id(child))
                stack.append((child, iter(child.inputs)))
                break
            else:  # every input of ``node`` is placed: place the node itself
                stack.pop()
                active.discard(id(node))
                seen.add(id(node))
                order.append(node)
    return order


@contextlib.contextmanager
def recording(tape):
    """Record every layer call made on arrays inside the block: (input arrays, list_input, output, backward)."""
    global _tape
    previous, _tape = _tape, tape
    try:
        yield tape
    finally:
        _tape = previous


def record(inputs, list_input, output, backward):
    _tape.append((inputs, list_input, output, backward))
