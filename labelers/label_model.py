"""Label models with scikit-learn's contract: Snorkel's LabelModel and majority vote beside it."""

from __future__ import annotations

import numpy as np

from labelloop.labelers.labels import ABSTAIN


def _check_L(L, cardinality: int, n_lfs: int | None = None) -> np.ndarray:
    L = np.asarray(L)
    if L.ndim != 2:
        raise ValueError(f"L must be a 2-D (records x labelers) array, got shape {L.shape}")
    if n_lfs is not None and L.shape[1] != n_lfs:
        raise ValueError(f"L has {L.shape[1]} columns but the model was fitted on {n_lfs} labelers; rebuild L")
    bad = (L < ABSTAIN) | (L >= cardinality)
    if bad.any():
        raise ValueError(f"L holds votes outside [-1, {cardinality - 1}]: {np.unique(L[bad])[:5].tolist()}")
    return L.astype(int, copy=False)  # no copy of a million-row matrix that is already int


def vote_counts(L: np.ndarray, cardinality: int) -> np.ndarray:
    """(n, cardinality) number of votes per record and class, abstains left out.

    One comparison pass per class while classes are few; above that a single bincount over
    (record, class) cells, so many-class taxonomies do not cost one full pass each.

    >>> vote_counts(np.array([[0, 1, 1], [-1, -1, 0]]), 2).tolist()
    [[1, 2], [1, 0]]
    """
    L = np.asarray(L)
    n = L.shape[0]
    if cardinality <= 12:
        return np.stack([(L == c).sum(axis=1) for c in range(cardinality)], axis=1) if cardinality else np.zeros((n, 0), int)
    cells = (np.arange(n)[:, None] * (cardinality + 1) + (L + 1)).ravel()  # column 0 of each row collects the abstains
    return np.bincount(cells, minlength=n * (cardinality + 1)).reshape(n, cardinality + 1)[:, 1:]


def _argmax(P: np.ndarray, covered: np.ndarray, tie_break: str, seed: int) -> np.ndarray:
    """Argmax of each row; ties (and uncovered rows) abstain or go to a seeded random pick.

    The random pick is vectorised (a Python loop per tied row was slower than the label model's
    fit at a million rows): every tied row draws one uniform key per class, keys of classes off
    the top are masked out, and the argmax of the keys is uniform over the tied classes. The keys
    come from ``default_rng(seed)``, so the same seed and P give the same picks.

    >>> _argmax(np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([True, True]), "abstain", 0).tolist()
    [-1, 0]
    """
    if tie_break not in ("abstain", "random"):
        raise ValueError(f"tie_break must be 'abstain' or 'random', got {tie_break!r}")
    ties = np.isclose(P, P.max(axis=1, keepdims=True))
    y = P.argmax(axis=1)
    tied = ties.sum(axis=1) > 1
    if tie_break == "abstain":
        y[tied] = ABSTAIN
    elif tied.any():
        keys = np.random.default_rng(seed).random((int(tied.sum()), P.shape[1]))
        keys[~ties[tied]] = -1.0
        y[tied] = keys.argmax(axis=1)
    y[~covered] = ABSTAIN
    return y


class MajorityVote:
    """Each record's label distribution is the share of non-abstaining votes per class.

    >>> mv = MajorityVote(cardinality=2).fit(np.array([[0, 0, 1], [1, -1, 1], [-1, -1, -1]]))
    >>> mv.predict(np.array([[0, 0, 1], [1, -1, 1], [-1, -1, -1]])).tolist()
    [0, 1, -1]
    """

    def __init__(self, cardinality: int = 2, seed: int = 0):
        self.cardinality = cardinality
        self.seed = seed

    def fit(self, L, class_balance=None) -> MajorityVote:
        L = _check_L(L, self.cardinality)
        self.n_lfs_ = L.shape[1]
        self.class_balance_ = None if class_balance is None else np.asarray(class_balance, dtype=float)
        return self

    def predict_proba(self, L) -> np.ndarray:
        L = _check_L(L, self.cardinality, self.n_lfs_)
        counts = vote_counts(L, self.cardinality).astype(float)
        totals = counts.sum(axis=1, keepdims=True)
        prior = self.class_balance_ if self.class_balance_ is not None else np.full(self.cardinality, 1 / self.cardinality)
        return np.where(totals > 0, counts / np.maximum(totals, 1), prior)

    def predict(self, L, tie_break: str = "abstain") -> np.ndarray:
        L = np.asarray(L)
        return _argmax(self.predict_proba(L), (L != ABSTAIN).any(axis=1), tie_break, self.seed)


