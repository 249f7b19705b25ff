"""TextVectorization: raw strings -> token ids (or bag-of-words vectors), with a vocabulary from ``adapt``.

The pipeline, per string, in Keras's order:
  1. standardize  "lower" (ASCII A-Z -> a-z, as Keras's tf.strings.lower), "strip_punctuation"
                  (drops !"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~), both, or None
  2. split        "whitespace" (str.split()), "character" (one token per code point), or None
  3. ngrams       n -> every k-gram for k = 1..n (a tuple lists the k's), joined by " "
  4. look up      int:   id 0 = padding "", id 1 = "[UNK]" (OOV), then the vocabulary
                  multi_hot / count / tf_idf: index 0 = "[UNK]", then the vocabulary;
                  y[i, j] = [token j in text i] / #token j in text i / count · idf[j]
                  ('' counts nowhere; split=None gives one id per string, keeping the input's rank)

``adapt`` counts tokens and keeps the most frequent, ties broken by the token itself, highest first
(Keras sorts with ``np.lexsort((tokens, counts))[::-1]``). idf[j] = log(1 + N / (1 + df[j])), and the
OOV column gets the mean idf. Strings have no gradient: ``forward`` returns a backward giving None.

The vocabulary travels in ``get_config()`` as a list of strings, so a saved model keeps it. A vocabulary
is never read from a file path: a config that names a file would let a model file read the disk.
"""
import string

import numpy as np

from ..engine import backend, graph
from ..engine.layer import Layer
from ..engine.registry import register

