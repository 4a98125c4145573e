"""Dataset and taxonomy IO at the edge: CSV, JSONL, Parquet, Hugging Face datasets on disk. Atomic writes."""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from labelloop.flows.config import ConfigError, DataSpec, read_yaml
from labelloop.labelers.labels import Taxonomy
from labelloop.programs.errors import DataError

FORMATS = (".csv", ".jsonl", ".json", ".parquet")


def _read_table(path: Path) -> pd.DataFrame:
    if path.is_dir():
        from datasets import load_from_disk

        try:
            ds = load_from_disk(str(path))
        except Exception as exc:  # datasets raises FileNotFoundError and its own errors for other folders
            raise DataError(f"{path} is not a saved dataset folder: {exc}") from None
        if hasattr(ds, "keys"):  # a DatasetDict: take the first split
            ds = ds[next(iter(ds.keys()))]
        return ds.to_pandas()
    suffix = path.suffix.lower()
    if suffix == ".csv":  # utf-8-sig: a byte order mark (as spreadsheets write one) is not part of the first column's name
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: empty file; expected a header row naming the columns") from None
        except pd.errors.ParserError as exc:
            raise DataError(f"{path}: not valid CSV: {exc}") from None
    if suffix in (".jsonl", ".json"):
        rows = []
        with open(path, encoding="utf-8-sig") as handle:
            for n, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:  # not JSON, or a number too long to read
                    raise DataError(f"{path}, line {n}: expected one JSON object per line: {exc}") from None
                except RecursionError:
                    raise DataError(f"{path}, line {n}: expected one JSON object per line, got one nested too deeply") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}, line {n}: expected one JSON object per line, got a JSON "
                                    f"{type(row).__name__}: {line.strip()!r:.80}")
                for key, value in row.items():  # pandas cannot even hold a lone surrogate: name the line now
                    if isinstance(value, str) and _SURROGATES.search(value):
                        raise DataError(f"{path}, line {n}: {key!r}: {text_problem(value)}")
                where = _ESCAPED_SURROGATE.search(line) and _surrogate_in(row)  # in a key, a list or an object
                if where:
                    raise DataError(f"{path}, line {n}: {where}: it holds a lone surrogate (a \\ud800-\\udfff escape "
                                    "without its pair), not valid Unicode")
                rows.append(row)
        return pd.DataFrame(rows)
    if suffix == ".parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises its own errors for a file that is not Parquet, or not a table pandas can hold
            raise DataError(f"{path} is not a Parquet file labelloop can read: {exc}") from None
    raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(FORMATS)} or a saved dataset folder")


