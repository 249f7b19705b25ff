# --- data-loading prelude (glassnet) ---------------------------------------------------------------
# Run with:  glassnet run --seed 1 examples/mnist_lstm.py [--epochs N]
# Each 28x28 digit is read as 28 time steps of 28 pixels. Data: glassnet's bundled 5,000 MNIST digits
# (4,000 train / 1,000 test).
import argparse

from glassnet.datasets import mnist

args = argparse.ArgumentParser()
args.add_argument("--epochs", type=int, default=15)
EPOCHS = args.parse_args().epochs
(x_train, y_train), (x_test, y_test) = mnist.load_data()
x_train, x_test = x_train.astype("float32") / 255, x_test.astype("float32") / 255
# --- the Keras program ---------------------------------------------------------------------------------
from keras.models import Sequential
from keras.layers import Input, LSTM, Dense

model = Sequential([
    Input(shape=(28, 28)),
    LSTM(128),
    Dense(10, activation="softmax"),
])
model.summary()
model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=64, epochs=EPOCHS, validation_data=(x_test, y_test), verbose=2)
score = model.evaluate(x_test, y_test, verbose=0)
print("Test loss:", score[0])
print("Test accuracy:", score[1])
