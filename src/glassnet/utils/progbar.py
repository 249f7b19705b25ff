"""The progress bar, in Keras 3's format (``utils/progbar.py`` there), byte for byte.

verbose=1:  ``20/20 ━━━━━━━━━━━━━━━━━━━━ 0s 346us/step - accuracy: 0.6531 - loss: 0.3469``
verbose=2:  ``20/20 - 0s - 25ms/step - accuracy: 0.6531 - loss: 0.3469``
Set NO_COLOR=1 to drop the ANSI colour codes (Keras always writes them on POSIX).
"""
import math
import os
import re
import sys
import time

import numpy as np

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _style(code, text):
    return text if os.environ.get("NO_COLOR") else f"\x1b[{code}m{text}\x1b[0m"


def format_value(v):
    if np.ndim(v):  # a per-class metric (F1Score(average=None), Precision(thresholds=[...])): its mean, as Keras
        v = float(np.mean(v))
    return f" {v:.4f}" if abs(v) > 1e-3 else f" {v:.4e}"


def format_time(seconds_per_unit, unit="step"):
    if seconds_per_unit >= 1 or seconds_per_unit == 0:
        return f" {seconds_per_unit:.0f}s/{unit}"
    if seconds_per_unit >= 1e-3:
        return f" {seconds_per_unit * 1e3:.0f}ms/{unit}"
    return f" {seconds_per_unit * 1e6:.0f}us/{unit}"


class Progbar:
    def __init__(self, target, width=20, verbose=1, interval=0.05, unit_name="step", stream=None):
        self.target, self.width, self.verbose, self.interval, self.unit_name = target, width, verbose, interval, unit_name
        self.stream = stream
        self._start = time.time()
        self._last_update = 0.0
        self._time_after_first_step = None
        self._prev_width = 0
        self._values = {}

    def _out(self):
        return self.stream or sys.stdout

    def _step_time(self, current, now):
        if not current:
            return 0.0
        if self._time_after_first_step is not None and current > 1:
            per = (now - self._time_after_first_step) / (current - 1)
        else:
            per = (now - self._start) / current
        if current == 1:
            self._time_after_first_step = now
        return per

    def update(self, current, values=None, finalize=None):
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        if values:
            self._values.update(values)
        now = time.time()
        per = self._step_time(current, now)
        if self.verbose == 1:
            if now - self._last_update < self.interval and not finalize:
                return
            out = self._out()
            head = "\b" * self._prev_width + "\r"
            digits = int(math.log10(self.target)) + 1 if self.target else 1
            count = f"%{digits}d/%d" % (current, self.target) if self.target else f"{current}"
            done = int(self.width * current / self.target) if self.target else 0
            line = _style("1", count) + " "
            if done > 0:
                line += _style("32", "━" * done)
            line += _style("37", "━" * (self.width - done))
            if self.target and current < self.target:
                eta = per * (self.target - current)
                if eta > 3600:
                    eta_text = "%d:%02d:%02d" % (eta // 3600, (eta % 3600) // 60, eta % 60)
                elif eta > 60:
                    eta_text = "%d:%02d" % (eta // 60, eta % 60)
                else:
                    eta_text = f"{eta:.0f}s"
                line += " " + _style("1", eta_text)
            else:
                line += " " + _style("1", f"{now - self._start:.0f}s")
            line += format_time(per, self.unit_name)
            for k, v in self._values.items():
                line += f" - {k}:" + format_value(v)
            width = len(_ANSI.sub("", line))
            if self._prev_width > width:
                line += " " * (self._prev_width - width)
            self._prev_width = width
            if finalize:
                line += "\n"
            out.write(head + line)
            out.flush()
            self._last_update = now
        elif self.verbose == 2 and finalize:
            digits = int(math.log10(self.target)) + 1
            line = f"%{digits}d/%d - {now - self._start:.0f}s -" % (current, self.target)
            line += format_time(per, self.unit_name)
            for k, v in self._values.items():
                line += f" - {k}:" + format_value(v)
            out = self._out()
            out.write(line + "\n")
            out.flush()
