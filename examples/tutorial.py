# --- data-loading prelude (glassnet) ---------------------------------------------------------------
# Run with:  glassnet run examples/tutorial.py               (raw features, as in the original tutorial)
#            glassnet run examples/tutorial.py --standardize (features standardised on the training split)
import sys

from glassnet.datasets import pima

(x_train, y_train), (x_test, y_test) = pima.load_data()
if "--standardize" in sys.argv:
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
# --- the tutorial, character for character ---------------------------------------------------------
from keras.models import Sequential
from keras.layers import Dense
from keras.optimizers import SGD

model = Sequential()
model.add(Dense(10, input_dim=8, activation='relu'))
model.add(Dense(1, activation='sigmoid'))

sgd = SGD(lr=0.01, decay=1e-6, momentum=0.9, nesterov=True)
model.compile(loss='mse', optimizer=sgd, metrics=['accuracy'])

model.fit(x_train, y_train, epochs=100, batch_size=32, validation_data=(x_test, y_test))
