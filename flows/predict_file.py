"""Label a whole file with a student, chunk by chunk: memory stays flat however many rows the file holds.

Rows that cannot be labelled are skipped and reported instead of refusing the file; the output is
written to a temporary file beside it and renamed into place only when every chunk succeeded.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from labelloop.flows.io import atomic_path, id_text, text_problem
from labelloop.flows.predict import Student, load_model
from labelloop.programs.errors import DataError

# Why a row was skipped: the keys of the summary's ``skipped`` and the ``reason`` column of the report.
REASONS = {
    "invalid_json": "a JSONL line that is not valid JSON",
    "not_an_object": "a JSONL line that holds JSON but not an object",
    "wrong_field_count": "a CSV row with more or fewer fields than the header",
    "missing_id": "no id (absent, null or empty)",
    "invalid_id": "an id that is a list or an object",
    "empty_text": "no text (absent, null, empty or blank)",
    "non_string_text": "a text that is not a string (a number, a list, ...)",
    "unusable_id": "an id holding a NUL character or a lone surrogate (not valid Unicode)",
    "unusable_text": "a text holding a NUL character or a lone surrogate, or longer than labelloop accepts",
    "duplicate_id": "an id already labelled earlier in the file (the first row with it is kept)",
}
REPORT_ROWS = 1000  # rows listed in <output>.skipped.csv; the summary counts every one
EXAMPLES = 5  # skipped rows shown in the summary
OUTPUTS = (".csv", ".jsonl", ".json", ".parquet")
_ABSENT = object()


def skipped_report_path(output: Path | str) -> Path:
    """Where ``predict_file`` lists the rows it skipped: ``<output>.skipped.csv``."""
    output = Path(output)
    return output.with_name(output.name + ".skipped.csv")


def predict_file(model: Path | str | Student, data: Path | str, output: Path | str, *, id_column: str = "id",
                 text_column: str = "text", threshold=None, chunk_size: int = 10_000, show_progress: bool = True) -> dict:
    """Label the records of ``data`` (CSV, JSONL, Parquet or a saved dataset folder) into ``output``.

    Reads ``chunk_size`` rows at a time, predicts them and appends them to ``output`` (CSV, JSONL or
    Parquet, by its suffix; columns ``id``, ``text`` and the task's prediction columns), so memory does
    not grow with the file (except 8 bytes per id, to find repeated ids). Rows without an id, without
    text, with a text that is not a string, JSONL lines that are not JSON objects, CSV rows with the
    wrong number of fields and repeated ids are skipped and counted; the first ``REPORT_ROWS`` of them
    are listed in ``<output>.skipped.csv`` (``row``: the line in the file for CSV and JSONL, the header
    being line 1; the row from 1 for Parquet). A file without the id or text column raises DataError.
    The output (and the report) appear only once every row is done: an error or Ctrl-C leaves nothing.

    Returns:
        ``{output, rows_in, rows_written, skipped: {reason: count}, skipped_report, examples, seconds,
        rows_per_s}``; ``skipped_report`` is None when no row was skipped, ``examples`` the first skipped
        rows (``row``, ``id``, ``reason``).
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise DataError(f"chunk_size must be a positive whole number, got {chunk_size!r}")
    data, output = Path(data), Path(output)
    suffix = output.suffix.lower()
    if suffix not in OUTPUTS:
        raise DataError(f"{output}: unsupported output type {suffix!r}; expected .csv, .jsonl or .parquet")
    if output.resolve() == data.resolve():
        raise DataError(f"{output}: the output would replace the data file it is read from; name another file")
    try:
        if output.is_dir():
            raise DataError(f"{output} is a folder; name the output file (.csv, .jsonl or .parquet)")
    except OSError as exc:  # a name too long for the file system
        raise DataError(f"cannot write {output}: {exc.strerror or exc}") from None
    source = _source(data, id_column, text_column, chunk_size)  # checks the file and its columns first
    student = model if isinstance(model, Student) else load_model(model)
    multilabel = student.task.name == "multilabel"
    started = time.perf_counter()
    seen = SeenIds()
    counts: Counter = Counter()
    report: list[tuple] = []
    rows_in = rows_written = 0
    with atomic_path(output) as tmp:
        with _Writer(tmp, suffix, multilabel) as write, _progress(show_progress, source.total) as bar:
            task = bar.add_task(f"predict {data.name}", total=source.total)
            for rows, ids, texts, skipped in source.chunks():
                rows_in += len(rows) + len(skipped)  # skipped so far: rows the reader could not split
                keep_rows, keep_ids, keep_texts = [], [], []
                for row, rid, text in zip(rows, ids, texts):
                    reason = _id_problem(rid) or _text_problem(text)
                    if reason:
                        skipped.append((row, rid, reason))
                    else:
                        keep_rows.append(row)
                        keep_ids.append(id_text(rid))
                        keep_texts.append(text)
                repeated = seen.add(keep_ids)
                if repeated.any():
                    skipped += [(keep_rows[i], keep_ids[i], "duplicate_id") for i in np.flatnonzero(repeated)]
                    keep_ids = [x for x, r in zip(keep_ids, repeated) if not r]
                    keep_texts = [x for x, r in zip(keep_texts, repeated) if not r]
                if keep_ids:
                    frame = pd.DataFrame({"id": keep_ids, "text": keep_texts})
                    for column, values in student.predict(keep_texts, threshold).items():
                        frame[column] = values
                    write(frame)
                rows_written += len(keep_ids)
                if skipped:
                    skipped.sort(key=lambda x: x[0])
                    counts.update(reason for _, _, reason in skipped)
                    report.extend(skipped[:REPORT_ROWS - len(report)])
                bar.update(task, completed=rows_in)
        source.finish(rows_in)
        report_path = skipped_report_path(output)
        if counts:
            _write_report(report_path, report)
    if not counts:
        report_path.unlink(missing_ok=True)  # a report from an earlier run of this output would mislead
    seconds = time.perf_counter() - started
    return {"output": str(output), "rows_in": rows_in, "rows_written": rows_written,
            "skipped": dict(counts.most_common()), "skipped_report": str(report_path) if counts else None,
            "examples": [{"row": row, "id": _shown(rid), "reason": reason} for row, rid, reason in report[:EXAMPLES]],
            "seconds": round(seconds, 3), "rows_per_s": round(rows_in / seconds, 1) if seconds > 0 else None}


class SeenIds:
    """The ids met so far, as 8-byte BLAKE2b digests in a few sorted numpy arrays (8 MB per million ids).

    Two different ids share a digest with probability about n²/2⁶⁵ (3e-8 for a million): the later one
    would then be reported as a duplicate.
    """

    def __init__(self):
        self.runs: list[np.ndarray] = []  # sorted, disjoint; each more than twice the size of the next

    def __len__(self) -> int:
        return sum(run.size for run in self.runs)

    def add(self, ids: list[str]) -> np.ndarray:
        """Record ``ids``; True where an id was seen before (earlier in ``ids`` or in an earlier call)."""
        if not ids:
            return np.zeros(0, dtype=bool)
        digests = b"".join(hashlib.blake2b(x.encode("utf-8", "surrogatepass"), digest_size=8).digest() for x in ids)
        hashes = np.frombuffer(digests, dtype=np.uint64)
        repeated = np.ones(hashes.size, dtype=bool)
        repeated[np.unique(hashes, return_index=True)[1]] = False  # the first of each value is new here
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, hashes), run.size - 1)
            repeated |= run[at] == hashes
        new = np.sort(hashes[~repeated])
        if new.size:
            self.runs.append(new)
        while len(self.runs) > 1 and self.runs[-2].size <= 2 * self.runs[-1].size:
            last = self.runs.pop()
            self.runs[-1] = np.sort(np.concatenate([self.runs[-1], last]))
        return repeated


