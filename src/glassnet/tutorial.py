"""The main job of ``make run``: train the tutorial network on the bundled Pima data, save it, plot it.

The network is the classic Keras tutorial's (8 → 10 relu → 1 sigmoid, MSE, SGD with Nesterov
momentum), with a ``Normalization`` layer adapted on the training split in front, so the saved
model takes raw features.
"""
import json
import os

from . import Sequential, set_random_seed
from .datasets import pima
from .layers import Dense, Input, Normalization
from .optimizers import SGD
from .optimizers.schedules import InverseTimeDecay


def build_model(x_train):
    norm = Normalization(name="standardize")
    norm.adapt(x_train)
    model = Sequential([Input((8,), name="features"), norm, Dense(10, activation="relu"),
                        Dense(1, activation="sigmoid")], name="pima_tutorial")
    # Keras 2's SGD(lr=0.01, decay=1e-6, momentum=0.9, nesterov=True), in Keras 3 spelling
    sgd = SGD(learning_rate=InverseTimeDecay(0.01, decay_steps=1, decay_rate=1e-6), momentum=0.9, nesterov=True)
    model.compile(loss="mse", optimizer=sgd, metrics=["accuracy"])
    return model


def plot_history(history, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed, so no learning-curve plot was written "
              "(pip install 'glassnet[plot]').")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(history[key], label=f"train {key}")
        ax.plot(history["val_" + key], label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("glassnet: the Keras tutorial network on the Pima Indians Diabetes data")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(out="runs/tutorial", epochs=100, seed=1, verbose=2):
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"The tutorial trains for epochs >= 1 (a whole number), got {epochs!r}.")
    (x_train, y_train), (x_test, y_test) = pima.load_data()
    set_random_seed(seed)
    model = build_model(x_train)
    model.metadata = {"feature_names": list(pima.FEATURE_NAMES), "dataset": "Pima Indians Diabetes (UCI, via KEEL)",
                      "output": "probability of diabetes within five years",
                      "example_instance": [float(str(v)) for v in x_test[0]]}  # float32 shortest text
    model.summary()
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=32, validation_data=(x_test, y_test),
                        verbose=verbose)
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    os.makedirs(out, exist_ok=True)
    model_path = os.path.join(out, "pima.glassnet")
    weights_path = os.path.join(out, "pima.weights.safetensors")
    model.save(model_path)
    model.save_weights(weights_path)
    # the same model as version 1 of a TensorFlow-Serving-style repository, which `glassnet serve` watches
    served_path = os.path.join(out, "models", "pima", "1", "model.glassnet")
    os.makedirs(os.path.dirname(served_path), exist_ok=True)
    model.save(served_path, include_optimizer=False)
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(history.history, f, indent=1)
    plot = plot_history(history.history, os.path.join(out, "learning_curves.png"))
    print(f"\nTest loss (MSE): {loss:.4f}   test accuracy: {acc:.4f}")
    print(f"Model (takes raw features): {model_path}")
    print(f"Weights: {weights_path}")
    print(f"Model repository for `glassnet serve`: {os.path.join(out, 'models')}")
    if plot:
        print(f"Learning curves: {plot}")
    return {"loss": loss, "accuracy": acc, "model": model_path, "repository": os.path.join(out, "models"),
            "plot": plot}
