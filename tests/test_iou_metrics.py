"""IoU, BinaryIoU, MeanIoU, OneHotIoU, OneHotMeanIoU: Keras 3's values, batch after batch."""
import os
import warnings

import numpy as np
import pytest

import glassnet
from glassnet import metrics as M

RNG = np.random.default_rng(7)
LABELS = [RNG.integers(0, 4, (2, 5, 5)) for _ in range(3)]  # three batches of 5×5 label maps, classes 0-3
PRED_IDS = [np.where(RNG.random(y.shape) < 0.7, y, RNG.integers(0, 4, y.shape)) for y in LABELS]
LABELS[1][0, 0, :3] = [255, -1, 7]  # a "void" label and ids out of range
WEIGHTS = [RNG.integers(0, 3, y.shape).astype(np.float32) for y in LABELS]
SCORES = [np.eye(4)[p] * 0.6 + RNG.random(p.shape + (4,)) * 0.3 for p in PRED_IDS]
ONE_HOT = [np.eye(4)[np.clip(y, 0, 3)] for y in LABELS]
MASKS = [(RNG.random((4, 6)) > 0.5).astype(np.float32) for _ in range(3)]
PROBS = [np.clip(m * 0.6 + RNG.random(m.shape) * 0.5, 0, 1) for m in MASKS]

CASES = [
    ("MeanIoU", dict(num_classes=4), LABELS, PRED_IDS),
    ("MeanIoU", dict(num_classes=4, ignore_class=255), LABELS, PRED_IDS),
    ("MeanIoU", dict(num_classes=4, sparse_y_pred=False), LABELS, SCORES),
    ("IoU", dict(num_classes=4, target_class_ids=[0, 2]), LABELS, PRED_IDS),
    ("IoU", dict(num_classes=4, target_class_ids=[3], ignore_class=255), LABELS, PRED_IDS),
    ("OneHotIoU", dict(num_classes=4, target_class_ids=[1, 3]), ONE_HOT, SCORES),
    ("OneHotMeanIoU", dict(num_classes=4), ONE_HOT, SCORES),
    ("BinaryIoU", dict(), MASKS, PROBS),
    ("BinaryIoU", dict(target_class_ids=[1], threshold=0.4), MASKS, PROBS),
]
IDS = ["mean", "mean_ignore", "mean_scores", "iou_0_2", "iou_3_ignore", "one_hot_iou", "one_hot_mean", "binary",
       "binary_fg"]


def keras_metrics():
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    return pytest.importorskip("keras").metrics


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("name,kwargs,ys,ps", CASES, ids=IDS)
def test_equals_keras_3_batch_after_batch(name, kwargs, ys, ps, weighted):
    theirs, ours = getattr(keras_metrics(), name)(**kwargs), getattr(M, name)(**kwargs)
    for i, (y, p) in enumerate(zip(ys, ps)):
        w = None
        if weighted:
            w = (WEIGHTS[i] if y.shape == WEIGHTS[i].shape else RNG.integers(0, 3, y.shape[:-1] if name.startswith(
                "OneHot") else y.shape)).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.update_state(y, p, sample_weight=w)
        ours.update_state(y, p, sample_weight=w)
        assert ours.result() == pytest.approx(float(theirs.result()), rel=1e-6, abs=1e-7), i
    ours.reset_state()
    assert ours.result() == 0.0 and not ours.total_cm.any()


def test_values_by_hand_and_errors():
    m = M.MeanIoU(num_classes=2)
    m.update_state([0, 0, 1, 1], [0, 1, 0, 1])  # confusion [[1, 1], [1, 1]]: each class 1 / 3
    assert m.result() == pytest.approx(1 / 3, rel=1e-6)
    m.update_state([0, 0], [0, 0], sample_weight=[5, 0])  # class 0: 6 / 8; class 1 stays 1 / 3
    assert m.result() == pytest.approx((6 / 8 + 1 / 3) / 2, rel=1e-6)
    never = M.IoU(num_classes=3, target_class_ids=[0, 2])
    never.update_state([0, 1], [0, 1])  # class 2 never seen nor predicted: left out of the mean
    assert never.result() == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match=r"out of range, which is \[0, 3\)"):
        M.IoU(num_classes=3, target_class_ids=[3])
    with pytest.raises(ValueError, match="num_classes must be a whole number"):
        M.MeanIoU(num_classes=0)
    with pytest.raises(ValueError, match="one weight per label"):
        M.MeanIoU(num_classes=2).update_state(np.zeros((2, 3)), np.zeros((2, 3)), sample_weight=[1, 2])
    with pytest.warns(UserWarning, match="truncated"):
        M.MeanIoU(num_classes=2).update_state([0, 1], [0, 1], sample_weight=[0.5, 1.0])
    fractional = M.MeanIoU(num_classes=2, dtype="float32")
    fractional.update_state([0, 1, 1], [0, 1, 0], sample_weight=[0.5, 0.5, 0.25])
    assert fractional.result() == pytest.approx((0.5 / 0.75 + 0.5 / 0.75) / 2, rel=1e-6)


def test_in_fit_and_configs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")[:, None]
    glassnet.set_random_seed(1)
    model = glassnet.Sequential([glassnet.Input((4,)), glassnet.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=glassnet.optimizers.Adam(0.05), loss="binary_crossentropy",
                  metrics=[M.BinaryIoU(target_class_ids=[1], name="fg_iou")])
    history = model.fit(x, y, epochs=15, verbose=0)
    assert history.history["fg_iou"][-1] > 0.8 and history.history["loss"][-1] < history.history["loss"][0]
    assert model.evaluate(x, y, verbose=0, return_dict=True)["fg_iou"] > 0.8
    for metric in (M.IoU(4, [0, 2], ignore_class=255), M.BinaryIoU([1], 0.3), M.MeanIoU(3, sparse_y_pred=False),
                   M.OneHotIoU(3, [1]), M.OneHotMeanIoU(5, ignore_class=0)):
        config = metric.get_config()
        assert type(metric).from_config(config).get_config() == config
    assert isinstance(M.get({"class_name": "MeanIoU", "config": {"num_classes": 3}}), M.MeanIoU)
    for given in ("mean_iou", "MeanIoU", M.MeanIoU):  # it needs num_classes: a message, not a TypeError
        with pytest.raises(ValueError, match=r"MeanIoU needs num_classes: pass an instance"):
            M.get(given)
    with pytest.raises(ValueError, match="MeanIoU needs num_classes"):
        model.compile(optimizer="adam", loss="mse", metrics=["mean_iou"])
        model.fit(x, y, epochs=1, verbose=0)


def test_get_builds_a_registered_metric_that_requires_only_its_name():
    """metrics.get passes the name it was given: a custom metric whose only required argument is name is built."""
    class Hits(M.Mean):
        def __init__(self, name, dtype=None):
            super().__init__(name=name, dtype=dtype)
    from glassnet.engine.registry import table
    table("metrics")["Hits"] = Hits
    try:
        assert M.get("Hits").name == "Hits"
    finally:
        del table("metrics")["Hits"]