def _id_problem(value) -> str | None:
    if value is _ABSENT or value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing_id"
    if isinstance(value, str):
        return ("unusable_id" if text_problem(value) else None) if value.strip() else "missing_id"
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return "invalid_id"
    return None


def _text_problem(value) -> str | None:
    if isinstance(value, str):
        return ("unusable_text" if text_problem(value) else None) if value.strip() else "empty_text"
    if value is _ABSENT or value is None or (isinstance(value, float) and math.isnan(value)):
        return "empty_text"
    return "non_string_text"


def _shown(value):
    """An id as the report shows it: None when there was none, else text (at most 200 characters)."""
    if value is _ABSENT or value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return id_text(value)[:200].encode("utf-8", "backslashreplace").decode("utf-8")


def _write_report(path: Path, rows: list[tuple]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["row", "id", "reason"])
        for row, rid, reason in rows:
            out.writerow([row, _shown(rid) or "", reason])


# --- reading ---------------------------------------------------------------------------------------------


class _Source:
    """A file's rows in chunks of ``(row numbers, ids, texts, skipped)``; ``skipped`` lists
    ``(row, id, reason)`` for rows the reader could not even split into an id and a text."""

    total: int | None = None  # rows, when the format knows it without reading the file

    def __init__(self, path: Path, id_column: str, text_column: str, chunk_size: int):
        self.path, self.id_column, self.text_column, self.chunk_size = path, id_column, text_column, chunk_size

    def chunks(self) -> Iterator[tuple[list, list, list, list]]:
        raise NotImplementedError

    def finish(self, rows_in: int) -> None:
        """Called after the last chunk (checks that need the whole file)."""

    def require(self, columns: list[str]) -> None:
        missing = [c for c in (self.id_column, self.text_column) if c not in columns]
        if missing:
            raise DataError(f"{self.path}: expected column(s) {missing}, found {list(columns)}")


