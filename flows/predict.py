"""The student on disk: save and load it safely with skops, and predict with it."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import skops.io as sio
from sklearn.pipeline import Pipeline

from labelloop.flows.config import DataSpec
from labelloop.flows.io import atomic_path, records_frame
from labelloop.labelers.tasks import TASKS
from labelloop.programs.errors import ConfigError, DataError

# The only types a labelloop student file may contain besides skops' defaults.
TRUSTED_TYPES = {
    "sklearn.pipeline.FeatureUnion", "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.feature_extraction.text.TfidfTransformer", "builtins.str", "numpy.float64", "numpy.int64",
    "numpy.dtype", "builtins.dict", "builtins.list", "builtins.tuple", "builtins.type",
    "labelloop.labelers.student.SentenceEmbedder", "labelloop.labelers.student.SoftOneVsRest",
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
    return sio.loads(data, trusted=sorted(unknown))


def predict(model: Path | str, records, *, id_column: str = "id", text_column: str = "text") -> pd.DataFrame:
    """Label texts with a trained student.

    Args:
        model: a run folder, or the ``model.skops`` inside one (its ``metrics.json`` names the labels).
        records: a list of texts, or a DataFrame with ``id_column`` and ``text_column``.

    Returns:
        The records with ``label`` and ``confidence`` (multi-label: ``labels``, ``top_label``, ``confidence``).
    """
    model = Path(model)
    if model.is_dir():
        model = model / "model.skops"
    student = load_student(model)
    metrics = model.parent / "metrics.json"
    if not metrics.is_file():
        raise ConfigError(f"{metrics} is missing: predict needs the run folder the model was written to")
    info = json.loads(metrics.read_text())
    if isinstance(records, (list, tuple)):
        if not all(isinstance(t, str) for t in records):
            raise DataError("predict: expected a list of texts (str)")
        records = pd.DataFrame({id_column: [str(i) for i in range(len(records))], text_column: list(records)})
    df = records_frame(records, DataSpec(id=id_column, text=text_column), "the records to predict")
    for column, values in TASKS[info.get("task", "multiclass")].predictions(student, df["text"].tolist(),
                                                                            info["labels"]).items():
        df[column] = values
    return df
