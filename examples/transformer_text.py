# --- data-loading prelude (glassnet) ---------------------------------------------------------------
# Run with:  glassnet run --seed 1 examples/transformer_text.py [--epochs N]
# A synthetic text task that needs word ORDER: each "sentence" of 24 tokens (vocabulary 60) contains the
# words "rain" (id 3) and "umbrella" (id 4) once each, among filler words; the label is 1 when "rain"
# comes before "umbrella". A bag of words cannot solve it; attention with position embeddings can.
import argparse

import numpy as np

args = argparse.ArgumentParser()
args.add_argument("--epochs", type=int, default=20)
args.add_argument("--samples", type=int, default=4000)
opts = args.parse_args()
EPOCHS = opts.epochs
vocab_size, maxlen = 60, 24
rng = np.random.default_rng(2024)


def make_sentences(n):
    tokens = rng.integers(5, vocab_size, size=(n, maxlen))
    first, second = (np.argsort(rng.random((n, maxlen)), axis=1)[:, :2].T)
    tokens[np.arange(n), first] = 3
    tokens[np.arange(n), second] = 4
    positions = np.tile(np.arange(maxlen), (n, 1))
    return tokens, positions, (first < second).astype("int64")


x_train, p_train, y_train = make_sentences(opts.samples)
x_val, p_val, y_val = make_sentences(1000)
# --- the Keras program (a Transformer encoder block) -------------------------------------------------
from keras import Input, Model
from keras.layers import (Add, Dense, Dropout, Embedding, GlobalAveragePooling1D, LayerNormalization,
                          MultiHeadAttention)

embed_dim, num_heads, ff_dim = 32, 2, 64
token_in = Input(shape=(maxlen,), name="tokens")
position_in = Input(shape=(maxlen,), name="positions")
x = Add()([Embedding(vocab_size, embed_dim)(token_in), Embedding(maxlen, embed_dim)(position_in)])
attn = MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)(x, x)
x = LayerNormalization(epsilon=1e-6)(Add()([x, Dropout(0.1)(attn)]))
ff = Dense(embed_dim)(Dense(ff_dim, activation="relu")(x))
x = LayerNormalization(epsilon=1e-6)(Add()([x, Dropout(0.1)(ff)]))
x = GlobalAveragePooling1D()(x)
x = Dropout(0.1)(x)
x = Dense(20, activation="relu")(x)
outputs = Dense(2, activation="softmax")(x)
model = Model(inputs=[token_in, position_in], outputs=outputs)
model.summary()
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit([x_train, p_train], y_train, batch_size=32, epochs=EPOCHS, validation_data=([x_val, p_val], y_val),
          verbose=2)
loss, accuracy = model.evaluate([x_val, p_val], y_val, verbose=0)
print("Validation accuracy:", accuracy)