class _CsvSource(_Source):
    def __init__(self, *args):
        super().__init__(*args)
        try:
            with self._open() as handle:
                self.header = next(csv.reader(handle), None)
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path} is not UTF-8 text: {exc}") from None
        except csv.Error as exc:
            raise DataError(f"{self.path}, line 1: not valid CSV: {exc}") from None
        if not self.header:
            raise DataError(f"{self.path}: empty file; expected a header row naming the columns "
                            f"{self.id_column!r} and {self.text_column!r}")
        self.require(self.header)

    def _open(self):
        return open(self.path, encoding="utf-8-sig", newline="")

    def chunks(self):
        if csv.field_size_limit() < (1 << 30):  # csv refuses fields over 128 KiB by default; a long text is fine
            csv.field_size_limit(1 << 30)
        width, i, t = len(self.header), self.header.index(self.id_column), self.header.index(self.text_column)
        line = 0
        try:
            with self._open() as handle:
                reader = csv.reader(handle)
                next(reader)
                line = reader.line_num + 1
                rows, ids, texts, skipped = [], [], [], []
                for record in reader:
                    start, line = line, reader.line_num + 1
                    if not record:  # a blank line
                        continue
                    if len(record) != width:
                        skipped.append((start, record[i] if i < len(record) else _ABSENT, "wrong_field_count"))
                    else:
                        rows.append(start)
                        ids.append(record[i])
                        texts.append(record[t])
                    if len(rows) + len(skipped) >= self.chunk_size:
                        yield rows, ids, texts, skipped
                        rows, ids, texts, skipped = [], [], [], []
                if rows or skipped:
                    yield rows, ids, texts, skipped
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path} is not UTF-8 text: {exc}") from None
        except csv.Error as exc:
            raise DataError(f"{self.path}, line {line}: not valid CSV: {exc}") from None


