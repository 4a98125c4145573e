"""The distilled student, trained on the label model's probabilities: a logistic regression on TF-IDF and/or
sentence-embedding features, or (``finetune``) the MiniLM sentence encoder itself fine-tuned with a linear head."""

from __future__ import annotations

import hashlib

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from labelloop.programs.embeddings import DEFAULT_EMBEDDER
from labelloop.programs.errors import ConfigError

FEATURES = ("tfidf", "embeddings", "tfidf+embeddings", "finetune")


class SentenceEmbedder(TransformerMixin, BaseEstimator):
    """Texts -> offline sentence embeddings. Holds only the package name: the weights stay in the package."""

    def __init__(self, package: str = DEFAULT_EMBEDDER):
        self.package = package

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        from labelloop.programs.embeddings import embed

        return embed(list(X), self.package)


class SoftOneVsRest(ClassifierMixin, BaseEstimator):
    """Multi-label student: one logistic regression per label, trained on that label's probability.

    Each record appears twice per label, as positive with weight p and negative with weight 1 - p.
    Labels with too little evidence either way (less than ``min_weight`` total probability on one
    side) get no model and a constant probability: their mean over the training records.
    """

    def __init__(self, C: float = 4.0, min_weight: float = 1.0, seed: int = 0):
        self.C, self.min_weight, self.seed = C, min_weight, seed

    def fit(self, X, P):
        P = np.asarray(P, dtype=float)
        n, k = P.shape
        self.n_labels_ = k
        self.prior_ = P.mean(axis=0)
        self.estimators_, self.labels_ = [], []
        X2 = _stack_rows(X, X)
        for j in range(k):
            p = P[:, j]
            if p.sum() < self.min_weight or (1 - p).sum() < self.min_weight:
                continue
            clf = LogisticRegression(C=self.C, max_iter=2000, class_weight="balanced", random_state=self.seed)
            clf.fit(X2, np.r_[np.ones(n), np.zeros(n)], sample_weight=np.r_[p, 1 - p] + 1e-9)
            self.estimators_.append(clf)
            self.labels_.append(j)
        self.labels_ = np.array(self.labels_, dtype=int)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(n, k) probability that each label applies."""
        out = np.tile(self.prior_, (X.shape[0], 1))
        for j, clf in zip(self.labels_, self.estimators_):
            out[:, j] = clf.predict_proba(X)[:, 1]
        return out

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X) >= 0.5


def _stack_rows(a, b):
    from scipy import sparse

    return sparse.vstack([a, b]).tocsr() if sparse.issparse(a) else np.vstack([a, b])


def _encoder_path(package: str) -> str:
    """The folder of the sentence-transformers model that ``package`` carries (a known embedder; no download)."""
    from labelloop.programs.embeddings import model_path

    return model_path(package)


def _load_tokenizer(package: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_encoder_path(package), local_files_only=True)


def _weights_digest(weights: dict) -> str:
    """SHA-256 over the weights' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class FinetunedEncoder(ClassifierMixin, BaseEstimator):
    """Multi-class student: the MiniLM sentence encoder fine-tuned end to end, mean pooling, a linear head.

    Trained on soft labels by cross-entropy to the label model's probabilities (the KL divergence
    from them, up to a constant), class-balanced like the logistic regression students; AdamW,
    linear warm-up and decay, seeded, on the CPU. ``fit_soft(texts, P)`` takes the (n, k)
    probabilities; ``fit(texts, y, sample_weight)`` takes the same as rows, one per (text, class).

    The fitted weights live in ``weights_`` as a dict of float32 numpy arrays, so skops stores them
    as plain ``.npy`` entries (no pickle) inside the one model file, and ``weights_sha256_`` is
    checked whenever they are loaded. The architecture and tokenizer come from the installed
    ``package``, as for ``SentenceEmbedder``.

    The defaults (4 epochs, encoder learning rate 5e-5) were chosen on the YouTube benchmark's gold
    dev records (``benchmarks/student_options.py``).
    """

    def __init__(self, package: str = DEFAULT_EMBEDDER, epochs: int = 4, lr: float = 5e-5, head_lr: float = 1e-3,
                 batch_size: int = 16, max_length: int = 128, weight_decay: float = 0.01, warmup: float = 0.1,
                 class_weight: str | None = "balanced", seed: int = 0):
        self.package, self.epochs, self.lr, self.head_lr = package, epochs, lr, head_lr
        self.batch_size, self.max_length, self.weight_decay, self.warmup = batch_size, max_length, weight_decay, warmup
        self.class_weight, self.seed = class_weight, seed

    # -- training ---------------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Train on (text, class id) rows; rows of the same text add up to that text's soft label."""
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError("FinetunedEncoder is multi-class only (one label per text); a multi-label student needs "
                             "features tfidf, embeddings or tfidf+embeddings")
        X = list(X)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if not (len(X) == len(y) == len(w)):
            raise ValueError(f"X, y and sample_weight differ in length: {len(X)}, {len(y)}, {len(w)}")
        classes = np.unique(y)
        texts, index = [], {}
        for text in X:
            if text not in index:
                index[text] = len(texts)
                texts.append(text)
        P = np.zeros((len(texts), len(classes)))
        np.add.at(P, ([index[t] for t in X], np.searchsorted(classes, y)), w)
        weight = P.sum(axis=1)
        return self._fit(texts, P / np.maximum(weight[:, None], 1e-12), weight / max(weight.mean(), 1e-12), classes)

    def fit_soft(self, X, P):
        """Train on (n, k) probabilities, one distribution over the k classes per text."""
        P = np.asarray(P, dtype=float)
        X = list(X)
        if P.ndim != 2 or len(X) != len(P):
            raise ValueError(f"expected P of shape ({len(X)}, k), got {P.shape}")
        if not np.allclose(P.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError("FinetunedEncoder is multi-class only: each row of P must sum to 1 (one label per text); "
                             "a multi-label student needs features tfidf, embeddings or tfidf+embeddings")
        classes = np.flatnonzero((P > 1e-6).any(axis=0))
        if len(classes) < 2:
            raise ValueError("the weak labels cover fewer than two classes; add labelers for the missing classes")
        Q = P[:, classes]
        return self._fit(X, Q / Q.sum(axis=1, keepdims=True), np.ones(len(X)), classes)

    def _fit(self, texts: list[str], Q: np.ndarray, weight: np.ndarray, classes: np.ndarray):
        import torch
        from transformers import AutoModel

        n, c = Q.shape
        if self.class_weight == "balanced":  # as sklearn: n / (c * the class's total weight)
            mass = (Q * weight[:, None]).sum(axis=0)
            class_weight = weight.sum() / (c * np.maximum(mass, 1e-12))
        elif self.class_weight is None:
            class_weight = np.ones(c)
        else:
            raise ValueError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}")
        tokenizer = _load_tokenizer(self.package)
        steps = max(1, self.epochs * -(-n // self.batch_size))
        warmup = int(self.warmup * steps)
        rng = np.random.default_rng(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            encoder = AutoModel.from_pretrained(_encoder_path(self.package), local_files_only=True).float()
            net = torch.nn.ModuleDict({"encoder": encoder, "head": torch.nn.Linear(encoder.config.hidden_size, c)})
            optimizer = torch.optim.AdamW([{"params": encoder.parameters(), "lr": self.lr},
                                           {"params": net["head"].parameters(), "lr": self.head_lr}],
                                          weight_decay=self.weight_decay)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
            targets = torch.tensor(Q * class_weight, dtype=torch.float32)  # class-weighted soft labels
            row_weight = torch.tensor(weight, dtype=torch.float32)
            net.train()
            for _ in range(self.epochs):
                order = rng.permutation(n)
                for start in range(0, n, self.batch_size):
                    batch = order[start:start + self.batch_size]
                    logits = self._logits(net, tokenizer, [texts[i] for i in batch])
                    w = row_weight[batch]
                    loss = -(w * (targets[batch] * torch.log_softmax(logits, dim=1)).sum(dim=1)).sum() / w.sum()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
        net.eval()
        self.classes_ = np.asarray(classes, dtype=np.int64)
        self.weights_ = {name: t.detach().cpu().numpy().astype(np.float32, copy=True)
                         for name, t in net.state_dict().items()}
        self.weights_sha256_ = _weights_digest(self.weights_)
        self._net, self._tokenizer = net, tokenizer
        return self

    def _logits(self, net, tokenizer, texts: list[str]):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = net["encoder"](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return net["head"]((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0))

    # -- prediction -------------------------------------------------------------------------------

    def _network(self):
        """The torch model, rebuilt (once) from ``weights_`` after loading; refuses weights that changed."""
        if getattr(self, "_net", None) is None:
            import torch
            from transformers import AutoConfig, AutoModel

            self._check_weights()
            config = AutoConfig.from_pretrained(_encoder_path(self.package), local_files_only=True)
            with torch.random.fork_rng(devices=[]):
                encoder = AutoModel.from_config(config).float()
                head = torch.nn.Linear(config.hidden_size, len(self.classes_))
            net = torch.nn.ModuleDict({"encoder": encoder, "head": head})
            state = {name: torch.from_numpy(np.array(a, dtype=np.float32)) for name, a in self.weights_.items()}
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ConfigError(f"the fine-tuned weights do not fit the encoder of {self.package!r}: {exc}") from None
            self._net, self._tokenizer = net.eval(), _load_tokenizer(self.package)
        return self._net, self._tokenizer

    def _check_weights(self) -> None:
        weights = getattr(self, "weights_", None)
        if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                                    and v.dtype == np.float32 for k, v in weights.items()):
            raise ConfigError("the fine-tuned student's weights must be a dict of float32 arrays; refusing them")
        if _weights_digest(weights) != getattr(self, "weights_sha256_", None):
            raise ConfigError("the fine-tuned student's weights do not match their recorded SHA-256 "
                              "(changed after training); refusing them")

    def predict_proba(self, X, batch_size: int = 64) -> np.ndarray:
        """(n, len(classes_)) probabilities; texts are batched by length, which changes nothing but speed."""
        import torch

        texts = list(X)
        net, tokenizer = self._network()
        out = np.zeros((len(texts), len(self.classes_)))
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start:start + batch_size]
                logits = self._logits(net, tokenizer, [texts[i] for i in rows])
                out[rows] = torch.softmax(logits.double(), dim=1).numpy()
        return out

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    # -- persistence (skops) ----------------------------------------------------------------------

    def __getstate__(self):
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k not in ("_net", "_tokenizer")}

    def __setstate__(self, state):
        super().__setstate__(state)
        if "weights_" in state:
            self._check_weights()


def make_student(features: str = "tfidf+embeddings", max_features: int = 50_000, C: float = 4.0,
                 seed: int = 0, multilabel: bool = False) -> Pipeline:
    """A class-balanced logistic regression on TF-IDF word + character n-grams, sentence embeddings, or both;
    or, with ``features="finetune"``, the sentence encoder itself fine-tuned (``FinetunedEncoder``, multi-class only).

    With ``multilabel`` the classifier is one logistic regression per label (``SoftOneVsRest``).
    """
    if features not in FEATURES:
        raise ValueError(f"student features must be one of {FEATURES}, got {features!r}")
    if features == "finetune":
        if multilabel:
            raise ValueError("student features 'finetune' train a multi-class student only; a multilabel task needs "
                             "tfidf, embeddings or tfidf+embeddings")
        return Pipeline([("clf", FinetunedEncoder(seed=seed))])
    parts = []
    if "tfidf" in features:
        parts += [("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=max_features)),
                  ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                                            max_features=max_features))]
    if "embeddings" in features:
        parts.append(("embeddings", SentenceEmbedder()))
    clf = SoftOneVsRest(C=C, seed=seed) if multilabel else \
        LogisticRegression(C=C, max_iter=2000, class_weight="balanced", random_state=seed)
    return Pipeline([("features", FeatureUnion(parts)), ("clf", clf)])


