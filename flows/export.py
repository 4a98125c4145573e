"""Export a run's student to ONNX, checked against scikit-learn before anything is written.

Supported: multi-class students with ``student.features: tfidf`` (TF-IDF word 1-2-grams and
``char_wb`` character 2-5-grams, logistic regression). skl2onnx converts the logistic regression
and the feature union; it cannot convert a ``char_wb`` vectorizer, and its word converter differs
from scikit-learn in three ways (``sublinear_tf`` as log(1 + tf) instead of 1 + log(tf), an ASCII
token pattern that keeps one-letter tokens, lower-casing through an OS locale, ``en_US.UTF-8``,
without which onnxruntime refuses the model). Both vectorizers are therefore converted here, the
way scikit-learn computes them, from one character per cell (``Tokenizer`` with ``(?s).``):

- words: each character lower-cased through a table (below); any other letter, digit or underscore
  (RE2 ``[\\pL\\pN_]``, Python's ``\\w``) becomes one letter outside the vocabulary, anything
  else a space; the characters are joined again (log2 rounds of pairwise ``StringConcat``), and the
  tokens are the runs of two characters or more, as ``\\b\\w\\w+\\b`` finds them;
- ``char_wb``: " " + text + " ", whitespace (Python's ``str.isspace``) as a space, characters
  lower-cased through the table (others become a marker that matches nothing); the n-grams are
  counted over that stream. An n-gram of a space-padded word has spaces only at its ends, so the
  stream's n-grams are exactly the padded words' n-grams plus ones with a space inside, which no
  vocabulary holds;
- then counts, 1 + log(count), times idf, L2 norm, as ``TfidfTransformer`` does.

The table holds the vocabulary's characters and every character ``str.lower`` turns into one, so
the graph needs no locale. Two context rules of ``str.lower`` are not reproduced: Turkish capital
dotted I (Python: two characters) and a Greek capital sigma ending a word (Python: final sigma);
nor are characters newer than the Unicode tables of the Python that trained the model.

The graph's output ``probabilities`` is calibrated like ``Student.predict_proba``: the run's
temperature applied, one column per label (zeros for a label the student never saw); ``label``
is the index of the most probable label. The labels, temperature, abstain threshold and the
SHA-256 of the skops file are in the model's metadata (``OnnxStudent`` reads them).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from labelloop.flows.io import atomic_path
from labelloop.programs.digest import file_sha256
from labelloop.programs.errors import ConfigError

log = logging.getLogger("labelloop.export")

SUPPORTED = "a multi-class student with student.features: tfidf (TF-IDF word and character n-grams + logistic regression)"
INPUT = "text"  # the graph's input: a string tensor of shape [None, 1]
OPSET = {"": 20, "ai.onnx.ml": 3}  # StringConcat needs opset 20 (onnxruntime >= 1.16)
WORD_PATTERN = "(?u)\\b\\w\\w+\\b"  # scikit-learn's default token_pattern
RE2_WORD_CHARACTER = "[\\pL\\pN_]"  # Python's \\w in RE2: a letter, a digit or an underscore
PAD = "\x00\x00"  # the padding of split characters, and what an unknown one becomes: never one character


def _require_onnx():
    try:
        import onnx
        import onnxruntime
        import skl2onnx
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs skl2onnx and onnxruntime ({exc.name} is missing): "
                          "pip install 'labelloop[onnx]'") from None
    return onnx, onnxruntime, skl2onnx


# --- what can be exported -------------------------------------------------------------------------


def check_exportable(student) -> None:
    """Raise ConfigError unless ``student`` (a ``Student``) is one this module converts exactly."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    _check_run(student.task.name, student.info.get("features"))
    pipe = student.pipeline
    steps = dict(pipe.steps) if isinstance(pipe, Pipeline) else {}
    union, clf = steps.get("features"), steps.get("clf")
    if not isinstance(union, FeatureUnion) or not isinstance(clf, LogisticRegression) or len(steps) != 2:
        raise ConfigError(f"ONNX export supports {SUPPORTED}; the model file holds {pipe!r:.200}")
    if union.transformer_weights:
        raise ConfigError("ONNX export: a feature union with transformer_weights is not supported")
    for name, vec in union.transformer_list:
        if not isinstance(vec, TfidfVectorizer):
            raise ConfigError(f"ONNX export supports {SUPPORTED}; feature {name!r} is {type(vec).__name__}")
        problems = [f"{attr}={getattr(vec, attr)!r}" for attr in ("preprocessor", "tokenizer", "strip_accents", "stop_words")
                    if getattr(vec, attr) is not None]
        if vec.analyzer not in ("word", "char_wb"):
            problems.append(f"analyzer={vec.analyzer!r}")
        if vec.analyzer == "word" and vec.token_pattern != WORD_PATTERN:
            problems.append(f"token_pattern={vec.token_pattern!r}")
        if vec.analyzer == "char_wb" and vec.ngram_range[0] < 2:  # the padding spaces, counted as 1-grams
            problems.append(f"analyzer='char_wb' with ngram_range={vec.ngram_range!r}")
        if vec.binary or vec.norm not in ("l2", None):
            problems.append(f"binary={vec.binary!r}, norm={vec.norm!r}")
        if problems:
            raise ConfigError(f"ONNX export: feature {name!r} uses {', '.join(problems)}, which this export does not "
                              "convert (supported: the word and char_wb TF-IDF vectorizers make_student builds)")


