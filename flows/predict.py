"""The student on disk: save and load it safely with skops, and predict with it."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.pipeline import Pipeline

from labelloop.flows.config import DataSpec
from labelloop.flows.io import atomic_path, records_frame
from labelloop.labelers.student import predict_proba_full
from labelloop.labelers.tasks import TASKS
from labelloop.programs.digest import file_sha256
from labelloop.programs.errors import ConfigError, DataError

# The only types a labelloop student file may hold besides skops' own defaults (scikit-learn's pipelines,
# vectorizers and linear models, numpy arrays): exactly what `skops.io.get_untrusted_types` reports for
# the students labelloop trains. A TF-IDF student reports none.
TRUSTED_TYPES = {
    "labelloop.labelers.student.SentenceEmbedder",  # features: embeddings (holds a package name, checked on load)
    "labelloop.labelers.student.SoftOneVsRest",  # multi-label
    # features: finetune; its weights are float32 .npy entries (no pickle), checked against their SHA-256 on load
    "labelloop.labelers.student.FinetunedEncoder",
}
# Student files written before labelloop was one package name its classes by the old top-level module.
RENAMED_MODULES = {b'"labelers.student"': b'"labelloop.labelers.student"'}


def save_student(student: Pipeline, path: Path) -> Path:
    with atomic_path(path) as tmp:
        sio.dump(student, tmp)
    return path


def _model_bytes(path: Path) -> bytes:
    """The file's bytes, with the module names of older files renamed in its schema (in memory only)."""
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = archive.read("schema.json")
            if not any(old in schema for old in RENAMED_MODULES):
                return data
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as renamed:
                for item in archive.infolist():
                    content = archive.read(item.filename)
                    if item.filename == "schema.json":
                        for old, new in RENAMED_MODULES.items():
                            content = content.replace(old, new)
                    renamed.writestr(item, content)
            return out.getvalue()
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ConfigError(f"{path} is not a skops model file: {exc}") from None