def fit_student(texts: list[str], P: np.ndarray, *, min_confidence: float = 0.0, student: Pipeline | None = None,
                seed: int = 0) -> Pipeline:
    """Train on soft labels: each record appears once per class, weighted by that class's probability
    (a fine-tuned encoder student takes the probabilities as they are: ``FinetunedEncoder.fit_soft``).

    Args:
        texts: n training texts (records where every labeler abstained should already be removed).
        P: (n, k) label probabilities from the label model.
        min_confidence: drop records whose top probability is below this.
        student: the pipeline to fit; ``make_student()`` when omitted.

    Returns:
        The fitted pipeline; its ``classes_`` are the label ids that received weight.
    """
    P = np.asarray(P, dtype=float)
    if P.ndim != 2 or len(texts) != len(P):
        raise ValueError(f"expected P of shape ({len(texts)}, k), got {P.shape}")
    keep = P.max(axis=1) >= min_confidence
    texts, P = [t for t, k in zip(texts, keep) if k], P[keep]
    n, k = P.shape
    rows, cols = np.nonzero(P > 1e-6)
    if len(set(cols.tolist())) < 2:
        raise ValueError("the weak labels cover fewer than two classes; add labelers for the missing classes")
    student = student or make_student(seed=seed)
    if len(student.steps) == 1 and hasattr(student[-1], "fit_soft"):  # FinetunedEncoder: the probabilities as they are
        student[-1].fit_soft(texts, P)
        return student
    student.fit([texts[i] for i in rows], cols, clf__sample_weight=P[rows, cols] * n / max(P[rows, cols].sum(), 1e-9))
    return student


def predict_proba_full(student: Pipeline, texts: list[str], cardinality: int, temperature: float = 1.0) -> np.ndarray:
    """(n, cardinality) probabilities, with zeros for classes the student never saw; ``temperature`` rescales
    the probabilities of the classes it saw (``labelloop.labelers.calibration.with_temperature``)."""
    from labelloop.labelers.calibration import with_temperature

    out = np.zeros((len(texts), cardinality))
    P = student.predict_proba(texts)
    out[:, student.classes_] = P if temperature == 1.0 else with_temperature(P, temperature)
    return out


def fit_multilabel_student(texts: list[str], P: np.ndarray, *, student: Pipeline | None = None, seed: int = 0) -> Pipeline:
    """Train the one-vs-rest student on (n, k) label probabilities."""
    P = np.asarray(P, dtype=float)
    if P.ndim != 2 or len(texts) != len(P):
        raise ValueError(f"expected P of shape ({len(texts)}, k), got {P.shape}")
    student = student or make_student(seed=seed, multilabel=True)
    student.fit(list(texts), P)
    if not len(student[-1].labels_):
        raise ValueError("no label has enough weak-label evidence to train on; add labelers or data")
    return student
