"""AUC(multi_label=True) and label_weights, as Keras 3 computes them, batch after batch."""
import os

import numpy as np
import pytest

import glassnet
from glassnet import metrics as M

RNG = np.random.default_rng(5)
BATCHES = []
for _ in range(3):
    y = (RNG.random((16, 3)) > 0.6).astype(np.float32)
    p = np.clip(y * 0.35 + RNG.random((16, 3)) * 0.65, 0, 1).astype(np.float32)
    BATCHES.append((y, p, RNG.uniform(0.2, 2.0, 16).astype(np.float32)))

CASES = [
    dict(multi_label=True),
    dict(multi_label=True, num_labels=3),
    dict(multi_label=True, label_weights=[0.2, 1.0, 3.0]),
    dict(multi_label=True, curve="PR"),
    dict(multi_label=True, curve="PR", summation_method="majoring", label_weights=[1.0, 0.0, 2.0]),
    dict(multi_label=True, summation_method="minoring", num_thresholds=50),
    dict(multi_label=True, thresholds=[0.2, 0.4, 0.6, 0.8]),
    dict(multi_label=False, label_weights=[0.5, 1.0, 2.0]),
    dict(multi_label=False, label_weights=[0.5, 1.0, 2.0], curve="PR"),
]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kwargs", CASES, ids=[str(i) for i in range(len(CASES))])
def test_equals_keras_3(kwargs, weighted):
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    keras = pytest.importorskip("keras")
    theirs, ours = keras.metrics.AUC(**kwargs), M.AUC(**kwargs)
    for y, p, w in BATCHES:
        theirs.update_state(y, p, sample_weight=w if weighted else None)
        ours.update_state(y, p, sample_weight=w if weighted else None)
        assert ours.result() == pytest.approx(float(theirs.result()), rel=1e-5, abs=1e-6)
    ours.reset_state()
    assert ours.result() == 0.0


def test_mean_of_the_labels_own_curves_errors_and_config():
    """multi_label=True is the mean of one AUC per column: equal to separate AUCs on each column."""
    auc = M.AUC(multi_label=True)
    singles = [M.AUC() for _ in range(3)]
    for y, p, _ in BATCHES:
        auc.update_state(y, p)
        for i, single in enumerate(singles):
            single.update_state(y[:, i], p[:, i])
    assert auc.result() == pytest.approx(np.mean([s.result() for s in singles]), rel=1e-12)
    with pytest.raises(ValueError, match="needed only when `multi_label` is True"):
        M.AUC(num_labels=3)
    with pytest.raises(ValueError, match="rank 2"):
        M.AUC(multi_label=True).update_state(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="built for 3 labels"):
        auc.update_state(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="label_weights must be"):
        M.AUC(multi_label=True, label_weights=[1.0, -1.0])
    for metric in (M.AUC(multi_label=True, label_weights=[1, 2], num_labels=2), M.AUC(thresholds=[0.25, 0.75]),
                   M.AUC(curve="PR", label_weights=[0.5, 2.0])):
        config = metric.get_config()
        again = M.AUC.from_config(config)
        assert again.get_config() == config
        np.testing.assert_array_equal(again.thresholds, metric.thresholds)


def test_in_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype("float32")
    y = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0], axis=1).astype("float32")
    glassnet.set_random_seed(1)
    model = glassnet.Sequential([glassnet.Input((4,)), glassnet.layers.Dense(2, activation="sigmoid")])
    model.compile(optimizer=glassnet.optimizers.Adam(0.05), loss="binary_crossentropy",
                  metrics=[M.AUC(multi_label=True, name="auc_per_label")])
    history = model.fit(x, y, epochs=10, verbose=0)
    assert history.history["auc_per_label"][-1] > 0.95