def load_student(path: Path) -> Pipeline:
    """Load a student file, refusing any type outside the short list a labelloop student contains."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist")
    data = _model_bytes(path)
    try:
        unknown = set(sio.get_untrusted_types(data=data))
    except Exception as exc:
        raise ConfigError(f"{path} is not a skops model file: {exc}") from None
    refused = sorted(unknown - TRUSTED_TYPES)
    if refused:
        raise ConfigError(f"{path} contains types a labelloop student never holds: {refused}; refusing to load it")
    student = sio.loads(data, trusted=sorted(unknown))
    _check_packages(student, path)
    return student


def _check_packages(student, path: Path) -> None:
    """Refuse a student naming an embedding package labelloop does not know (it would be imported at predict time)."""
    from sklearn.base import BaseEstimator

    from labelloop.programs.embeddings import KNOWN_EMBEDDERS

    if not isinstance(student, BaseEstimator):
        raise ConfigError(f"{path} does not hold a scikit-learn estimator; refusing to load it")
    for name, value in student.get_params(deep=True).items():
        if (name == "package" or name.endswith("__package")) and value not in KNOWN_EMBEDDERS:
            raise ConfigError(f"{path} names the embedding package {value!r}, not one labelloop knows "
                              f"({', '.join(KNOWN_EMBEDDERS)}); refusing to load it")


@dataclass
class Student:
    """A trained student as deployed: the pipeline, the labels it names, and how sure it must be to answer.

    Made by ``load_model`` from a run folder (``model.skops`` and the run's ``metrics.json``, whose
    ``calibration`` holds the temperature and the abstain threshold chosen on the gold dev records).
    """

    pipeline: Pipeline
    info: dict  # the run's metrics.json
    path: Path  # the model file

    @property
    def labels(self) -> list[str]:
        return list(self.info["labels"])

    @property
    def task(self):
        return TASKS[self.info.get("task", "multiclass")]

    @property
    def calibration(self) -> dict:
        return self.info.get("calibration") or {}

    @property
    def threshold(self):
        """Multi-class: the confidence a prediction needs (0.0: always answer); multi-label: one per label."""
        if self.task.name == "multilabel":
            return self.calibration.get("thresholds") or [0.5] * len(self.labels)
        return float(self.calibration.get("threshold", 0.0))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(n, labels) probabilities, calibrated (multi-class: the run's temperature)."""
        if self.task.name == "multilabel":
            return self.pipeline.predict_proba(list(texts))
        return predict_proba_full(self.pipeline, list(texts), len(self.labels),
                                  float(self.calibration.get("temperature", 1.0)))

    def predict(self, texts: list[str], threshold=None) -> dict:
        """Prediction columns for ``texts`` (see the task's ``predictions``); ``threshold`` overrides the run's
        (multi-class: a confidence; multi-label: one number for every label, or one per label)."""
        if threshold is None:
            threshold = self.threshold
        elif self.task.name == "multilabel" and np.ndim(threshold) == 0:
            threshold = [float(threshold)] * len(self.labels)
        return self.task.predictions(self.predict_proba(texts), self.labels, threshold)

    def metadata(self) -> dict:
        """What a deployment reports about the model: labels, task, training facts, scores on gold, calibration."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            labelloop_version = version("labelloop")
        except PackageNotFoundError:  # pragma: no cover - running from a checkout that is not installed
            labelloop_version = "unknown"
        info = self.info
        return {"name": info.get("name"), "task": self.task.name, "labels": self.labels,
                "features": info.get("features"), "teacher_model": info.get("model"),
                "label_model": info.get("label_model"), "n_train": info.get("n_train"),
                "training_data_sha256": info.get("training_data_sha256"),
                "model_sha256": info.get("model_sha256") or file_sha256(self.path),
                "scores": {split: rows.get("student") for split, rows in info.get("scores", {}).items()},
                "calibration": self.calibration, "threshold": self.threshold, "labelloop_version": labelloop_version}


def load_model(model: Path | str) -> Student:
    """A run's student, ready to predict: ``model`` is the run folder or the ``model.skops`` inside it.

    Refuses a model file whose SHA-256 differs from the one the run recorded in ``metrics.json``
    (the file was changed after training), and any type a labelloop student never holds.
    """
    model = Path(model)
    if model.is_dir():
        model = model / "model.skops"
    metrics = model.parent / "metrics.json"
    if not metrics.is_file():
        raise ConfigError(f"{metrics} is missing: predict needs the run folder the model was written to")
    try:
        info = json.loads(metrics.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{metrics} is not valid JSON: {exc}") from None
    if not isinstance(info, dict) or not isinstance(info.get("labels"), list) or not info["labels"]:
        raise ConfigError(f"{metrics}: expected an object with a non-empty 'labels' list")
    if info.get("task", "multiclass") not in TASKS:
        raise ConfigError(f"{metrics}: task must be one of {sorted(TASKS)}, got {info.get('task')!r}")
    recorded = info.get("model_sha256")
    if recorded and model.is_file() and file_sha256(model) != recorded:
        raise ConfigError(f"{model} does not match the SHA-256 recorded in {metrics.name} ({recorded[:12]}...): "
                          "the file changed after training; refusing to load it")
    return Student(load_student(model), info, model)


def predict(model: Path | str | Student, records, *, threshold=None, id_column: str = "id",
            text_column: str = "text") -> pd.DataFrame:
    """Label texts with a trained student.

    Args:
        model: a run folder, the ``model.skops`` inside one, or a loaded ``Student``.
        records: a list of texts, or a DataFrame with ``id_column`` and ``text_column``.
        threshold: overrides the run's abstain threshold (see ``Student.predict``).

    Returns:
        The records with ``label``, ``confidence`` and ``abstain`` (multi-label: ``labels``,
        ``top_label``, ``confidence``, ``abstain``).
    """
    student = model if isinstance(model, Student) else load_model(model)
    if isinstance(records, (list, tuple)):
        if not all(isinstance(t, str) for t in records):
            raise DataError("predict: expected a list of texts (str)")
        records = pd.DataFrame({id_column: [str(i) for i in range(len(records))], text_column: list(records)})
    df = records_frame(records, DataSpec(id=id_column, text=text_column), "the records to predict")
    for column, values in student.predict(df["text"].tolist(), threshold).items():
        df[column] = values
    return df