# --- the vectorizer subgraph ----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _uppercase_forms() -> dict[str, tuple[str, ...]]:
    """Each character that ``str.lower`` produces from other characters -> those characters."""
    forms = defaultdict(list)
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        low = char.lower()
        if low != char:
            forms[low].append(char)
    return {low: tuple(chars) for low, chars in forms.items()}


def _case_table(chars: set[str], lowercase: bool) -> tuple[list[str], list[str]]:
    """Keys and values of a character lookup: every character that (lower-cased) is in ``chars``."""
    keys = sorted(chars)
    if lowercase:
        forms = _uppercase_forms()
        keys = sorted({k for c in chars for k in (c, *forms.get(c, ()))})
        return keys, [k.lower() for k in keys]
    return keys, list(keys)


@functools.lru_cache(maxsize=1)
def _whitespace_class() -> str:
    """An RE2 class of the characters Python's ``str.split()`` splits on."""
    spaces = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and chr(c).isspace()]
    return "".join(f"\\x{{{ord(c):x}}}" for c in spaces)


class _Graph:
    """Adds nodes and constants to a skl2onnx container under names unique in the model."""

    def __init__(self, scope, container):
        self.scope, self.container = scope, container

    def name(self, hint: str) -> str:
        return self.scope.get_unique_variable_name(hint)

    def const(self, hint: str, value) -> str:
        from onnx import TensorProto

        value = np.asarray(value)
        name = self.name(hint)
        if value.dtype.kind in "OUS":
            self.container.add_initializer(name, TensorProto.STRING, list(value.shape),
                                           [str(v).encode("utf-8") for v in value.ravel()])
        else:
            kind = {"f": TensorProto.FLOAT, "i": TensorProto.INT64, "b": TensorProto.BOOL}[value.dtype.kind]
            value = value.astype({"f": np.float32, "i": np.int64, "b": bool}[value.dtype.kind])
            self.container.add_initializer(name, kind, list(value.shape), value.ravel().tolist())
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, *, outputs: int = 1, domain: str = "",
           version: int | None = None, **attrs):
        names = [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.container.add_node(op_type, inputs, names, op_domain=domain, op_version=version,
                                name=self.scope.get_unique_operator_name(op_type), **attrs)
        return names[0] if outputs == 1 else names


def _tokenize(g: _Graph, text: str, regex: str, pad: str, hint: str) -> str:
    """[N] or [N, W] strings -> [N, T] or [N, W, T]: the regex's matches, padded with ``pad``."""
    return g.op("Tokenizer", [text], hint, domain="com.microsoft", version=1, tokenexp=regex, pad_value=pad, mark=0,
                mincharnum=1)


def _lookup(g: _Graph, tokens: str, keys: list[str], values: list[str], default: str, hint: str) -> str:
    return g.op("LabelEncoder", [tokens], hint, domain="ai.onnx.ml", version=2, keys_strings=keys, values_strings=values,
                default_string=default)


def _join_columns(g: _Graph, cells: str) -> str:
    """[N, C] strings -> [N]: each row's strings concatenated, in log2(C) rounds of pairwise StringConcat."""
    from onnx import TensorProto
    from onnx import helper as oh

    def const(name, value, kind=TensorProto.INT64):
        return oh.make_node("Constant", [], [name], value=oh.make_tensor(name, kind, [len(value)] if isinstance(value, list)
                                                                          else [], value))

    body = oh.make_graph(
        [const("jn_one", [1]), const("jn_two", [2]), const("jn_zero", [0]), const("jn_no", [False], TensorProto.BOOL),
         const("jn_empty", [b""], TensorProto.STRING), const("jn_scalar", [], TensorProto.INT64),
         oh.make_node("Shape", ["jn_in"], ["jn_shape"]),
         oh.make_node("Gather", ["jn_shape", "jn_one"], ["jn_width"]),  # [1]
         oh.make_node("Slice", ["jn_in", "jn_zero", "jn_one", "jn_one"], ["jn_first"]),
         oh.make_node("Where", ["jn_no", "jn_first", "jn_empty"], ["jn_blank"]),  # [N, 1] of ""
         oh.make_node("Concat", ["jn_in", "jn_blank"], ["jn_padded"], axis=1),  # [N, width + 1]
         oh.make_node("Add", ["jn_width", "jn_one"], ["jn_width1"]),
         oh.make_node("Div", ["jn_width1", "jn_two"], ["jn_half"]),  # ceil(width / 2)
         oh.make_node("Mul", ["jn_half", "jn_two"], ["jn_end"]),
         oh.make_node("Slice", ["jn_padded", "jn_zero", "jn_end", "jn_one", "jn_two"], ["jn_even"]),
         oh.make_node("Slice", ["jn_padded", "jn_one", "jn_end", "jn_one", "jn_two"], ["jn_odd"]),
         oh.make_node("StringConcat", ["jn_even", "jn_odd"], ["jn_out"]),  # [N, half]
         oh.make_node("Greater", ["jn_half", "jn_one"], ["jn_more"]),
         oh.make_node("Reshape", ["jn_more", "jn_scalar"], ["jn_cond_out"])],
        "join_columns",
        [oh.make_tensor_value_info("jn_round", TensorProto.INT64, []),
         oh.make_tensor_value_info("jn_cond_in", TensorProto.BOOL, []),
         oh.make_tensor_value_info("jn_in", TensorProto.STRING, None)],
        [oh.make_tensor_value_info("jn_cond_out", TensorProto.BOOL, []),
         oh.make_tensor_value_info("jn_out", TensorProto.STRING, None)])
    width = g.op("Gather", [g.op("Shape", [cells], "shape"), g.const("axis1", np.array(1))], "width")
    more = g.op("Greater", [width, g.const("one", np.array(1))], "more")
    # version 20: the model must import opset 20 for the StringConcat in the body
    joined = g.op("Loop", [g.const("rounds", np.array(64)), more, cells], "joined", version=20, body=body)
    return g.op("Reshape", [joined, g.const("flat", np.array([-1]))], "joined_text")


def _ngram_pool(vec) -> tuple[list[str], list[int], list[int]]:
    """The ONNX TfIdfVectorizer attributes for a vocabulary: pool_strings, ngram_counts, ngram_indexes."""
    split = (lambda term: term.split(" ")) if vec.analyzer == "word" else list
    by_n = defaultdict(list)
    for term, column in vec.vocabulary_.items():
        tokens = split(term)
        by_n[len(tokens)].append((tokens, column))
    if not by_n or max(by_n) > vec.ngram_range[1]:
        raise ConfigError(f"ONNX export: vocabulary terms of {sorted(by_n)} tokens, outside ngram_range {vec.ngram_range}")
    pool, counts, indexes = [], [], []
    for n in range(1, max(by_n) + 1):
        counts.append(len(pool))
        for tokens, column in sorted(by_n.get(n, [])):
            pool.extend(tokens)
            indexes.append(int(column))
    return pool, counts, indexes


def _vectorizer_graph(g: _Graph, text: str, vec) -> str:
    """[N, 1] strings -> [N, V] float TF-IDF features, as ``vec.transform`` computes them."""
    pool, counts, indexes = _ngram_pool(vec)
    chars = {c for token in pool for c in token}  # every character of the vocabulary
    keys, values = _case_table(chars, vec.lowercase)
    space = g.const("space", np.array(" ", dtype=object))
    flat = g.op("Reshape", [text, g.const("flat", np.array([-1]))], "texts")
    # " " + text (+ " "): every row has a character, and a text's first (and last) word a space beside it
    flat = g.op("StringConcat", [space, flat], "texts", version=20)
    if vec.analyzer == "word":
        # a letter outside the vocabulary (and with no case): what every other letter or digit becomes
        other = next(c for c in map(chr, range(0x4E00, 0xA000)) if c not in chars and c.lower() not in chars)
        cells = _tokenize(g, flat, "(?s).", PAD, "characters")  # [N, C]
        word = g.op("RegexFullMatch", [cells], "is_word", version=20, pattern=RE2_WORD_CHARACTER)
        lowered = _lookup(g, cells, keys, values, other, "lowered")
        # [N]: the text lower-cased, with a space for every character that is no part of a word
        normal = _join_columns(g, g.op("Where", [word, lowered, space], "normalized"))
        # led by a word that matches nothing, so that no batch is without tokens (for which onnxruntime's
        # Tokenizer gives a shape TfIdfVectorizer cannot take)
        normal = g.op("StringConcat", [g.const("sentinel", np.array(other * 2 + " ", dtype=object)), normal], "normal",
                      version=20)
        grams = _tokenize(g, normal, "[^ ][^ ]+", " ", "words")  # [N, T]: the tokens of two characters or more
    else:
        flat = g.op("StringConcat", [flat, space], "texts", version=20)
        cells = _tokenize(g, flat, "(?s).", PAD, "characters")  # [N, C]
        blank = g.op("RegexFullMatch", [cells], "is_space", version=20, pattern=f"[{_whitespace_class()}]")
        lowered = _lookup(g, cells, keys, values, PAD, "lowered")  # a character outside the vocabulary: PAD
        grams = g.op("Where", [blank, space, lowered], "normalized")  # every kind of whitespace as a space
    # the shortest terms may be shorter than ngram_range's minimum: char_wb keeps a padded word shorter than it whole
    lengths = [n for n in range(len(counts)) if (counts + [len(pool)])[n + 1] > counts[n]]
    tf = g.op("TfIdfVectorizer", [grams], "tf", version=9, mode="TF", min_gram_length=min(lengths) + 1,
              max_gram_length=len(counts), max_skip_count=0, pool_strings=pool, ngram_counts=counts,
              ngram_indexes=indexes)
    x = tf
    zero = g.const("zero", np.array(0.0, dtype=np.float32))
    if vec.sublinear_tf:  # 1 + log(tf) where tf > 0
        logged = g.op("Add", [g.op("Log", [tf], "log_tf"), g.const("one", np.array(1.0, dtype=np.float32))], "log_tf1")
        x = g.op("Where", [g.op("Greater", [tf, zero], "nonzero"), logged, zero], "sublinear")
    if vec.use_idf:
        x = g.op("Mul", [x, g.const("idf", vec.idf_.astype(np.float32))], "tfidf")
    if vec.norm == "l2":
        norm = g.op("Sqrt", [g.op("ReduceSumSquare", [x, g.const("axis1", np.array([1]))], "sumsq", keepdims=1)], "norm")
        one = g.const("one", np.array(1.0, dtype=np.float32))
        norm = g.op("Where", [g.op("Equal", [norm, zero], "empty_row"), one, norm], "norm_safe")
        x = g.op("Div", [x, norm], "l2")
    return x


class _Vectorizer:
    """A fitted TfidfVectorizer, under a type of its own so that only this export converts it this way."""

    def __init__(self, vectorizer):
        self.vectorizer = vectorizer


def _shape(operator) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([n, len(operator.raw_operator.vectorizer.vocabulary_)])


def _convert(scope, operator, container) -> None:
    g = _Graph(scope, container)
    out = _vectorizer_graph(g, operator.inputs[0].full_name, operator.raw_operator.vectorizer)
    container.add_node("Identity", [out], [operator.outputs[0].full_name], name=scope.get_unique_operator_name("Identity"))


@functools.lru_cache(maxsize=1)
def _register() -> None:
    from skl2onnx import update_registered_converter

    update_registered_converter(_Vectorizer, "LabelloopTfidfVectorizer", _shape, _convert)


# --- the whole model ------------------------------------------------------------------------------


def to_onnx(student):
    """The ONNX ModelProto of a ``Student`` (see the module docstring); its metadata holds labels and calibration."""
    onnx, _, _ = _require_onnx()
    from onnx import TensorProto
    from onnx import helper as oh
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.pipeline import FeatureUnion, Pipeline

    check_exportable(student)
    _register()
    union, clf = student.pipeline.named_steps["features"], student.pipeline.named_steps["clf"]
    pipe = Pipeline([("features", FeatureUnion([(name, _Vectorizer(vec)) for name, vec in union.transformer_list])),
                     ("clf", clf)])
    model = convert_sklearn(pipe, "labelloop_student", initial_types=[(INPUT, StringTensorType([None, 1]))],
                            options={id(clf): {"zipmap": False}}, target_opset=OPSET)
    # calibrate and widen to every label: softmax(log p / T), then a column per label
    graph, labels = model.graph, student.labels
    raw = {o.name: f"lp_raw_{o.name}" for o in graph.output}  # skl2onnx's 'label' and 'probabilities'
    for node in graph.node:
        node.input[:] = [raw.get(n, n) for n in node.input]
        node.output[:] = [raw.get(n, n) for n in node.output]
    temperature = float(student.calibration.get("temperature", 1.0))
    columns = np.zeros((len(clf.classes_), len(labels)), dtype=np.float32)
    columns[np.arange(len(clf.classes_)), np.asarray(clf.classes_, dtype=int)] = 1.0
    consts = {"lp_tiny": np.array(1e-12, dtype=np.float32), "lp_temperature": np.array(temperature, dtype=np.float32),
              "lp_columns": columns, "lp_flat": np.array([-1], dtype=np.int64)}
    graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in consts.items())
    graph.node.extend([
        oh.make_node("Max", ["lp_raw_probabilities", "lp_tiny"], ["lp_clipped"]),
        oh.make_node("Log", ["lp_clipped"], ["lp_log"]),
        oh.make_node("Div", ["lp_log", "lp_temperature"], ["lp_scaled"]),
        oh.make_node("Softmax", ["lp_scaled"], ["lp_calibrated"], axis=1),
        oh.make_node("MatMul", ["lp_calibrated", "lp_columns"], ["probabilities"]),
        oh.make_node("ArgMax", ["probabilities"], ["lp_label"], axis=1, keepdims=1),
        oh.make_node("Reshape", ["lp_label", "lp_flat"], ["label"]),
    ])
    del graph.output[:]
    graph.output.extend([oh.make_tensor_value_info("label", TensorProto.INT64, [None]),
                         oh.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(labels)])])
    model.doc_string = ("labelloop student: input 'text' [N, 1] strings; outputs 'probabilities' [N, labels] "
                        "(calibrated: the run's temperature applied) and 'label' (index into the labels in metadata)")
    info = student.info
    meta = {"labels": json.dumps(labels), "task": "multiclass", "temperature": repr(temperature),
            "threshold": repr(float(student.threshold)), "model_sha256": info.get("model_sha256") or file_sha256(student.path),
            "features": "tfidf", "name": str(info.get("name") or ""), "labelloop_version": _version()}
    oh.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("labelloop")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


