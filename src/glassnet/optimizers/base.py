"""The Optimizer base: one fused update over flat parameter buffers.

``apply()`` follows Keras 3's order: clip the gradients (clipnorm per weight, global_clipnorm, or
clipvalue), apply weight decay ``w -= w·wd·lr``, run the update rule, project constraints, then
``iterations += 1``. The update rules (subclasses' ``update``) are written on whole flat vectors
with in-place NumPy ufuncs: the math reads as the formula, one line per term.
"""
import math

import numpy as np

from ..engine import flat
from ..utils.legacy import legacy_notice
from . import schedules as _schedules


CHUNK = 1 << 15  # elements per block of an elementwise update: the rule's temporaries stay in L2 cache
FLUSH_EVERY = 16  # steps between flushes of near-subnormal slot values (see _update_blocks)


def flush_threshold(dtype):
    """tiny·2²⁴, tiny = the smallest normal float of ``dtype`` (1.2e-38 in float32): see flush_to_zero."""
    return np.finfo(dtype).tiny * 2.0 ** 24


def flush_to_zero(a):
    """a[|a| < tiny·2²⁴] = 0 in place, tiny = the smallest normal float (1.2e-38 in float32).

    The margin 2²⁴ keeps every product of a kept value with a factor >= 2⁻²⁴ (1 − β, lr, ...) normal too,
    so no term of the update rule computes with subnormal numbers either."""
    if a.dtype.kind == "f":
        np.copyto(a, 0, where=np.abs(a) < flush_threshold(a.dtype))


