"""F1Score / FBetaScore and R2Score: hand-computed cases, and real Keras 3 on the same batches."""
import os

import numpy as np
import pytest

import glassnet
from glassnet.metrics import F1Score, FBetaScore, R2Score


def test_f1_by_hand():
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], np.float64)
    p = np.array([[.7, .2, .1], [.6, .3, .1], [.1, .2, .7], [.2, .5, .3]])  # argmax: 0, 0, 2, 1
    # class 0: TP 1 FP 1 FN 1 -> P = R = 1/2; class 1: TP 0 FP 1 FN 1 -> 0; class 2: TP 1 -> 1
    per_class = F1Score()(y, p)
    np.testing.assert_allclose(per_class, [0.5, 0.0, 1.0], atol=1e-6)
    assert F1Score(average="macro")(y, p) == pytest.approx(0.5, abs=1e-6)
    assert F1Score(average="micro")(y, p) == pytest.approx(0.5, abs=1e-6)  # TP 2, FP 2, FN 2
    assert F1Score(average="weighted")(y, p) == pytest.approx((2 * 0.5 + 0 + 1) / 4, abs=1e-6)
    assert FBetaScore(beta=2.0, average="micro", threshold=0.5)(y, p) == pytest.approx(
        5 * (2 / 3) * (2 / 4) / (4 * (2 / 3) + 2 / 4), abs=1e-6)  # p > 0.5: 3 predicted, 2 right; 4 true


def test_r2_by_hand():
    y = np.array([[1.0], [2.0], [3.0], [4.0]])
    p = np.array([[1.5], [2.0], [2.5], [4.0]])
    assert R2Score()(y, p) == pytest.approx(1 - 0.5 / 5.0)
    metric = R2Score(num_regressors=1)
    assert metric(y, p) == pytest.approx(1 - (0.5 / 5.0) * 3 / 2)
    assert R2Score()(np.ones((3, 1)), np.zeros((3, 1))) == 0.0  # y never varies: 0, not -inf


def test_compile_by_name_and_config_round_trip():
    model = glassnet.Sequential([glassnet.Input((3,)), glassnet.layers.Dense(3, activation="softmax")])
    model.compile(loss="categorical_crossentropy", metrics=[F1Score(average="macro"), "r2_score"])
    y = np.eye(3)[[0, 1, 2, 1]]
    logs = model.evaluate(np.eye(3)[[0, 1, 2, 1]].astype("float32"), y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "f1_score", "r2_score"}
    config = FBetaScore(average="weighted", beta=0.5, threshold=0.3).get_config()
    assert FBetaScore.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="average must be"):
        F1Score(average="samples")
    with pytest.raises(ValueError, match="2D|one shape"):
        F1Score()(np.ones(3), np.ones(3))


@pytest.mark.parametrize("average", [None, "micro", "macro", "weighted"])
@pytest.mark.parametrize("threshold", [None, 0.5])
def test_fbeta_equals_keras_3(average, threshold):
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    y1, y2 = np.eye(4)[rng.integers(0, 4, 30)], (rng.random((30, 4)) > 0.5).astype(float)
    p, w = rng.random((30, 4)), rng.random(30)
    for ours, theirs in ((F1Score(average=average, threshold=threshold),
                          keras.metrics.F1Score(average=average, threshold=threshold)),
                         (FBetaScore(average=average, beta=2.0, threshold=threshold),
                          keras.metrics.FBetaScore(average=average, beta=2.0, threshold=threshold))):
        for args in ((y1, p), (y2, p, w)):
            ours.update_state(*args)
            theirs.update_state(*args)
        np.testing.assert_allclose(ours.result(), np.asarray(theirs.result()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aggregation", ["uniform_average", "variance_weighted_average", None])
@pytest.mark.parametrize("regressors", [0, 2])
def test_r2_equals_keras_3(aggregation, regressors):
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(1)
    y = rng.normal(size=(20, 3))
    p = y + rng.normal(size=(20, 3)) * 0.5
    ours = R2Score(class_aggregation=aggregation, num_regressors=regressors)
    theirs = keras.metrics.R2Score(class_aggregation=aggregation, num_regressors=regressors)
    for args in ((y, p), (y[:5], p[:5], rng.random(5))):
        ours.update_state(*args)
        theirs.update_state(*args)
    np.testing.assert_allclose(ours.result(), np.asarray(theirs.result()), rtol=1e-5, atol=1e-6)


def test_a_per_class_metric_in_fit_logs_an_array_and_the_bar_shows_its_mean(capsys):
    """F1Score(average=None) gives one value per class: History keeps the array and the progress bar prints its
    mean, as Keras 3 does (float() of the array crashed fit)."""
    model = glassnet.Sequential([glassnet.Input((3,)), glassnet.layers.Dense(3, activation="softmax",
                                                                            kernel_initializer="identity")])
    model.compile(loss="categorical_crossentropy", metrics=["f1_score"])
    x = np.eye(3)[[0, 1, 2, 1]].astype("float32")
    history = model.fit(x, x, epochs=1, verbose=2)
    scores = history.history["f1_score"][0]
    assert scores.shape == (3,) and np.allclose(scores, 1.0, atol=1e-6)  # identity weights: every row right
    assert "f1_score: 1.0000" in capsys.readouterr().out