# --- predicting with the exported model -----------------------------------------------------------


class OnnxStudent:
    """An exported student run by onnxruntime: ``predict_proba`` and ``predict`` as ``Student`` has them."""

    def __init__(self, path: Path | str, *, threads: int | None = None):
        _, ort, _ = _require_onnx()
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"ONNX model {self.path} does not exist")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # onnxruntime warns about shapes it cannot know before a batch arrives
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ConfigError(f"{self.path} is not an ONNX model onnxruntime can run: {exc}") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if "labels" not in self.metadata:
            raise ConfigError(f"{self.path} has no 'labels' in its metadata: not a labelloop export")
        self.labels = json.loads(self.metadata["labels"])
        self.temperature = float(self.metadata.get("temperature", 1.0))
        self.threshold = float(self.metadata.get("threshold", 0.0))

    def predict_proba(self, texts, batch_size: int = 64, max_characters: int = 1 << 16) -> np.ndarray:
        """(n, labels) calibrated probabilities (float32).

        The graph pads every text of a call to the longest one, so texts go to onnxruntime sorted by
        length, at most ``batch_size`` a call and at most ``max_characters`` once padded (a text longer
        than that goes alone).
        """
        texts = list(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and end - start < batch_size and \
                    (end - start + 1) * (len(texts[order[end]]) + 2) <= max_characters:
                end += 1
            rows = order[start:end]
            feed = np.array([texts[i] for i in rows], dtype=object).reshape(-1, 1)
            out[rows] = self.session.run(["probabilities"], {INPUT: feed})[0]
            start = end
        return out

    def predict(self, texts, threshold: float | None = None) -> dict:
        """Columns ``label``, ``confidence``, ``abstain``, as ``Student.predict`` returns them."""
        from labelloop.labelers.tasks import TASKS

        return TASKS["multiclass"].predictions(self.predict_proba(texts), self.labels,
                                               self.threshold if threshold is None else threshold)


# --- export with a parity check -------------------------------------------------------------------


def heldout_texts(run_dir: Path) -> list[str]:
    """The run's dev and test texts (``votes_dev.parquet``, ``votes_test.parquet``), else its train texts."""
    texts = []
    for split in ("dev", "test"):
        path = run_dir / f"votes_{split}.parquet"
        if path.is_file():
            texts += pd.read_parquet(path, columns=["text"])["text"].astype(str).tolist()
    if not texts and (run_dir / "votes_train.parquet").is_file():
        texts = pd.read_parquet(run_dir / "votes_train.parquet", columns=["text"])["text"].astype(str).tolist()
    return texts


def _rate(predict, texts: list[str], seconds: float = 0.25) -> tuple[np.ndarray, float]:
    """The predictions and documents per second, repeating the batch for at least ``seconds`` (5 times at most)."""
    start, n, out = time.perf_counter(), 0, None
    while n < 5 and (n == 0 or time.perf_counter() - start < seconds):
        out = predict(texts)
        n += 1
    return out, n * len(texts) / max(time.perf_counter() - start, 1e-9)


def parity(student, onnx_student: OnnxStudent, texts: list[str]) -> dict:
    """Agreement of the most probable label, the largest probability difference, and both speeds on ``texts``."""
    expected, sklearn_rate = _rate(student.predict_proba, texts)
    got, onnx_rate = _rate(onnx_student.predict_proba, texts)
    return {"agreement": float(np.mean(expected.argmax(axis=1) == got.argmax(axis=1))),
            "max_abs_diff": float(np.abs(expected - got).max()), "n_texts": len(texts),
            "docs_per_s_onnx": round(onnx_rate, 1), "docs_per_s_sklearn": round(sklearn_rate, 1)}


def export_onnx(run_dir: Path | str, output: Path | str | None = None, *, min_agreement: float = 0.99,
                texts: list[str] | None = None, force: bool = False) -> dict:
    """Write a run's student as ONNX after checking it against the scikit-learn student.

    Args:
        run_dir: the run folder (or the ``model.skops`` inside it).
        output: the file to write (default: ``model.onnx`` in the run folder).
        min_agreement: the share of ``texts`` on which both must pick the same label, in (0, 1].
        texts: the texts to compare on (default: the run's dev and test texts, else its train texts).
        force: write even below ``min_agreement`` (with a warning).

    Returns:
        ``path``, ``agreement``, ``max_abs_diff``, ``n_texts``, ``docs_per_s_onnx``, ``docs_per_s_sklearn``.

    Raises:
        ConfigError: an unsupported student, no texts to compare on, or agreement below ``min_agreement``
        (nothing is written).
    """
    from labelloop.flows.predict import load_model

    if isinstance(min_agreement, bool) or not isinstance(min_agreement, (int, float)) or not 0 < min_agreement <= 1:
        raise ConfigError(f"min_agreement must be a number in (0, 1], got {min_agreement!r}")
    run_dir = Path(run_dir)
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    _precheck(folder)
    _require_onnx()
    student = load_model(run_dir)
    texts = heldout_texts(folder) if texts is None else [str(t) for t in texts]
    if not texts:
        raise ConfigError(f"{folder} has no votes_*.parquet to check the export on; pass texts")
    output = Path(output) if output is not None else folder / "model.onnx"
    model = to_onnx(student)
    with atomic_path(output) as tmp:
        tmp.write_bytes(model.SerializeToString())
        result = parity(student, OnnxStudent(tmp), texts)
        if result["agreement"] < min_agreement:
            message = (f"the ONNX model picks the same label as the scikit-learn student on {result['agreement']:.2%} of "
                       f"{len(texts)} texts, below min_agreement {min_agreement:.2%} (largest probability difference "
                       f"{result['max_abs_diff']:.3g})")
            if not force:
                raise ConfigError(f"{message}; nothing written (--force writes it anyway)")
            log.warning("%s; writing it anyway (force)", message)
    return {"path": str(output), **result}


def _precheck(folder: Path) -> None:
    """Refuse an unsupported run from its metrics.json, before loading the model (or needing onnxruntime)."""
    try:
        info = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return  # load_model says what is wrong with it
    if isinstance(info, dict):
        _check_run(info.get("task", "multiclass"), info.get("features"))


def _check_run(task, features) -> None:
    if task != "multiclass":
        raise ConfigError(f"ONNX export supports {SUPPORTED}; this run's task is {task!r}")
    if features not in (None, "tfidf"):
        raise ConfigError(f"ONNX export supports {SUPPORTED}; this run's student has features {features!r}, which "
                          "are not exported (train it with student.features: tfidf to export it)")
