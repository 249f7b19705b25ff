"""``model.summary()`` in Keras 3's table format (as rendered by rich on an 80-column terminal)."""
import os
import shutil
import sys
import textwrap


def readable_size(n_bytes):
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n_bytes / 1024 < 1:
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.2f} EB"


def _console_width():
    if sys.stdout.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    try:
        return int(os.environ.get("COLUMNS", 80))
    except ValueError:
        return 80


def _cells(text, width, align):
    lines = textwrap.wrap(text, width - 2, break_long_words=True) or [""]
    return [" " + (line.ljust(width - 2) if align == "left" else line.rjust(width - 2)) + " " for line in lines]


def format_shape(shape):
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _connections(model, layer):
    """Keras's "Connected to" text: the tensors each call of ``layer`` in ``model`` takes, as name[node][index]."""
    refs = []
    for node in getattr(model, "_nodes", []):
        if node.layer is layer:
            refs += ["{}[{}][{}]".format(*model._tensor_ref(t)) for t in node.inputs]
    return ", ".join(refs) if refs else "-"


def summary_lines(model, line_length=None):
    graph = hasattr(model, "_nodes")  # functional models get Keras's "Connected to" column
    positions = [0.3, 0.56, 0.74, 1.0] if graph else [0.45, 0.80, 1.0]
    length = min(line_length or (108 if graph else 88), _console_width() - 4)
    stops = [int(length * p) for p in positions]
    widths = [b - a - 1 for a, b in zip([0] + stops[:-1], stops)]
    widths[-2] -= 1  # what rich's layout leaves for the borders (matches Keras's tables)
    aligns = ["left", "left", "right", "left"][:len(widths)]
    headers = ("Layer (type)", "Output Shape", "Param #", "Connected to")[:len(widths)]

    def rule(left, mid, right, fill):
        return left + mid.join(fill * w for w in widths) + right

    def row(values):
        cols = [_cells(v, w, a) for v, w, a in zip(values, widths, aligns)]
        height = max(len(c) for c in cols)
        cols = [c + [" " * w] * (height - len(c)) for c, w in zip(cols, widths)]
        return ["│" + "│".join(parts) + "│" for parts in zip(*cols)]

    lines = [f'Model: "{model.name}"', rule("┏", "┳", "┓", "━")]
    header = [" " + h.ljust(w - 2) + " " if a == "left" else " " + h.rjust(w - 2) + " "
              for h, w, a in zip(headers, widths, aligns)]
    lines.append("┃" + "┃".join(header) + "┃")
    lines.append(rule("┡", "╇", "┩", "━"))
    layers = model.layers
    for i, layer in enumerate(layers):
        params = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
        shape = layer.output_shape if layer.built else None
        shape_text = (", ".join(format_shape(s) for s in shape) if isinstance(shape, list) else format_shape(shape)) \
            if layer.built else "?"
        values = [f"{layer.name} ({type(layer).__name__})", shape_text, params]
        if graph:
            values.append(_connections(model, layer))
        lines += row(values)
        lines.append(rule("├", "┼", "┤", "─") if i < len(layers) - 1 else rule("└", "┴", "┘", "─"))
    if not layers:
        lines.append(rule("└", "┴", "┘", "─"))
    trainable = [w for w in model.trainable_weights]
    ids = {id(w) for w in trainable}
    non_trainable = [w for w in model.weights if id(w) not in ids]
    t_count, t_bytes = sum(w.size for w in trainable), sum(w.size * w.dtype.itemsize for w in trainable)
    n_count, n_bytes = sum(w.size for w in non_trainable), sum(w.size * w.dtype.itemsize for w in non_trainable)
    opt = getattr(model, "optimizer", None)
    o_count = opt.variables_count() if opt is not None and opt.built else 0
    o_bytes = o_count * (trainable[0].dtype.itemsize if trainable else 4)
    lines.append(f" Total params: {t_count + n_count + o_count:,} ({readable_size(t_bytes + n_bytes + o_bytes)})")
    lines.append(f" Trainable params: {t_count:,} ({readable_size(t_bytes)})")
    lines.append(f" Non-trainable params: {n_count:,} ({readable_size(n_bytes)})")
    if o_count:
        lines.append(f" Optimizer params: {o_count:,} ({readable_size(o_bytes)})")
    return lines