PAD, OOV = "", "[UNK]"
_STANDARDIZE = (None, "lower", "strip_punctuation", "lower_and_strip_punctuation")
_SPLIT = (None, "whitespace", "character")
_MODES = ("int", "multi_hot", "count", "tf_idf")
_PUNCT = str.maketrans("", "", string.punctuation)  # the same 32 characters as Keras's regex
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@register("layers")
class TextVectorization(Layer):
    """Turn strings into integer token ids (``output_mode="int"``) or per-text token vectors."""

    def __init__(self, max_tokens=None, standardize="lower_and_strip_punctuation", split="whitespace", ngrams=None,
                 output_mode="int", output_sequence_length=None, pad_to_max_tokens=False, vocabulary=None,
                 idf_weights=None, sparse=False, ragged=False, encoding="utf-8", vocabulary_size=None,
                 has_input_vocabulary=None, **kwargs):
        name = "TextVectorization"
        if standardize not in _STANDARDIZE:
            raise ValueError(f"{name} expects `standardize` to be one of {list(_STANDARDIZE)}, got {standardize!r}. "
                             "Custom callables are not supported (a config cannot name code).")
        if split not in _SPLIT:
            raise ValueError(f"{name} expects `split` to be one of {list(_SPLIT)}, got {split!r}.")
        if output_mode == "tf-idf":
            output_mode = "tf_idf"
        if output_mode not in _MODES:
            raise ValueError(f"{name} expects `output_mode` to be one of {list(_MODES)}, got {output_mode!r}.")
        if isinstance(ngrams, list):
            ngrams = tuple(ngrams)
        if _is_int(ngrams):
            if ngrams < 1:
                raise ValueError(f"{name} expects `ngrams` >= 1, got {ngrams}.")
            widths = tuple(range(1, int(ngrams) + 1))
        elif ngrams is None:
            widths = None
        elif isinstance(ngrams, tuple) and ngrams and all(_is_int(n) and n >= 1 for n in ngrams):
            widths = tuple(int(n) for n in ngrams)
        else:
            raise ValueError(f"{name} expects `ngrams` to be None, a positive integer or a tuple of them, "
                             f"got {ngrams!r}.")
        if widths is not None and split is None:
            raise ValueError(f"{name}: `ngrams` needs a `split` ('whitespace' or 'character'), got split=None.")
        if max_tokens is not None:
            if not _is_int(max_tokens):
                raise ValueError(f"{name} expects `max_tokens` to be None or an integer, got {max_tokens!r}.")
            floor = 2 if output_mode == "int" else 1
            if max_tokens < floor:
                raise ValueError(f"{name} with output_mode={output_mode!r} needs max_tokens >= {floor} (room for "
                                 f"{'the padding and OOV tokens' if floor == 2 else 'the OOV token'}), "
                                 f"got max_tokens={max_tokens}.")
        if output_sequence_length is not None:
            if output_mode != "int":
                raise ValueError(f"{name}: `output_sequence_length` is only valid with output_mode='int', got "
                                 f"output_mode={output_mode!r}.")
            if not _is_int(output_sequence_length) or output_sequence_length < 1:
                raise ValueError(f"{name} expects `output_sequence_length` to be None or a positive integer, got "
                                 f"{output_sequence_length!r}.")
        if pad_to_max_tokens and output_mode != "int" and max_tokens is None:
            raise ValueError(f"{name}: pad_to_max_tokens=True needs `max_tokens` to be set.")
        if idf_weights is not None and output_mode != "tf_idf":
            raise ValueError(f"{name}: `idf_weights` is only valid with output_mode='tf_idf', got "
                             f"output_mode={output_mode!r}.")
        if sparse or ragged:
            raise ValueError(f"{name}: sparse=True and ragged=True are not supported by glassnet (dense NumPy only).")
        if encoding not in ("utf-8", "utf8", "UTF-8"):
            raise ValueError(f"{name} supports encoding='utf-8' only, got {encoding!r}.")
        super().__init__(**kwargs)
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.standardize, self.split, self.ngrams, self._widths = standardize, split, ngrams, widths
        self.output_mode = output_mode
        self.output_sequence_length = None if output_sequence_length is None else int(output_sequence_length)
        self.pad_to_max_tokens = bool(pad_to_max_tokens)
        self._tokens = None       # learned / given tokens, without the special ones
        self._idf = None          # float array over the output columns (tf_idf)
        self._has_input_vocabulary = (vocabulary is not None) if has_input_vocabulary is None \
            else bool(has_input_vocabulary)
        if vocabulary is not None:
            self.set_vocabulary(vocabulary, idf_weights)
        elif output_mode == "tf_idf" and idf_weights is not None:
            raise ValueError(f"{name}: `idf_weights` was given without a `vocabulary`.")

    # --- vocabulary -----------------------------------------------------------------------------
    @property
    def _specials(self):
        return [PAD, OOV] if self.output_mode == "int" else [OOV]

    def set_vocabulary(self, vocabulary, idf_weights=None):
        """Set the vocabulary (a list of strings, special tokens optional at the front) and tf_idf weights."""
        if isinstance(vocabulary, (str, bytes, bytearray)) or hasattr(vocabulary, "__fspath__"):
            raise TypeError(f"TextVectorization '{self.name}' takes `vocabulary` as a list of strings, got "
                            f"{type(vocabulary).__name__} {str(vocabulary)[:80]!r}. glassnet never reads a "
                            "vocabulary from a file path (a model file could then read any file on disk); read the "
                            "file yourself and pass the list of lines.")
        tokens = list(np.asarray(vocabulary, dtype=object).ravel()) if isinstance(vocabulary, np.ndarray) \
            else list(vocabulary)
        bad = [t for t in tokens if not isinstance(t, str)]
        if bad:
            raise TypeError(f"TextVectorization '{self.name}' expects a vocabulary of strings, got {bad[:3]!r}.")
        if not tokens:
            raise ValueError(f"TextVectorization '{self.name}': cannot set an empty vocabulary.")
        specials = self._specials
        had_specials = tokens[:len(specials)] == specials
        if had_specials:
            tokens = tokens[len(specials):]
        repeated = sorted({t for t in tokens if tokens.count(t) > 1}) if len(set(tokens)) != len(tokens) else []
        if repeated:
            raise ValueError(f"TextVectorization '{self.name}': the vocabulary repeats {repeated[:5]}; each term "
                             "must appear once.")
        if PAD in tokens:
            raise ValueError(f"TextVectorization '{self.name}': the padding token '' may only appear first, "
                             f"as in {specials}.")
        size = len(specials) + len(tokens)
        if self.max_tokens is not None and size > self.max_tokens:
            raise ValueError(f"TextVectorization '{self.name}': the vocabulary has {size} entries (special tokens "
                             f"included) but max_tokens={self.max_tokens}.")
        if self.output_mode == "tf_idf":
            if idf_weights is None:
                raise ValueError(f"TextVectorization '{self.name}' in tf_idf mode needs `idf_weights` with the "
                                 "vocabulary (one weight per term).")
            idf = np.asarray(idf_weights, dtype=np.float64)
            want = len(tokens) + (len(specials) if had_specials else 0)
            if idf.ndim != 1 or len(idf) != want:
                raise ValueError(f"TextVectorization '{self.name}': `idf_weights` must be 1-D with one weight per "
                                 f"vocabulary entry ({want}), got shape {idf.shape}.")
            if not had_specials:  # Keras gives the OOV column the mean of the weights
                idf = np.concatenate([[idf.mean()] if len(idf) else [0.0], idf])
            self._idf = idf
        elif idf_weights is not None:
            raise ValueError(f"TextVectorization '{self.name}': `idf_weights` is only valid with "
                             "output_mode='tf_idf'.")
        self._tokens = tokens
        self._index = {t: i + len(specials) for i, t in enumerate(tokens)}

    def get_vocabulary(self, include_special_tokens=True):
        tokens = list(self._tokens or [])
        return (self._specials + tokens) if include_special_tokens else tokens

    def vocabulary_size(self):
        return len(self._specials) + len(self._tokens or [])

    def adapt(self, data, batch_size=None, steps=None):
        """Build the vocabulary from ``data`` (strings): most frequent tokens first, up to ``max_tokens``."""
        if self._has_input_vocabulary:
            raise ValueError(f"Cannot adapt TextVectorization '{self.name}': it was given a fixed vocabulary "
                             "(the `vocabulary` argument).")
        docs = self._tokenize(self._strings(data, "adapt"))
        counts, doc_counts = {}, {}
        for doc in docs:
            for t in doc:
                counts[t] = counts.get(t, 0) + 1
            for t in set(doc):
                doc_counts[t] = doc_counts.get(t, 0) + 1
        for special in (PAD, OOV):
            counts.pop(special, None)
        ranked = sorted(counts, key=lambda t: (counts[t], t), reverse=True)
        if self.max_tokens is not None:
            ranked = ranked[:self.max_tokens - len(self._specials)]
        self._tokens = ranked
        self._index = {t: i + len(self._specials) for i, t in enumerate(ranked)}
        if self.output_mode == "tf_idf":
            n = len(docs)
            idf = np.log(1 + n / (1 + np.array([doc_counts[t] for t in ranked], dtype=np.float64)))
            self._idf = np.concatenate([[idf.mean() if len(idf) else 0.0], idf])

    # --- text processing ------------------------------------------------------------------------
    def _strings(self, data, where):
        """``data`` as a flat list of Python strings (accepts (N,) or (N, 1))."""
        if isinstance(data, str):
            data = [data]
        arr = np.asarray(data, dtype=object) if isinstance(data, (list, tuple)) else np.asarray(data)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise ValueError(f"TextVectorization '{self.name}'.{where} expects a 1-D batch of strings, shape (N,) "
                             f"or (N, 1), got shape {arr.shape}.")
        out = []
        for v in arr.tolist():
            if isinstance(v, bytes):
                v = v.decode("utf-8")
            if not isinstance(v, str):
                raise TypeError(f"TextVectorization '{self.name}'.{where} expects strings, got "
                                f"{type(v).__name__} {v!r} (array dtype {arr.dtype}). Pass raw text, e.g. "
                                "np.array(['a sentence', ...]).")
            out.append(v)
        return out

    def _tokenize(self, texts):
        docs = []
        for s in texts:
            if self.standardize in ("lower", "lower_and_strip_punctuation"):
                s = s.translate(_ASCII_LOWER)
            if self.standardize in ("strip_punctuation", "lower_and_strip_punctuation"):
                s = s.translate(_PUNCT)
            toks = s.split() if self.split == "whitespace" else list(s) if self.split == "character" else [s]
            if self._widths is not None:
                toks = [" ".join(toks[i:i + k]) for k in self._widths for i in range(len(toks) - k + 1)]
            docs.append(toks)
        return docs

    # --- computing ------------------------------------------------------------------------------
    def _depth(self):
        return self.max_tokens if (self.pad_to_max_tokens and self.max_tokens) else self.vocabulary_size()

    def compute_output_shape(self, input_shape):
        if self.output_mode == "int":
            if self.split is None:
                return tuple(input_shape)
            return (input_shape[0], self.output_sequence_length)
        return (input_shape[0], self._depth() if self._tokens is not None else None)

    def call(self, x, training=False):
        if self._tokens is None:
            raise ValueError(f"TextVectorization '{self.name}' has no vocabulary yet: call layer.adapt(texts) "
                             "first, or pass vocabulary=[...].")
        docs = self._tokenize(self._strings(x, "call"))
        if self.output_mode == "int":  # '' is the padding token (id 0); unknown tokens are id 1
            ids = [[self._index.get(t, 0 if t == PAD else 1) for t in d] for d in docs]
            if self.split is None:  # one id per string; Keras keeps the input's rank, (N,) or (N, 1)
                y = np.array([r[0] for r in ids], dtype=np.int64)
                return y if np.ndim(x) == 1 or isinstance(x, str) else y[:, None]
            length = self.output_sequence_length or max([len(r) for r in ids] + [0])
            y = np.zeros((len(ids), length), dtype=np.int64)
            for i, row in enumerate(ids):
                row = row[:length]
                y[i, :len(row)] = row
            return y
        ids = [[self._index.get(t, 0) for t in d if t != PAD] for d in docs]  # '' is a mask: it counts nowhere
        y = np.zeros((len(ids), self._depth()), dtype=backend.floatx())
        for i, row in enumerate(ids):
            np.add.at(y[i], np.asarray(row, dtype=np.int64), 1)
        if self.output_mode == "multi_hot":
            y = np.minimum(y, 1)
        elif self.output_mode == "tf_idf":
            idf = np.zeros(y.shape[1])
            idf[:min(len(self._idf), y.shape[1])] = self._idf[:y.shape[1]]
            y = (y * idf).astype(backend.floatx())
        return y

    def forward(self, x, training=False):
        """Strings have no gradient: backward returns None."""
        return self.call(x, training), lambda dy: None

    def __call__(self, x, training=False):
        """Apply to raw strings. No float casting (Layer.__call__ would), and no symbolic use in a model:
        glassnet models cast inputs to floats, so vectorize the text first and feed the ids to the model."""
        if graph.is_symbolic(x):
            raise TypeError(f"TextVectorization '{self.name}' cannot sit inside a glassnet model (models cast their "
                            "inputs to floats). Apply it to the raw strings first -- ids = vectorizer(texts) -- and "
                            "start the model with Embedding (int mode) or Dense (multi_hot/count/tf_idf).")
        self.built = True
        return self.call(x, training=training)

    # --- configuration --------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        ngrams = list(self.ngrams) if isinstance(self.ngrams, tuple) else self.ngrams
        idf = None
        if self.output_mode == "tf_idf" and self._idf is not None:
            idf = [float(v) for v in self._idf[:self.vocabulary_size()]]
        config.update(max_tokens=self.max_tokens, standardize=self.standardize, split=self.split, ngrams=ngrams,
                      output_mode=self.output_mode, output_sequence_length=self.output_sequence_length,
                      pad_to_max_tokens=self.pad_to_max_tokens, sparse=False, ragged=False,
                      vocabulary=None if self._tokens is None else self.get_vocabulary(),
                      idf_weights=idf, encoding="utf-8",
                      vocabulary_size=None if self._tokens is None else self.vocabulary_size(),
                      has_input_vocabulary=self._has_input_vocabulary)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("vocabulary"), str):
            raise TypeError("TextVectorization config names a vocabulary file "
                            f"{config['vocabulary'][:80]!r}; glassnet only loads vocabularies stored in the config "
                            "as a list of strings, never from a path.")
        return cls(**config)