class _JsonlSource(_Source):
    """One JSON object per line; blank lines are passed over. The id and text are keys of the objects:
    a file where no object has one of them raises DataError (once read, before anything is written)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.has_id = self.has_text = False
        self.first_keys: list | None = None

    def chunks(self):
        rows, ids, texts, skipped = [], [], [], []
        try:
            with open(self.path, encoding="utf-8-sig") as handle:
                for n, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except (ValueError, RecursionError):  # not JSON, nested too deeply, a number too long to read
                        skipped.append((n, _ABSENT, "invalid_json"))
                    else:
                        if isinstance(obj, dict):
                            if self.first_keys is None:
                                self.first_keys = list(obj)
                            rid, text = obj.get(self.id_column, _ABSENT), obj.get(self.text_column, _ABSENT)
                            self.has_id |= rid is not _ABSENT
                            self.has_text |= text is not _ABSENT
                            rows.append(n)
                            ids.append(rid)
                            texts.append(text)
                        else:
                            skipped.append((n, _ABSENT, "not_an_object"))
                    if len(rows) + len(skipped) >= self.chunk_size:
                        yield rows, ids, texts, skipped
                        rows, ids, texts, skipped = [], [], [], []
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path} is not UTF-8 text: {exc}") from None
        if rows or skipped:
            yield rows, ids, texts, skipped

    def finish(self, rows_in):
        missing = [c for c, found in ((self.id_column, self.has_id), (self.text_column, self.has_text)) if not found]
        if self.first_keys is not None and missing:
            raise DataError(f"{self.path}: expected key(s) {missing} in the JSON objects, but no line has them "
                            f"(the first object's keys: {self.first_keys[:20]})")


class _ColumnsSource(_Source):
    """Parquet, or a dataset saved with ``datasets``: columns read in record batches."""

    def _chunks(self, batches):
        row, batches = 0, iter(batches)
        while True:
            try:
                ids, texts = next(batches)
            except StopIteration:
                return
            except Exception as exc:  # pyarrow and datasets raise their own errors for pages that are damaged
                raise DataError(f"{self.path}: the rows after row {row} cannot be read (a damaged file?): {exc}") from None
            rows = list(range(row + 1, row + len(ids) + 1))
            row += len(ids)
            yield rows, ids, texts, []


class _ParquetSource(_ColumnsSource):
    def __init__(self, *args):
        super().__init__(*args)
        import pyarrow.parquet as pq

        try:
            self.file = pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises its own errors for a file that is not Parquet
            raise DataError(f"{self.path} is not a Parquet file: {exc}") from None
        self.require(self.file.schema_arrow.names)
        self.total = self.file.metadata.num_rows

    def chunks(self):
        columns = [self.id_column, self.text_column]
        batches = self.file.iter_batches(batch_size=self.chunk_size, columns=columns)
        yield from self._chunks((b.column(columns[0]).to_pylist(), b.column(columns[1]).to_pylist()) for b in batches)


class _DatasetSource(_ColumnsSource):
    def __init__(self, *args):
        super().__init__(*args)
        from datasets import load_from_disk

        try:
            ds = load_from_disk(str(self.path))
        except Exception as exc:  # datasets raises FileNotFoundError and its own errors for other folders
            raise DataError(f"{self.path} is not a saved dataset folder: {exc}") from None
        if hasattr(ds, "keys"):  # a DatasetDict: take the first split, as read_records does
            ds = ds[next(iter(ds.keys()))]
        self.require(ds.column_names)
        self.dataset, self.total = ds.select_columns([self.id_column, self.text_column]), len(ds)

    def chunks(self):
        batches = self.dataset.iter(batch_size=self.chunk_size)
        yield from self._chunks((b[self.id_column], b[self.text_column]) for b in batches)


def _source(path: Path, id_column: str, text_column: str, chunk_size: int) -> _Source:
    try:
        found = path.exists()
    except OSError as exc:  # a name too long for the file system
        raise DataError(f"data file {path} cannot be read: {exc.strerror or exc}") from None
    if not found:
        raise DataError(f"data file {path} does not exist")
    if path.is_dir():
        return _DatasetSource(path, id_column, text_column, chunk_size)
    kinds = {".csv": _CsvSource, ".jsonl": _JsonlSource, ".json": _JsonlSource, ".parquet": _ParquetSource}
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; expected .csv, .jsonl, .parquet or a saved "
                        "dataset folder")
    return kind(path, id_column, text_column, chunk_size)


# --- writing ---------------------------------------------------------------------------------------------


class _Writer:
    """A context giving ``write(frame)`` that appends a chunk of predictions to ``path`` in its format.

    Multi-label ``labels`` are lists in JSONL and Parquet and ``|``-joined names in CSV (as multi-label
    gold is read from CSV). A file with no rows still has its columns (CSV header, Parquet schema).
    """

    def __init__(self, path: Path, suffix: str, multilabel: bool):
        self.path, self.suffix, self.multilabel = path, suffix, multilabel
        self.columns = ["id", "text", *(("labels", "top_label") if multilabel else ("label",)), "confidence", "abstain"]
        self.handle = self.parquet = None
        self.rows = 0

    def __enter__(self):
        if self.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = {"labels": pa.list_(pa.string()), "confidence": pa.float64(), "abstain": pa.bool_()}
            self.schema = pa.schema([(c, types.get(c, pa.string())) for c in self.columns])
            self.parquet = pq.ParquetWriter(self.path, self.schema)
        else:
            self.handle = open(self.path, "w", encoding="utf-8", newline="")
        return self.write

    def write(self, frame: pd.DataFrame) -> None:
        frame = frame[self.columns]
        if self.parquet is not None:
            import pyarrow as pa

            self.parquet.write_table(pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False))
        elif self.suffix == ".csv":
            if self.multilabel:
                frame = frame.assign(labels=["|".join(x) for x in frame["labels"]])
            frame.to_csv(self.handle, header=self.rows == 0, index=False)
        else:
            frame.to_json(self.handle, orient="records", lines=True, force_ascii=False)
        self.rows += len(frame)

    def __exit__(self, *exc):
        if self.parquet is not None:
            self.parquet.close()
        else:
            if self.suffix == ".csv" and self.rows == 0 and exc[0] is None:
                csv.writer(self.handle).writerow(self.columns)
            self.handle.close()
        return False


def _progress(show: bool, total: int | None):
    """A rich progress bar over rows (with a total and time left when the format gives the row count)."""
    if not show:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn()]
    if total is not None:
        columns += [MofNCompleteColumn(), TimeRemainingColumn()]
    else:
        columns += [TextColumn("{task.completed:,.0f} rows"), TimeElapsedColumn()]
    bar = Progress(*columns, transient=True)
    if not (bar.console.is_terminal or bar.console.is_jupyter):  # a log or a pipe: no bar, not even its blank line
        return _NoProgress()
    return bar


class _NoProgress(nullcontext):
    def __enter__(self):
        return self

    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass
