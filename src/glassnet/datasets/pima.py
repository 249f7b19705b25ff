"""The Pima Indians Diabetes data set, bundled (UCI Machine Learning Repository, as redistributed by KEEL)."""
import os

import numpy as np

FEATURE_NAMES = ("pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi",
                 "diabetes_pedigree", "age")
PATH = os.path.join(os.path.dirname(__file__), "data", "pima-indians-diabetes.csv")
TRAIN_ROWS = 614


def load_data(path=None):
    """``(x_train, y_train), (x_test, y_test)``: the first 614 rows and the last 154.

    x is float32 of shape (n, 8) (raw, unscaled features), y is float32 0/1 of shape (n,).
    """
    data = np.loadtxt(path or PATH, delimiter=",", dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != 9:
        raise ValueError(f"{path or PATH} should have 9 columns (8 features and the label), got shape {data.shape}.")
    x, y = data[:, :8].astype(np.float32), data[:, 8].astype(np.float32)
    return (x[:TRAIN_ROWS], y[:TRAIN_ROWS]), (x[TRAIN_ROWS:], y[TRAIN_ROWS:])