def read_records(spec: DataSpec, *, require_label: bool = False, multilabel: bool = False) -> pd.DataFrame:
    """Read records as a frame with columns ``id``, ``text`` (and ``label`` when present or required).

    Raises DataError for a missing file, a missing id/text/label column, empty or non-text
    values, and duplicate ids, naming what was expected and what arrived. With ``multilabel`` the
    ``label`` column holds a list of label names per record.
    """
    path = Path(spec.path)
    try:
        if not path.exists():
            raise DataError(f"data file {path} does not exist")
        df = _read_table(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from None
    except OSError as exc:  # a name too long for the file system, a file that cannot be read
        raise DataError(f"data file {path} cannot be read: {exc.strerror or exc}") from None
    return records_frame(df, spec, str(path), require_label=require_label, multilabel=multilabel)


def records_frame(df: pd.DataFrame, spec: DataSpec, source: str, *, require_label: bool = False,
                  multilabel: bool = False) -> pd.DataFrame:
    """Check and rename a frame of records (from a file or a caller) as ``read_records`` does."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    if df.columns.nlevels > 1:
        raise DataError(f"{source}: expected one row of column names, got {df.columns.nlevels} levels {list(df.columns)[:5]}")
    cols = {spec.id: "id", spec.text: "text"}
    if require_label or spec.label in df.columns:
        cols[spec.label] = "label"
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{source}: expected column(s) {missing}, found {list(df.columns)}")
    repeated = [c for c in cols if list(df.columns).count(c) > 1]
    if repeated:
        raise DataError(f"{source}: column(s) {repeated} appear more than once; expected one column each")
    df = df[list(cols)].rename(columns=cols).reset_index(drop=True)
    null = df.index[df["id"].isna()]
    if len(null):
        raise DataError(f"{source}: {len(null)} record(s) have no {spec.id!r} (null), e.g. row {int(null[0]) + 1}; "
                        "every record needs an id")
    nested = df.index[df["id"].map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray)))]
    if len(nested):
        raise DataError(f"{source}: {len(nested)} record(s) have a {spec.id!r} that is a list or an object, e.g. row "
                        f"{int(nested[0]) + 1}: {df.loc[nested[0], 'id']!r:.80}; expected text or a number")
    ids = [id_text(v) for v in df["id"]]  # checked before pandas holds them: a lone surrogate would not even fit
    unusable = [(rid, problem) for rid in ids if (problem := text_problem(rid))]
    if unusable:
        raise DataError(f"{source}: {len(unusable)} record(s) have a {spec.id!r} labelloop cannot use, e.g. id "
                        f"{unusable[0][0]!r}: {unusable[0][1]}")
    df["id"] = ids
    bad = df.index[~df["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))]
    if len(bad):
        raise DataError(f"{source}: {len(bad)} record(s) have empty or non-text {spec.text!r}, e.g. id {df.loc[bad[0], 'id']!r}")
    problems = df["text"].map(text_problem)  # the ids were checked above
    bad = df.index[problems.notna()]
    if len(bad):
        raise DataError(f"{source}: {len(bad)} record(s) have a {spec.text!r} labelloop cannot use, e.g. id "
                        f"{df.loc[bad[0], 'id']!r}: {problems[bad[0]]}")
    dupes = df["id"][df["id"].duplicated()].unique()
    if len(dupes):
        raise DataError(f"{source}: ids must be unique; {len(dupes)} repeated, e.g. {list(dupes[:3])}")
    if "label" in df.columns and multilabel:
        df["label"] = _label_sets(df, spec, source)
    elif "label" in df.columns:
        labels = [str(v) for v in df["label"]]
        unusable = [(rid, problem) for rid, label in zip(df["id"], labels) if (problem := text_problem(label))]
        if unusable:
            raise DataError(f"{source}: {len(unusable)} record(s) have a {spec.label!r} labelloop cannot use, e.g. id "
                            f"{unusable[0][0]!r}: {unusable[0][1]}")
        df["label"] = labels
    return df.reset_index(drop=True)


MAX_TEXT_CHARS = 200_000  # a record's text (about 50,000 tokens): longer ones are refused, not sent into prompts
_SURROGATES = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # what a JSON line spells a surrogate with


def _surrogate_in(value, where: str = "") -> str | None:
    """Where a parsed JSON value holds a lone surrogate (``'meta'.'tags'.0``), or None."""
    if isinstance(value, str):
        return (where or "the value") if _SURROGATES.search(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        name = f"{where}.{key!r}" if where else repr(key)
        if isinstance(key, str) and _SURROGATES.search(key):
            return f"a key of {where or 'the object'}"
        found = _surrogate_in(item, name)
        if found:
            return found
    return None


def text_problem(text: str) -> str | None:
    r"""Why a record's text (or id) cannot be used as it is, or None.

    >>> text_problem("fine"), text_problem("a\x00b"), text_problem("\ud800")
    (None, 'it holds a NUL character at position 1', 'it holds a lone surrogate (\\ud800) at position 0, not valid Unicode')
    """
    if len(text) > MAX_TEXT_CHARS:
        return f"it is {len(text):,} characters long; at most {MAX_TEXT_CHARS:,} are accepted (split longer documents)"
    if "\x00" in text:
        return f"it holds a NUL character at position {text.index(chr(0))}"
    found = _SURROGATES.search(text)
    if found:
        return f"it holds a lone surrogate (\\u{ord(found.group()):04x}) at position {found.start()}, not valid Unicode"
    return None


def id_text(value) -> str:
    """An id as text; a whole float (a nullable integer column read as float) loses its ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _label_sets(df: pd.DataFrame, spec: DataSpec, path) -> pd.Series:
    """Multi-label gold as lists of names: lists (JSONL, Parquet) or ``label_sep``-joined strings (CSV)."""
    def parse(value, rid):
        if isinstance(value, str):
            return [x.strip() for x in value.split(spec.label_sep) if x.strip()]
        if hasattr(value, "tolist"):
            value = value.tolist()
        if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
            return list(dict.fromkeys(value))
        raise DataError(f"{path}: record {rid!r}: expected {spec.label!r} as a list of label names or a "
                          f"{spec.label_sep!r}-separated string, got {value!r:.80}")

    return pd.Series([parse(v, rid) for v, rid in zip(df["label"], df["id"])], index=df.index, dtype=object)


def read_taxonomy(path: Path) -> Taxonomy:
    """Read ``labels: [{name, description}]`` from YAML (other keys, such as a label's ``examples``, are allowed)."""
    raw = read_yaml(path, "taxonomy", " (write one, or propose one from the records with `labelloop bootstrap CONFIG`)")
    labels = raw.get("labels") if isinstance(raw, dict) else None
    if not isinstance(labels, list) or not all(isinstance(x, dict) and isinstance(x.get("name"), str) for x in labels):
        raise ConfigError(f"{path}: expected `labels:` as a list of {{name, description}} mappings, got {raw!r:.200}")
    try:
        return Taxonomy(tuple(x["name"] for x in labels), tuple(str(x.get("description") or "") for x in labels))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def check_labels(df: pd.DataFrame, taxonomy: Taxonomy, path) -> None:
    seen = {x for v in df["label"] for x in (v if isinstance(v, list) else [v])}
    unknown = sorted(seen - set(taxonomy.names))
    if unknown:
        raise DataError(f"{path}: gold labels {unknown[:5]} are not in the taxonomy {list(taxonomy.names)}")


def _read_umask() -> int:
    """The process's umask, read once at import (setting it to read it is not thread-safe later on)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    The file gets the mode a plain ``open`` would give it (0666 less the umask, so a group that serves
    the model can read the run folder), and is flushed to disk before the rename, so a file that has
    its final name is whole even after a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(path: Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=float) + "\n")


def write_frame(path: Path, df: pd.DataFrame) -> Path:
    """Write by suffix: .parquet, .csv or .jsonl."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
    return path
