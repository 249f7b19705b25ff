"""TextVectorization: vocabulary building, the standardize/split/ngrams pipeline, output modes, configs, errors,
a cross-check against Keras 3 (which needs TensorFlow for this layer), and text -> ids -> Embedding training."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import glassnet
from glassnet.engine.registry import deserialize, serialize
from glassnet.layers.core import Dense, Input
from glassnet.layers.embedding import Embedding
from glassnet.layers.pooling import GlobalAveragePooling1D
from glassnet.layers.text import TextVectorization
from glassnet.models.sequential import Sequential

CORPUS = ["The cat sat on the mat.", "The dog ate my homework!", "A cat, a dog; and THE bird?",
          "the the the", "Dog days are over"]


def adapted(**kw):
    layer = TextVectorization(**kw)
    layer.adapt(CORPUS)
    return layer


# --- vocabulary -----------------------------------------------------------------------------------
def test_vocabulary_sorted_by_count_then_token_descending():
    layer = adapted()
    vocab = layer.get_vocabulary()
    assert vocab[:2] == ["", "[UNK]"]
    assert vocab[2] == "the"                       # 7 times
    assert vocab[3:6] == ["dog", "cat", "a"]        # 3, 2, 2: ties broken by token, highest first
    counts = {}
    for text in CORPUS:
        for t in text.lower().translate(str.maketrans("", "", ".!,;?")).split():
            counts[t] = counts.get(t, 0) + 1
    assert vocab[2:] == sorted(counts, key=lambda t: (counts[t], t), reverse=True)
    assert layer.vocabulary_size() == len(vocab) == 2 + len(counts)
    assert layer.get_vocabulary(include_special_tokens=False) == vocab[2:]


def test_max_tokens_keeps_most_frequent():
    layer = adapted(max_tokens=5)
    assert layer.get_vocabulary() == ["", "[UNK]", "the", "dog", "cat"]
    assert layer.vocabulary_size() == 5
    hot = adapted(max_tokens=5, output_mode="multi_hot")
    assert hot.get_vocabulary() == ["[UNK]", "the", "dog", "cat", "a"]


@pytest.mark.parametrize("standardize, split, expected", [
    ("lower_and_strip_punctuation", "whitespace", ["hello", "world", "its"]),
    ("lower", "whitespace", ["hello,", "world!", "it's"]),
    ("strip_punctuation", "whitespace", ["Hello", "World", "Its"]),
    (None, "whitespace", ["Hello,", "World!", "It's"]),
])
def test_standardize_variants(standardize, split, expected):
    layer = TextVectorization(standardize=standardize, split=split)
    layer.adapt(["Hello, World! It's"])
    assert sorted(layer.get_vocabulary()[2:]) == sorted(expected)


def test_split_character_and_none():
    chars = TextVectorization(split="character")
    chars.adapt(["abba", "cab"])
    assert chars.get_vocabulary() == ["", "[UNK]", "b", "a", "c"]
    np.testing.assert_array_equal(chars(["cab", "z"]), [[4, 3, 2], [1, 0, 0]])
    whole = TextVectorization(split=None, standardize="lower")
    whole.adapt(["New York", "new york", "Paris"])
    assert whole.get_vocabulary() == ["", "[UNK]", "new york", "paris"]
    np.testing.assert_array_equal(whole(["PARIS", "Rome", ""]), [3, 1, 0])          # Keras keeps the rank
    np.testing.assert_array_equal(whole(np.array([["PARIS"], ["Rome"]])), [[3], [1]])
    hot = TextVectorization(split=None, output_mode="multi_hot")
    hot.adapt(["a", "b", ""])
    np.testing.assert_array_equal(hot(np.array([["a"], [""], ["z"]])), [[0, 0, 1], [0, 0, 0], [1, 0, 0]])


def test_ngrams():
    layer = TextVectorization(ngrams=2)
    layer.adapt(["a b c"])
    assert set(layer.get_vocabulary()[2:]) == {"a", "b", "c", "a b", "b c"}
    ids = layer(["a b c"])[0]
    assert [layer.get_vocabulary()[i] for i in ids] == ["a", "b", "c", "a b", "b c"]
    with pytest.raises(ValueError, match="ngrams"):
        TextVectorization(ngrams=0)


# --- outputs ---------------------------------------------------------------------------------------
def test_int_mode_padding_truncation_and_oov():
    layer = adapted(output_sequence_length=4)
    v = {t: i for i, t in enumerate(layer.get_vocabulary())}
    y = layer(np.array(["the cat", "the dog ate my homework again", "zebra cat"]))
    assert y.dtype == np.int64 and y.shape == (3, 4)
    np.testing.assert_array_equal(y[0], [v["the"], v["cat"], 0, 0])
    np.testing.assert_array_equal(y[1], [v["the"], v["dog"], v["ate"], v["my"]])
    np.testing.assert_array_equal(y[2], [1, v["cat"], 0, 0])
    ragged = adapted()(["the", "the cat sat"])        # no length: pad to the longest row
    assert ragged.shape == (2, 3) and ragged[0, 1] == 0
    np.testing.assert_array_equal(layer(np.array([["the cat"]])), layer(["the cat"]))  # (N, 1) input


def test_multi_hot_count_tf_idf():
    hot = adapted(output_mode="multi_hot")
    v = {t: i for i, t in enumerate(hot.get_vocabulary())}
    y = hot(["the the cat zebra"])
    assert y.dtype == np.float32 and y.shape == (1, hot.vocabulary_size())
    expected = np.zeros(hot.vocabulary_size(), np.float32)
    expected[[v["the"], v["cat"], 0]] = 1
    np.testing.assert_array_equal(y[0], expected)
    count = adapted(output_mode="count")
    expected[v["the"]] = 2
    np.testing.assert_array_equal(count(["the the cat zebra"])[0], expected)
    padded = adapted(output_mode="count", max_tokens=40, pad_to_max_tokens=True)
    assert padded(["the"]).shape == (1, 40)
    tfidf = adapted(output_mode="tf_idf")
    df_the = sum("the" in t.lower().split() for t in CORPUS)   # 'the' occurs in 4 of 5 texts
    y = tfidf(["the the"])
    np.testing.assert_allclose(y[0, v["the"]], 2 * np.log(1 + 5 / (1 + df_the)), rtol=1e-6)


def test_no_backward_for_strings():
    layer = adapted()
    y, backward = layer.forward(["the cat"])
    assert backward(np.ones_like(y, dtype=np.float32)) is None


# --- vocabulary as an argument, configs -----------------------------------------------------------
def test_vocabulary_list_and_set_vocabulary():
    layer = TextVectorization(vocabulary=["dog", "cat"])
    assert layer.get_vocabulary() == ["", "[UNK]", "dog", "cat"]
    np.testing.assert_array_equal(layer(["cat dog bird"]), [[3, 2, 1]])
    same = TextVectorization(vocabulary=["", "[UNK]", "dog", "cat"])   # special tokens may lead
    assert same.get_vocabulary() == layer.get_vocabulary()
    with pytest.raises(ValueError, match="fixed vocabulary"):
        layer.adapt(["x"])
    fresh = TextVectorization()
    fresh.set_vocabulary(["b", "a"])
    np.testing.assert_array_equal(fresh(["a b"]), [[3, 2]])
    with pytest.raises(ValueError, match="repeats"):
        TextVectorization(vocabulary=["a", "a"])
    with pytest.raises(ValueError, match="max_tokens"):
        TextVectorization(max_tokens=3, vocabulary=["a", "b"])


@pytest.mark.parametrize("path", ["/etc/passwd", "vocab.txt"])
def test_file_path_vocabulary_refused(path, tmp_path):
    with pytest.raises(TypeError, match="file path"):
        TextVectorization(vocabulary=path)
    with pytest.raises(TypeError, match="file path"):
        TextVectorization().set_vocabulary(tmp_path / "vocab.txt")
    config = TextVectorization().get_config()
    config["vocabulary"] = path
    with pytest.raises(TypeError):
        deserialize("layers", {"class_name": "TextVectorization", "config": config}, "layer")


@pytest.mark.parametrize("kw", [dict(output_sequence_length=6), dict(output_mode="multi_hot", max_tokens=8),
                                dict(output_mode="tf_idf", ngrams=(1, 2)), dict(split="character")])
def test_config_round_trip_keeps_vocabulary(kw):
    layer = adapted(**kw)
    spec = json.loads(json.dumps(serialize(layer)))              # plain JSON, as in a .glassnet file
    for key in ("max_tokens", "standardize", "split", "ngrams", "output_mode", "output_sequence_length",
                "pad_to_max_tokens", "vocabulary", "idf_weights", "vocabulary_size"):
        assert key in spec["config"]
    twin = deserialize("layers", spec, "layer")
    assert isinstance(twin, TextVectorization)
    assert twin.get_vocabulary() == layer.get_vocabulary()
    texts = ["the cat ate a bird", "unknown words here"]
    np.testing.assert_array_equal(twin(texts), layer(texts))
    twin.adapt(["zq"])                                            # an adapted vocabulary is not a fixed one
    assert twin.get_vocabulary(include_special_tokens=False)[-1] in ("zq", "z", "q")


# --- errors ----------------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ValueError, match="adapt"):
        TextVectorization()(["text"])
    with pytest.raises(TypeError, match="expects strings"):
        adapted()(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="expects strings"):
        TextVectorization().adapt([1, 2])
    with pytest.raises(ValueError, match="max_tokens >= 2"):
        TextVectorization(max_tokens=1)
    with pytest.raises(ValueError, match="output_sequence_length"):
        TextVectorization(output_mode="count", output_sequence_length=3)
    with pytest.raises(ValueError, match="standardize"):
        TextVectorization(standardize="upper")
    with pytest.raises(ValueError, match="split"):
        TextVectorization(split="comma")
    with pytest.raises(ValueError, match="idf_weights"):
        TextVectorization(output_mode="tf_idf", vocabulary=["a"])
    with pytest.raises(ValueError, match="1-D batch"):
        adapted()(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="cannot sit inside"):
        adapted()(Input((1,)))


# --- Keras 3 cross-check ---------------------------------------------------------------------------
_KERAS_SCRIPT = textwrap.dedent("""
    import json, sys
    import keras
    corpus, probe, configs = json.loads(sys.stdin.read())
    out = []
    for kw in configs:
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
        layer = keras.layers.TextVectorization(**kw)
        layer.adapt(corpus)
        out.append({"vocab": layer.get_vocabulary(), "y": keras.ops.convert_to_numpy(layer(probe)).tolist()})
    print(json.dumps(out))
