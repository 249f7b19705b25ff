# --- data-loading prelude (glassnet) ---------------------------------------------------------------
# Run with:  glassnet run --seed 1 examples/mnist_convnet.py [--epochs N]
# Keras's "Simple MNIST convnet" example; the data is glassnet's bundled 5,000 MNIST digits
# (4,000 train / 1,000 test) instead of keras.datasets.mnist's download.
import argparse

import numpy as np
from glassnet.datasets import mnist

args = argparse.ArgumentParser()
args.add_argument("--epochs", type=int, default=30)
epochs = args.parse_args().epochs
# --- the Keras program ---------------------------------------------------------------------------------
import keras
from keras import layers

num_classes = 10
input_shape = (28, 28, 1)
(x_train, y_train), (x_test, y_test) = mnist.load_data()
x_train = x_train.astype("float32") / 255
x_test = x_test.astype("float32") / 255
x_train = np.expand_dims(x_train, -1)
x_test = np.expand_dims(x_test, -1)
y_train = keras.utils.to_categorical(y_train, num_classes)
y_test = keras.utils.to_categorical(y_test, num_classes)

model = keras.Sequential(
    [
        keras.Input(shape=input_shape),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ]
)
model.summary()

batch_size = 128
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1, verbose=2)
score = model.evaluate(x_test, y_test, verbose=0)
print("Test loss:", score[0])
print("Test accuracy:", score[1])
