"""Functional models: ``Model(inputs, outputs)`` over a graph of layer calls.

forward runs the recorded nodes in topological order, keeping each layer's ``backward``; backward
runs them in reverse, summing the gradients of tensors that feed several layers (shared layers and
fan-out just work, since every layer adds into its weights' ``grad``).
"""
import collections

import numpy as np

from ..engine import graph, parallel
from ..engine.graph import KerasTensor
from ..engine.layer import Layer
from ..engine.registry import deserialize, register, serialize
from ..layers.core import InputLayer
from . import splitting
from .model import Model


def _as_list(x):
    if isinstance(x, dict):
        return list(x.values())
    return list(x) if isinstance(x, (list, tuple)) else [x]


@register("layers")
class Functional(Model):
    """A model defined by its input and output tensors, e.g.

        inputs = Input((8,)); h = Dense(10, activation="relu")(inputs)
        model = Model(inputs, Dense(1, activation="sigmoid")(h))
    """

    input_grad_optional = True  # its backward takes input_grad=False (training skips dx into the inputs)

    def __init__(self, inputs, outputs, name=None, trainable=True, **kwargs):
        super().__init__(name=name, trainable=trainable, **kwargs)
        self._input_names = list(inputs) if isinstance(inputs, dict) else None
        self._output_names_given = list(outputs) if isinstance(outputs, dict) else None
        self._inputs = _as_list(inputs)
        self._outputs = _as_list(outputs)
        for t in self._inputs + self._outputs:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model(inputs, outputs) expects symbolic tensors from Input(...) and layer calls, got "
                                f"{type(t).__name__}.")
        for t in self._inputs:
            if not isinstance(t.node.layer, InputLayer):
                raise ValueError(f"Model inputs must come straight from Input(...); '{t.name}' is the output of layer "
                                 f"'{t.node.layer.name}'.")
        self._nodes = graph.topological_nodes(self._outputs)
        reachable = {id(n.layer) for n in self._nodes if isinstance(n.layer, InputLayer)}
        given = {id(t.node.layer) for t in self._inputs}
        missing = [n.layer.name for n in self._nodes if isinstance(n.layer, InputLayer) and id(n.layer) not in given]
        if missing:
            raise ValueError(f"Graph disconnected: the outputs depend on input(s) {missing}, which are not in "
                             f"Model(inputs=...). Add them to the inputs.")
        unused = [t.name for t in self._inputs if id(t.node.layer) not in reachable]
        if unused:
            raise ValueError(f"Input(s) {unused} do not reach any output; remove them from Model(inputs=...).")
        self._layers, placed = [], set()
        for node in self._nodes:
            if id(node.layer) not in placed:
                placed.add(id(node.layer))
                self._layers.append(node.layer)
        self.input_shape = self._inputs[0].shape if len(self._inputs) == 1 else [t.shape for t in self._inputs]
        self.output_shape = self._outputs[0].shape if len(self._outputs) == 1 else [t.shape for t in self._outputs]
        self._split_plan = None
        self._grad_plan = None
        self.built = True

    # --- structure ------------------------------------------------------------------------------
    @property
    def layers(self):
        return list(self._layers)

    @property
    def inputs(self):
        return list(self._inputs)

    @property
    def outputs(self):
        return list(self._outputs)

    @property
    def input_names(self):
        return self._input_names or [t.node.layer.name for t in self._inputs]

    @property
    def output_names(self):
        return self._output_names_given or [t.node.layer.name for t in self._outputs]

    def _input_dtype(self):
        return self._inputs[0].dtype

    def _ensure_built(self, shape):
        pass

    def _arrays(self, x):
        """The model inputs as a list in input order (from an array, a list, or a dict keyed by input name)."""
        if isinstance(x, dict):
            missing = [n for n in self.input_names if n not in x]
            extra = [k for k in x if k not in self.input_names]
            if missing or extra:
                raise ValueError(f"Model '{self.name}' takes inputs {self.input_names}; got keys {sorted(x)} "
                                 f"(missing {missing}, unexpected {extra}).")
            return [x[n] for n in self.input_names]
        xs = _as_list(x)
        if len(xs) != len(self._inputs):
            raise ValueError(f"Model '{self.name}' takes {len(self._inputs)} input(s) {self.input_names}, got "
                             f"{len(xs)}. Pass a list in that order or a dict keyed by input name.")
        return xs

    # --- computing ------------------------------------------------------------------------------
    def _masks(self, node, values, masks):
        """The mask reaching ``node`` (single-input layers), and the mask its output carries."""
        if node.list_input:
            return None, None
        t = node.inputs[0]
        mask = masks.get(id(t))
        return mask, node.layer.compute_mask(values[id(t)], mask)

    def forward(self, x, training=False):
        xs = self._arrays(x)
        values = {id(t): v for t, v in zip(self._inputs, xs)}
        masks = {}
        steps = []
        front = self._front_for(xs) if training else None
        if front:  # the chain of calls from the input, on two half-batches at once (engine.parallel)
            y, back = self._forward_front(xs[0], front)
            values[id(front[-1].outputs[0])] = y
            steps.append((_Chain(self._inputs[0], front[-1].outputs[0]), back))
            front = {id(node) for node in front}
        for node in self._nodes:
            if isinstance(node.layer, InputLayer) or front and id(node) in front:
                continue
            args = [values[id(t)] for t in node.inputs]
            mask, out_mask = self._masks(node, values, masks)
            if mask is not None and node.layer.consumes_mask:
                y, backward = node.layer.forward(args[0], training, mask=mask)
            else:
                y, backward = node.layer.forward(args if node.list_input else args[0], training)
            if out_mask is not None:
                masks[id(node.outputs[0])] = out_mask
            outs = y if len(node.outputs) > 1 else [y]
            for t, v in zip(node.outputs, outs):
                values[id(t)] = v
            steps.append((node, backward))
        results = [values[id(t)] for t in self._outputs]

        def backward(dys, input_grad=True):
            """Gradients from the outputs back through every call; returns dx of the inputs. With
            ``input_grad=False`` (training) calls whose inputs lead back only to the model's inputs through
            layers without trainable weights compute no dx (``_grad_modes``), and None is returned."""
            dys = dys if len(self._outputs) > 1 else [dys]
            modes = None if input_grad else self._grad_modes()
            grads = {}
            for t, g in zip(self._outputs, dys):
                if g is not None:
                    grads[id(t)] = grads[id(t)] + g if id(t) in grads else g
            for node, back in reversed(steps):
                gs = [grads.get(id(t)) for t in node.outputs]
                if all(g is None for g in gs):
                    continue  # nothing downstream of this call reaches a loss
                if len(gs) > 1:
                    gs = [np.zeros_like(values[id(t)]) if g is None else g for t, g in zip(node.outputs, gs)]
                mode = "full" if modes is None else modes.get(id(node), "weights")  # (a split chain: "weights")
                if mode == "skip":
                    continue  # no trainable weights here or upstream: nothing to compute
                if mode == "weights":  # weight gradients only: the dx would flow only into the model's inputs
                    if not node.list_input and (type(node) is _Chain or node.layer._skips_input_grad()):
                        back(gs if len(gs) > 1 else gs[0], input_grad=False)
                    else:
                        back(gs if len(gs) > 1 else gs[0])  # its dx is computed and dropped
                    continue
                dx = back(gs if len(gs) > 1 else gs[0])
                dxs = dx if node.list_input else [dx]
                for t, g in zip(node.inputs, dxs):
                    if g is not None:
                        grads[id(t)] = grads[id(t)] + g if id(t) in grads else g
            if not input_grad:
                return None
            dx = [grads.get(id(t)) for t in self._inputs]
            return dx if len(dx) > 1 else dx[0]

        return (results if len(results) > 1 else results[0]), backward

    def _grad_modes(self):
        """Per call (node id), what a training backward pass needs from it: "full" (dx too: something upstream
        of it trains), "weights" (it trains, but its inputs lead back only to the model's inputs through layers
        without trainable weights: no dx) or "skip" (nothing to compute). Cached per fit, as layers may be
        frozen between fits (``_reset_step_caches``)."""
        modes = self._grad_plan
        if modes is None:
            needed, modes = set(), {}  # ids of tensors whose gradient some trainable weight upstream needs
            for node in self._nodes:
                if isinstance(node.layer, InputLayer):
                    continue
                upstream = any(id(t) in needed for t in node.inputs)
                trains = bool(node.layer.trainable_weights)
                if upstream or trains:
                    needed.update(id(t) for t in node.outputs)
                modes[id(node)] = "full" if upstream else "weights" if trains else "skip"
            self._grad_plan = modes
        return modes

    def call(self, x, training=False):
        xs = self._arrays(x)
        values = {id(t): v for t, v in zip(self._inputs, xs)}
        masks = {}
        front = self._front_for(xs)
        if front:  # the chain of calls from the input, on two half-batches at once (engine.parallel)
            values[id(front[-1].outputs[0])] = self._call_front(xs[0], front, training)
            front = {id(node) for node in front}
        for node in self._nodes:
            if isinstance(node.layer, InputLayer) or front and id(node) in front:
                continue
            args = [values[id(t)] for t in node.inputs]
            mask, out_mask = self._masks(node, values, masks)
            if mask is not None and node.layer.consumes_mask:
                y = node.layer.call(args[0], training, mask=mask)
            else:
                y = node.layer.call(args if node.list_input else args[0], training)
            if out_mask is not None:
                masks[id(node.outputs[0])] = out_mask
            outs = y if len(node.outputs) > 1 else [y]
            for t, v in zip(node.outputs, outs):
                values[id(t)] = v
        results = [values[id(t)] for t in self._outputs]
        return results if len(results) > 1 else results[0]

    def compute_output_shape(self, input_shape):
        return self.output_shape

    # --- batch splitting (engine.parallel) ------------------------------------------------------
    def _reset_step_caches(self):
        self._split_plan = None
        self._grad_plan = None
        super()._reset_step_caches()

    def _splits_batches(self, batch=None):
        """How many layer calls (a chain from the one input) a step runs as two half-batches on two threads,
        0 when it does not split; with ``batch``, 0 also when batches of that size hold too little work."""
        plan = self._split_plan
        if plan is None:
            plan = self._split_plan = self._find_front()
        chain, work, _ = plan
        if not chain or batch is not None and batch * work < parallel.MIN_WORK:
            return 0
        return len(chain)

    def _find_front(self):
        """``(nodes, work, first)``: the chain of calls from the model's one input that may split — each call takes
        the previous one's only output, which nothing else reads (the chain may end on a tensor that several layers
        read), with a ``per_example`` layer used nowhere else in the model and making no mask — its work
        (splitting.plan, against every other call) and the index of its first layer with trainable weights
        (fixed, like the plan, for a whole fit: a callback may freeze layers meanwhile). ``((), 0, 0)`` when the
        model does not split."""
        if len(self._inputs) != 1:
            return (), 0, 0
        readers = collections.Counter(id(t) for node in self._nodes for t in node.inputs)
        readers.update(id(t) for t in self._outputs)
        uses = collections.Counter(id(node.layer) for node in self._nodes)
        chain, t = [], self._inputs[0]
        for node in self._nodes:
            layer = node.layer
            if isinstance(layer, InputLayer):
                continue
            if (node.list_input or len(node.inputs) != 1 or node.inputs[0] is not t or len(node.outputs) != 1
                    or uses[id(layer)] > 1 or type(layer).compute_mask is not Layer.compute_mask
                    or not splitting.per_example(layer)):
                break
            chain.append(node)
            t = node.outputs[0]
            if readers[id(t)] != 1:
                break
        ids = {id(node) for node in chain}
        rest = [(n.layer, n.outputs[0].shape if len(n.outputs) == 1 else None) for n in self._nodes
                if id(n) not in ids and not isinstance(n.layer, InputLayer)]
        work = splitting.plan([(n.layer, n.outputs[0].shape) for n in chain], rest) if chain else 0
        if not work:
            return (), 0, 0
        return tuple(chain), work, next(i for i, node in enumerate(chain) if node.layer.trainable_weights)

    def _front_for(self, xs):
        """The chain of calls to split for inputs ``xs`` now, or None."""
        if not parallel.active() or len(xs) != 1 or not np.ndim(xs[0]) or len(xs[0]) < parallel.MIN_BATCH:
            return None
        return self._split_plan[0] if self._splits_batches(len(xs[0])) else None

    def _forward_front(self, x, chain):
        def run_front(part):
            backs = []
            for node in chain:
                part, back = node.layer.forward(part, True)
                backs.append(back)
            return part, backs

        layers = [node.layer for node in chain]
        first = self._split_plan[2]  # (the plan's, for the whole fit)

        def run_back(backs, dy, input_grad):
            return splitting.backward_run(layers, backs, dy, input_grad, first)

        return splitting.forward_halves(run_front, run_back, x, [w for layer in layers for w in layer.weights])

    def _call_front(self, x, chain, training):
        def run_front(part):
            for node in chain:
                part = node.layer.call(part, training)
            return part

        return splitting.call_halves(run_front, x)

    # --- configuration --------------------------------------------------------------------------
    def _call_indices(self):
        """{id(node): index of the call among its layer's calls in THIS model} (computed once per get_config)."""
        ids = {id(n) for n in self._nodes}
        index = {}
        for layer in self._layers:
            k = 0
            for n in layer._inbound_nodes:
                if id(n) in ids:
                    index[id(n)] = k
                    k += 1
        return index

    def _tensor_ref(self, t, calls=None):
        """[layer name, index of the call among that layer's calls in THIS model, output index]."""
        calls = self._call_indices() if calls is None else calls
        return [t.node.layer.name, calls[id(t.node)], t.index]

    def get_config(self):
        calls = self._call_indices()
        layers = []
        for layer in self._layers:
            nodes = [n for n in layer._inbound_nodes if id(n) in calls]
            layers.append({**serialize(layer), "name": layer.name,
                           "inbound_nodes": [{"args": [self._tensor_ref(t, calls) for t in n.inputs],
                                              "list_input": n.list_input} for n in nodes]})
        return {"name": self.name, "trainable": self.trainable, "layers": layers,
                "input_layers": [self._tensor_ref(t, calls) for t in self._inputs],
                "output_layers": [self._tensor_ref(t, calls) for t in self._outputs],
                "input_names": self._input_names, "output_names": self._output_names_given}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        created, outputs_of = {}, {}
        pending = list(config["layers"])
        for spec in pending:
            layer = deserialize("layers", {"class_name": spec["class_name"], "config": spec["config"]}, "layer",
                                custom_objects)
            created[spec["name"]] = layer
            if isinstance(layer, InputLayer):
                outputs_of[(spec["name"], 0)] = [layer.output]
        # Each layer's calls in order, each call as soon as the tensors it reads exist: a call whose input is
        # missing waits on that (layer, call) and is taken up again when it appears, so configs in any order
        # rebuild in one pass (rounds over the whole list were quadratic: a 20k-layer config in reverse order).
        queue = collections.deque(s for s in pending if not isinstance(created[s["name"]], InputLayer))
        waiting = collections.defaultdict(list)  # (layer name, call index) -> specs waiting for that call's outputs
        node_counter = {}
        left = len(queue)
        while queue:
            spec = queue.popleft()
            name, nodes = spec["name"], spec["inbound_nodes"]
            k = node_counter.get(name, 0)
            while k < len(nodes):
                refs = nodes[k]["args"]
                missing = next(((r[0], r[1]) for r in refs if (r[0], r[1]) not in outputs_of), None)
                if missing is not None:
                    waiting[missing].append(spec)
                    break
                args = [outputs_of[(r[0], r[1])][r[2]] for r in refs]
                out = created[name](args if nodes[k]["list_input"] else args[0])
                outputs_of[(name, k)] = out if isinstance(out, list) else [out]
                queue.extend(waiting.pop((name, k), ()))
                k += 1
            node_counter[name] = k
            if k == len(nodes):
                left -= 1
        if left:
            stuck = sorted({s["name"] for specs in waiting.values() for s in specs})
            raise ValueError(f"Functional config could not be rebuilt: layers {stuck} refer to tensors that never "
                             "appear.")

        def tensor(ref):
            return outputs_of[(ref[0], ref[1])][ref[2]]

        inputs = [tensor(r) for r in config["input_layers"]]
        outputs = [tensor(r) for r in config["output_layers"]]
        if config.get("input_names"):
            inputs = dict(zip(config["input_names"], inputs))
        if config.get("output_names"):
            outputs = dict(zip(config["output_names"], outputs))
        return cls(inputs if len(inputs) > 1 or isinstance(inputs, dict) else inputs[0],
                   outputs if len(outputs) > 1 or isinstance(outputs, dict) else outputs[0],
                   name=config.get("name"), trainable=config.get("trainable", True))


class _Chain:
    """Stands for a split chain of calls in ``forward``'s list of steps: one input tensor, one output."""

    list_input = False

    def __init__(self, inp, out):
        self.inputs, self.outputs = [inp], [out]