""")

KERAS_CONFIGS = [dict(), dict(max_tokens=6, output_sequence_length=5), dict(output_mode="multi_hot"),
                 dict(output_mode="count", max_tokens=7), dict(ngrams=2, output_sequence_length=8),
                 dict(split="character", standardize="lower"), dict(output_mode="tf_idf"),
                 dict(output_mode="tf_idf", max_tokens=5, pad_to_max_tokens=True), dict(ngrams=(2,)),
                 dict(split=None, output_mode="multi_hot")]


def _keras_python():
    """An interpreter with keras + jax + tensorflow (Keras's TextVectorization runs on TensorFlow ops)."""
    python = os.environ.get("GLASSNET_KERAS_PYTHON", sys.executable)
    env = dict(os.environ, KERAS_BACKEND="jax")
    probe = subprocess.run([python, "-c", "import keras, jax, tensorflow"], env=env, capture_output=True,
                           timeout=120)
    if probe.returncode != 0:
        pytest.skip("Keras 3 with jax and tensorflow is not available (TextVectorization needs TensorFlow)")
    return python, env


def test_matches_keras():
    python, env = _keras_python()
    probe = [["The cat ate the bird."], ["zebra dog"], [""], ["a  cat, THE cat; a cat"], ["the dog ate my homework!"]]
    corpus = CORPUS + ["Élan ÉLAN élan"]   # Keras lowercases ASCII letters only
    done = subprocess.run([python, "-c", _KERAS_SCRIPT], input=json.dumps([corpus, probe, KERAS_CONFIGS]),
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    for kw, ref in zip(KERAS_CONFIGS, theirs):
        layer = TextVectorization(**kw)
        layer.adapt(corpus)
        assert layer.get_vocabulary() == ref["vocab"], kw
        np.testing.assert_allclose(layer(probe), np.asarray(ref["y"]), err_msg=str(kw))


# --- end to end ------------------------------------------------------------------------------------
def test_text_to_embedding_model_trains():
    rng = np.random.default_rng(0)
    good, bad = ["great", "lovely", "excellent", "fun"], ["awful", "boring", "terrible", "bad"]
    filler = ["the", "movie", "was", "plot", "really", "and", "acting"]
    texts, labels = [], []
    for i in range(200):
        words = list(rng.choice(filler, 4)) + list(rng.choice(good if i % 2 else bad, 2))
        rng.shuffle(words)
        texts.append(" ".join(words).capitalize() + "!")
        labels.append(i % 2)
    vectorizer = TextVectorization(max_tokens=30, output_sequence_length=8)
    vectorizer.adapt(texts)
    ids = vectorizer(np.array(texts))
    assert ids.shape == (200, 8) and ids.max() < 30
    model = Sequential([Input((8,)), Embedding(30, 8), GlobalAveragePooling1D(), Dense(1, activation="sigmoid")])
    model.compile(optimizer=glassnet.optimizers.Adam(learning_rate=0.05), loss="binary_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(ids, np.array(labels, np.float32), epochs=30, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
    probs = model.predict(vectorizer(["What a lovely, fun movie", "Boring and awful"]), verbose=0)
    assert probs[0, 0] > 0.5 > probs[1, 0]
