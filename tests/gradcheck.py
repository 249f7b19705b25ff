"""Finite-difference helpers shared by the gradient tests (central differences, float64)."""
import numpy as np

H = 1e-6  # central-difference step
TOL = 1e-6  # the relative error every analytic gradient must beat


def rel_error(analytic, numeric):
    """max|a − n| / max(1e-8, max|a| + max|n|)"""
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    return float(np.max(np.abs(a - n)) / max(1e-8, np.max(np.abs(a)) + np.max(np.abs(n))))


def numeric_grad(f, x, h=H):
    """Central differences of the scalar f() with respect to the array x, perturbed in place."""
    g = np.zeros(x.shape, np.float64)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        x[idx] = old + h
        fp = f()
        x[idx] = old - h
        fm = f()
        x[idx] = old
        g[idx] = (fp - fm) / (2 * h)
    return g