class Optimizer:
    _KERAS2_DEFAULT_LR = None  # the documented Keras 2 default, where it differs
    # True when ``update`` treats every element on its own (all built-in rules): the step may then run
    # block by block over the flat vectors (``_update_blocks``) with bit-identical results. A rule that
    # needs whole-vector quantities (norms, as LAMB) leaves this False and sees whole vectors.
    elementwise = False
    fused = False  # True when the rule has a compiled kernel (``_fused_update``) ...
    fused_min_size = 0  # ... worth its call from vectors of this many values on

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name=None, **kwargs):
        if "lr" in kwargs:
            legacy_notice(f"{type(self).__name__}(lr=...)", f"{type(self).__name__}(learning_rate=...)")
            learning_rate = kwargs.pop("lr")
        decay = kwargs.pop("decay", None)
        if decay:
            legacy_notice(f"{type(self).__name__}(decay=...)",
                          "learning_rate=InverseTimeDecay(lr, decay_steps=1, decay_rate=decay)")
        elif decay is not None:
            decay = None  # decay=0 is Keras 2's default: nothing to do
        for unsupported in ("use_ema", "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor",
                            "gradient_accumulation_steps"):
            if kwargs.get(unsupported) not in (None, False):
                raise ValueError(f"{type(self).__name__}: `{unsupported}` is not supported by glassnet. Remove it; "
                                 "the other Keras 3 optimizer arguments work as in Keras.")
            kwargs.pop(unsupported, None)
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        if sum(c is not None for c in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                             f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}")
        self.name = name or type(self).__name__.lower()
        self.decay = float(decay) if decay else 0.0
        self.weight_decay = weight_decay
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.iterations = 0
        self.learning_rate = learning_rate
        self.groups = None
        self.slots = None
        self._whole_units = None  # (groups, the units apply() steps over), made on the first apply after a build
        self._exclude = set()

    # --- learning rate --------------------------------------------------------------------------
    @property
    def learning_rate(self):
        """The learning rate: a schedule's value at ``iterations`` (as Keras 3 reads it back), else the rate set.
        With Keras 2's ``decay`` it is the base rate, as Keras 2's ``K.get_value(optimizer.lr)`` reads it: each step
        uses ``lr / (1 + decay·iterations)`` (``_lr_at``), and assigning sets the base rate, so code that reads,
        scales and assigns it (LearningRateScheduler, ReduceLROnPlateau) does not apply the decay twice."""
        return self._base_lr_at(self.iterations)

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, _schedules.LearningRateSchedule) or callable(value):
            self._learning_rate = value
        else:
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"learning_rate must be a finite number >= 0, got {value}.")
            self._learning_rate = value

    @property
    def lr(self):  # Keras 2 attribute
        return self.learning_rate

    @lr.setter
    def lr(self, value):
        self.learning_rate = value

    def _base_lr_at(self, it):
        lr = self._learning_rate
        if isinstance(lr, _schedules.LearningRateSchedule):
            return float(lr(it))
        if callable(lr):  # Keras: "a callable that takes no arguments"
            return float(lr())
        return lr

    def _lr_at(self, it):
        """The learning rate of step ``it`` (0-based): the schedule's value, then Keras 2's decay."""
        lr = self._base_lr_at(it)
        if self.decay:  # Keras 2: lr_t = lr / (1 + decay · iterations), iterations read before the step
            lr = lr / (1.0 + self.decay * it)
        return lr

    # --- building -------------------------------------------------------------------------------
    def build(self, weights):
        """Pack ``weights`` into flat buffers and create the slot vectors of the update rule."""
        self.groups = flat.pack(weights)
        self.slots = [self.build_slots(g.value) for g in self.groups]

    def build_slots(self, value):
        """Return {name: zero vector like value} for the rule's state. Default: no state."""
        return {}

    @property
    def built(self):
        return self.groups is not None

    @property
    def weights(self):
        return [w for g in self.groups for w in g.weights] if self.groups else []

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        for w in var_list or []:
            self._exclude.add(id(w))
        self._exclude_names = tuple(var_names or ())

    def variables_count(self):
        """Number of scalars of optimizer state (slots + iterations + learning_rate), as Keras counts."""
        return sum(s.size for slots in (self.slots or []) for s in slots.values()) + 2

    # --- one step -------------------------------------------------------------------------------
    def apply(self):
        """Update every packed weight from its gradient (already in ``group.grad``)."""
        units = self._whole_units
        if units is None or units[0] is not self.groups:  # once per build: each dtype group as one unit
            units = self._whole_units = (self.groups, [
                (group.value, group.grad, slots, list(zip(group.weights, group.slices)))
                for group, slots in zip(self.groups, self.slots)])
        self._step(units[1])

    def _begin_step(self):
        """Called at the start of every step, before any weight moves (a rule's per-step scalars: Nadam)."""

    def _end_step(self):
        """Called at the end of every step."""

    def apply_gradients(self, grads_and_vars):
        """Keras API: ``[(grad, weight), ...]``; copies each grad into place and steps those weights.

        As in Keras, pairs whose gradient is None are skipped, and when the pairs name only some of the
        weights the optimizer was built with, only those weights (and their slots) move."""
        pairs = [(g, w) for g, w in grads_and_vars if g is not None]
        if not pairs:
            return
        if not self.built:
            self.build([w for _, w in pairs])
        known = {id(w) for w in self.weights}
        for _, w in pairs:  # all checked before any gradient is written
            if id(w) not in known:
                raise ValueError(f"apply_gradients() got a gradient for {getattr(w, 'path', w)!r}, which this "
                                 "optimizer was not built with; build it with every weight it will update "
                                 "(model.compile does), or use a separate optimizer.")
        for g, w in pairs:
            w.grad[...] = g
        given = {id(w) for _, w in pairs}
        if len(given) == len(known):
            self.apply()
            return
        # only the given weights (and their slots) move: each one's slices of the flat vectors as a unit
        self._step([(group.value[sl], group.grad[sl], {k: v[sl] for k, v in slots.items()}, [(w, slice(None))])
                    for group, slots in zip(self.groups, self.slots)
                    for w, sl in zip(group.weights, group.slices) if id(w) in given])

    def _step(self, units):
        """One optimizer step over ``units``, each ``(value, grad, slots, [(weight, its slice of value and
        grad)])`` and updated as one vector: a whole dtype group (``apply``) or one weight (``apply_gradients``
        on some weights). Global clipping, clipping, weight decay, the rule, then constraints."""
        self._begin_step()
        lr = self._lr_at(self.iterations)
        t = self.iterations + 1
        scale = self._global_clip_scale([unit[1] for unit in units])
        for value, g, slots, parts in units:
            if scale is not None:
                g *= scale
            if self.clipvalue is not None:
                np.clip(g, -self.clipvalue, self.clipvalue, out=g)
            elif self.clipnorm is not None:
                for _, sl in parts:  # per weight: g · c / max(‖g‖, c)
                    norm = float(np.sqrt(np.dot(g[sl], g[sl])))
                    if norm > self.clipnorm:
                        g[sl] *= self.clipnorm / norm
            if self.weight_decay:
                self._apply_weight_decay(value, lr, parts)
            self._update_blocks(value, g, slots, value.dtype.type(lr), t)
            for w, _ in parts:
                if w.constraint is not None:
                    w.value[...] = w.constraint(w.value)
        self.iterations += 1
        self._end_step()

    def _global_clip_scale(self, grads):
        """c / max(‖g‖, c) over the gradient vectors ``grads``, computed before any is scaled."""
        if self.global_clipnorm is None:
            return None
        norm = math.sqrt(sum(float(np.dot(g, g)) for g in grads))
        return self.global_clipnorm / norm if norm > self.global_clipnorm else None

    def _apply_weight_decay(self, value, lr, parts):
        names = getattr(self, "_exclude_names", ())
        for w, sl in parts:
            if id(w) in self._exclude or any(n in w.path for n in names):
                continue
            value[sl] -= value[sl] * (self.weight_decay * lr)

    def _update_blocks(self, w, g, slots, lr, t):
        """Fast path: run an elementwise ``update`` on blocks of ``CHUNK`` elements instead of whole vectors.

        The rule's NumPy temporaries then are small and stay in cache instead of streaming megabytes
        through memory once per term (about 2x faster for Adam on a 670k-parameter MLP). Same ufuncs on
        the same elements, so the result equals the whole-vector step exactly (tests/test_fast_paths.py).

        On these large vectors the slots are also flushed to zero near the smallest normal float
        (``flush_to_zero``) every ``FLUSH_EVERY`` steps, as XLA and TensorFlow (Keras's backends) run on CPU:
        a moment that decays while its gradient is 0 (a dead ReLU unit) otherwise spends ~150 steps as a
        subnormal number, whose arithmetic is ~10x slower on x86 (Adam's step on a 670k-parameter MLP went
        1.2 -> 10 ms in its second epoch). The flush margin (2²⁴) outlasts FLUSH_EVERY steps of decay by
        β = 0.9, so no subnormal appears in between. Slot values below 2e-31 (float32) move no weight by a
        representable amount.
        """
        n = w.size
        flush = n > CHUNK and t % FLUSH_EVERY == 0  # (only the blockwise path flushes: large vectors)
        if self.fused and n >= self.fused_min_size and self._fused_update(w, g, slots, lr, t, flush):
            return
        if n <= CHUNK or not self._rule_is_elementwise():
            self.update(w, g, slots, lr, t)
            return
        for start in range(0, n, CHUNK):
            block = slice(start, start + CHUNK)
            block_slots = {k: s[block] for k, s in slots.items()}
            self.update(w[block], g[block], block_slots, lr, t)
            if flush:
                for s in block_slots.values():
                    flush_to_zero(s)

    def _fused_update(self, w, g, slots, lr, t, flush):
        """The compiled fast path (``engine.compiled``): run ``update`` — and, when ``flush``, the slots'
        ``flush_to_zero`` — as one fused loop and return True; or return False for the NumPy path.
        A rule with a compiled kernel overrides this; its result must equal ``_update_blocks``'s."""
        return False

    def _rule_is_elementwise(self):
        """``elementwise`` as declared by the class that defines the ``update`` in use (so a subclass that
        overrides ``update`` without declaring ``elementwise = True`` gets whole vectors)."""
        for cls in type(self).__mro__:
            if "update" in vars(cls):
                return bool(vars(cls).get("elementwise", False))
        return False

    def update(self, w, g, slots, lr, t):
        """The update rule on flat vectors: w, g, slot vectors, learning rate, step t = iterations + 1."""
        raise NotImplementedError

    # --- configuration --------------------------------------------------------------------------
    def get_config(self):
        lr = self._learning_rate
        config = {"name": self.name,
                  "learning_rate": _schedules.serialize(lr) if isinstance(lr, _schedules.LearningRateSchedule)
                  else lr,
                  "weight_decay": self.weight_decay, "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
                  "clipvalue": self.clipvalue}
        if self.decay:
            config["decay"] = self.decay
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        lr = config.get("learning_rate")
        if isinstance(lr, dict):
            config["learning_rate"] = _schedules.deserialize(lr)
        for key in ("use_ema", "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor",
                    "gradient_accumulation_steps", "is_legacy_optimizer"):
            config.pop(key, None)
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} learning_rate={self.learning_rate:g} iterations={self.iterations}>"
