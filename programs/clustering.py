"""Clustering a taxonomy sample: groups of records that embed close together, and their typical words."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Group:
    """Sampled records that embed close together: what the name step sees of one would-be label."""

    size: int
    keywords: list[str]  # words typical of these records against the other groups, most typical first
    summaries: list[str]  # the summaries closest to the group's centre

    def inputs(self) -> dict:
        return {"keywords": ", ".join(self.keywords), "summaries": "\n".join(f"- {s}" for s in self.summaries)}


def distinctive_words(docs: list[str], n: int) -> list[list[str]]:
    """The ``n`` words most typical of each document against the others (class-based TF-IDF, as in BERTopic).

    Words every document uses are left out (with three documents or more).

    >>> distinctive_words(["refund my card refund", "parcel late parcel my", "password reset my login"], 2)
    [['refund', 'card'], ['parcel', 'late'], ['login', 'password']]
    """
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer

    counts = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{2,}\b")
    try:
        tf = counts.fit_transform(docs).toarray().astype(float)
    except ValueError:  # only stop words
        return [[] for _ in docs]
    vocab = counts.get_feature_names_out()
    weight = tf / np.maximum(tf.sum(axis=1, keepdims=True), 1) * np.log(1 + tf.sum() / len(docs) / np.maximum(tf.sum(axis=0), 1))
    if len(docs) > 2:
        weight[:, (tf > 0).all(axis=0)] = 0  # a word every group uses ("customer") is typical of none
    return [[str(vocab[j]) for j in np.argsort(-row, kind="stable")[:n] if row[j] > 0] for row in weight]


def group_records(summaries: list[str], texts: list[str], n_groups: int, per_group: int = 5, n_keywords: int = 8,
                  seed: int = 0, by: str = "text") -> list[Group]:
    """Cluster the sampled records by sentence embeddings (k-means), largest group first.

    A small LM names a group far better than it invents a label set: shown one group's typical
    words and summaries at a time, it says what they share instead of naming labels after single
    texts. ``by`` says what is embedded: the ``text`` (default; on the example project's short
    messages these clusters match the gold classes better than those of the summaries) or the
    ``summary`` (for long texts, which the embedder truncates). The keywords come from the
    summaries and the texts together.
    """
    import numpy as np
    from sklearn.cluster import KMeans

    from labelloop.programs.embeddings import embed

    if by not in ("text", "summary"):
        raise ValueError(f"group records by 'text' or 'summary', not {by!r}")
    k = max(1, min(n_groups, len(summaries)))
    vectors = embed(texts if by == "text" else summaries)
    ids = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors) if k > 1 else np.zeros(len(summaries), int)
    order = sorted(set(ids.tolist()), key=lambda g: (-(ids == g).sum(), g))
    members = [np.flatnonzero(ids == g) for g in order]
    keywords = distinctive_words([" ".join(f"{summaries[i]} {texts[i]}" for i in m) for m in members], n_keywords)
    groups = []
    for m, words in zip(members, keywords):
        closest = m[np.argsort(-(vectors[m] @ vectors[m].mean(axis=0)), kind="stable")][:per_group]
        groups.append(Group(len(m), words, [summaries[i] for i in closest]))
    return groups