def _scaled(P: np.ndarray, scale: np.ndarray) -> np.ndarray:
    P = P * scale
    return P / P.sum(axis=1, keepdims=True)


def _rebalancing_scale(P: np.ndarray, balance: np.ndarray, n_iter: int = 50) -> np.ndarray:
    """Per-class factors after which the mean posterior over the rows of P equals ``balance``."""
    scale = np.ones(P.shape[1])
    for _ in range(n_iter):
        scale *= balance / np.clip(_scaled(P, scale).mean(axis=0), 1e-9, None)
    return scale


class LabelModelWrapper:
    """Snorkel's LabelModel with an explicit seed, shape checks and the scikit-learn contract.

    With a class balance (estimated from gold dev labels), the fitted posteriors are also rebalanced
    so that their mean over the training records matches it. Snorkel inherits the skew of
    single-polarity labelers even when given the class balance: on YouTube spam it put 78% of
    records in the spam class against 52% true, and its argmax scored below majority vote although
    its ranking was good. Rebalancing keeps the ranking and fixes the decision threshold.

    Args:
        cardinality: number of classes.
        n_epochs: training epochs.
        seed: passed to Snorkel explicitly (its default is drawn once at import).
        lr: learning rate.
        rebalance: rebalance posteriors to the class balance given to ``fit``.
    """

    def __init__(self, cardinality: int = 2, n_epochs: int = 500, seed: int = 0, lr: float = 0.01,
                 rebalance: bool = True):
        self.cardinality = cardinality
        self.n_epochs = n_epochs
        self.seed = seed
        self.lr = lr
        self.rebalance = rebalance

    def fit(self, L, class_balance=None) -> LabelModelWrapper:
        from snorkel.labeling.model import LabelModel

        L = _check_L(L, self.cardinality)
        if L.shape[1] < 3:
            raise ValueError(f"Snorkel's label model needs at least 3 labelers, got {L.shape[1]}; use label_model: majority")
        self.n_lfs_ = L.shape[1]
        self.label_model_ = LabelModel(cardinality=self.cardinality, verbose=False)
        self.label_model_.fit(
            L, n_epochs=self.n_epochs, seed=self.seed, lr=self.lr, progress_bar=False,
            class_balance=None if class_balance is None else np.asarray(class_balance, dtype=float),
        )
        self.scale_ = None
        if self.rebalance and class_balance is not None:
            self.scale_ = _rebalancing_scale(self.label_model_.predict_proba(L), np.asarray(class_balance, dtype=float))
        return self

    def predict_proba(self, L) -> np.ndarray:
        P = self.label_model_.predict_proba(_check_L(L, self.cardinality, self.n_lfs_))
        return P if self.scale_ is None else _scaled(P, self.scale_)

    def predict(self, L, tie_break: str = "abstain") -> np.ndarray:
        L = np.asarray(L)
        return _argmax(self.predict_proba(L), (L != ABSTAIN).any(axis=1), tie_break, self.seed)


def make_label_model(kind: str, cardinality: int, seed: int = 0):
    """``snorkel`` or ``majority``."""
    if kind == "snorkel":
        return LabelModelWrapper(cardinality=cardinality, seed=seed)
    if kind == "majority":
        return MajorityVote(cardinality=cardinality, seed=seed)
    raise ValueError(f"label_model must be 'snorkel' or 'majority', got {kind!r}")


def estimate_class_balance(y_gold, cardinality: int, smoothing: float = 1.0) -> np.ndarray:
    """Class frequencies of gold dev labels with add-one smoothing.

    >>> estimate_class_balance([0, 0, 1], 2).round(2).tolist()
    [0.6, 0.4]
    """
    counts = np.bincount(np.asarray(y_gold, dtype=int), minlength=cardinality).astype(float) + smoothing
    return counts / counts.sum()
