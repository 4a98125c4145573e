"""`labelloop predict` streams: chunked reading and writing, bad rows skipped and reported, output all or nothing."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import labelloop
from labelloop.flows.cli import app
from labelloop.flows.predict import Student, load_model
from labelloop.flows.predict_file import SeenIds, predict_file, skipped_report_path
from labelloop.programs.errors import DataError
from tests.conftest import EXAMPLE


@pytest.fixture(scope="module")
def student(trained_run) -> Student:
    return load_model(trained_run)


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    return pd.read_json(EXAMPLE / "records.jsonl", lines=True, dtype={"id": str})[["id", "text"]]


def _write(frame: pd.DataFrame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def _read(path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"id": str, "text": str, "label": str}, keep_default_na=False)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, lines=True, dtype={"id": str})


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("fmt", [".csv", ".jsonl", ".parquet"])
def test_a_file_gets_the_predictions_predict_gives_ids_in_order(student, records, tmp_path, fmt):
    data = _write(records, tmp_path / f"in{fmt}")
    out = tmp_path / f"out{fmt}"
    summary = predict_file(student, data, out, chunk_size=64, show_progress=False)
    assert summary["rows_in"] == summary["rows_written"] == len(records) and summary["skipped"] == {}
    assert summary["skipped_report"] is None and not skipped_report_path(out).exists()
    assert summary["rows_per_s"] > 0 and summary["output"] == str(out)
    got, expected = _read(out), labelloop.predict(student, records)
    assert list(got.columns) == ["id", "text", "label", "confidence", "abstain"]
    assert got["id"].tolist() == records["id"].tolist() and got["text"].tolist() == records["text"].tolist()
    assert got["label"].tolist() == expected["label"].tolist()
    assert got["abstain"].astype(bool).tolist() == expected["abstain"].tolist()
    assert np.allclose(got["confidence"], expected["confidence"], atol=1e-9)
    assert _leftovers(tmp_path) == []


def test_many_small_chunks_write_what_one_chunk_writes(student, records, tmp_path):
    data = _write(records, tmp_path / "in.jsonl")
    predict_file(student, data, tmp_path / "one.parquet", chunk_size=10_000, show_progress=False)
    predict_file(student, data, tmp_path / "many.parquet", chunk_size=7, show_progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "many.parquet"))
    predict_file(student, data, tmp_path / "one.csv", chunk_size=10_000, show_progress=False)
    predict_file(student, data, tmp_path / "many.csv", chunk_size=1, show_progress=False)
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "many.csv").read_text()


def test_bad_jsonl_lines_are_skipped_and_reported_by_line(student, tmp_path):
    lines = ['{"id": "a", "text": "I was charged twice, refund please"}',  # 1
             '{"id": null, "text": "no id here"}',  # 2
             '{"id": "b", "text": "   "}',  # 3
             "[1, 2]",  # 4
             "",  # 5: blank, passed over
             '{"id": "c", "text": "where is my parc',  # 6
             '{"id": "a", "text": "the same id again"}',  # 7
             '{"id": 7, "text": "my parcel never arrived"}',  # 8
             '{"id": "d", "text": 42}',  # 9
             '{"text": "no id key"}',  # 10
             '{"id": ["x"], "text": "a list for an id"}',  # 11
             '{"id": 7.0, "text": "seven again, as a float"}']  # 12
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    summary = predict_file(student, data, out, chunk_size=3, show_progress=False)
    assert _read(out)["id"].tolist() == ["a", "7"]
    assert summary["rows_in"] == 11 and summary["rows_written"] == 2
    assert summary["skipped"] == {"missing_id": 2, "empty_text": 1, "not_an_object": 1, "invalid_json": 1,
                                  "duplicate_id": 2, "non_string_text": 1, "invalid_id": 1}
    report = pd.read_csv(skipped_report_path(out), dtype=str, keep_default_na=False)
    assert summary["skipped_report"] == str(skipped_report_path(out))
    assert report.to_dict("records") == [
        {"row": "2", "id": "", "reason": "missing_id"}, {"row": "3", "id": "b", "reason": "empty_text"},
        {"row": "4", "id": "", "reason": "not_an_object"}, {"row": "6", "id": "", "reason": "invalid_json"},
        {"row": "7", "id": "a", "reason": "duplicate_id"}, {"row": "9", "id": "d", "reason": "non_string_text"},
        {"row": "10", "id": "", "reason": "missing_id"}, {"row": "11", "id": "['x']", "reason": "invalid_id"},
        {"row": "12", "id": "7", "reason": "duplicate_id"}]
    assert summary["examples"][:2] == [{"row": 2, "id": None, "reason": "missing_id"},
                                       {"row": 3, "id": "b", "reason": "empty_text"}]
    assert len(summary["examples"]) == 5


def test_bad_csv_rows_are_skipped_and_reported_by_line(student, tmp_path):
    data = tmp_path / "in.csv"
    data.write_text('id,text\n'
                    'a,"refund, please:\nI was charged twice"\n'  # lines 2-3: one record over two lines
                    ',no id\n'  # 4
                    'b,   \n'  # 5
                    'c,too,many\n'  # 6
                    '\n'  # 7: blank, passed over
                    'a,same id\n'  # 8
                    'NA,my parcel never arrived\n', encoding="utf-8")  # 9: "NA" is an id, not a null
    out = tmp_path / "out.csv"
    summary = predict_file(student, data, out, show_progress=False)
    got = _read(out)
    assert got["id"].tolist() == ["a", "NA"] and got["text"][0] == "refund, please:\nI was charged twice"
    assert summary["skipped"] == {"missing_id": 1, "empty_text": 1, "wrong_field_count": 1, "duplicate_id": 1}
    report = pd.read_csv(skipped_report_path(out), dtype=str, keep_default_na=False)
    assert report.values.tolist() == [["4", "", "missing_id"], ["5", "b", "empty_text"],
                                      ["6", "c", "wrong_field_count"], ["8", "a", "duplicate_id"]]


def test_parquet_nulls_and_whole_number_ids(student, tmp_path):
    frame = pd.DataFrame({"id": pd.array([1, None, 3, 3], dtype="Int64"),
                          "text": ["refund me", "parcel lost", None, "parcel late"], "extra": [1, 2, 3, 4]})
    data = _write(frame, tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    summary = predict_file(student, data, out, show_progress=False)
    assert _read(out)["id"].tolist() == ["1", "3"] and summary["rows_in"] == 4
    assert [(x["row"], x["reason"]) for x in summary["examples"]] == [(2, "missing_id"), (3, "empty_text")]


def test_other_column_names_are_read_and_written_as_id_and_text(student, records, tmp_path):
    data = _write(records.rename(columns={"id": "doc", "text": "body"}), tmp_path / "in.csv")
    predict_file(student, data, tmp_path / "out.csv", id_column="doc", text_column="body", show_progress=False)
    assert _read(tmp_path / "out.csv")["id"].tolist() == records["id"].tolist()


@pytest.mark.parametrize("fmt", [".csv", ".jsonl", ".parquet"])
def test_a_missing_text_column_refuses_the_file_and_writes_nothing(student, records, tmp_path, fmt):
    data = _write(records.rename(columns={"text": "body"}), tmp_path / f"in{fmt}")
    out = tmp_path / "out.csv"
    with pytest.raises(DataError, match=r"\['text'\]"):
        predict_file(student, data, out, show_progress=False)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_an_error_midway_leaves_no_output_and_no_temporary_file(student, records, tmp_path, monkeypatch):
    data = _write(records, tmp_path / "in.jsonl")
    out = tmp_path / "out.parquet"
    calls = []
    predict = student.predict

    def failing(texts, threshold=None):
        calls.append(len(texts))
        if len(calls) == 2:
            raise RuntimeError("the second chunk fails")
        return predict(texts, threshold)

    monkeypatch.setattr(student, "predict", failing)
    with pytest.raises(RuntimeError, match="second chunk"):
        predict_file(student, data, out, chunk_size=50, show_progress=False)
    assert not out.exists() and _leftovers(tmp_path) == []

    def interrupted(texts, threshold=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(student, "predict", interrupted)
    out.write_text("an earlier output")
    with pytest.raises(KeyboardInterrupt):
        predict_file(student, data, out, chunk_size=50, show_progress=False)
    assert out.read_text() == "an earlier output" and _leftovers(tmp_path) == []


def test_the_data_file_is_never_the_output(student, records, tmp_path):
    data = _write(records, tmp_path / "in.csv")
    with pytest.raises(DataError, match="would replace"):
        predict_file(student, data, tmp_path / "." / "in.csv", show_progress=False)
    assert _read(data).equals(records)


def test_a_clean_rerun_removes_the_earlier_skipped_report(student, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "a", "text": "refund"}\n{"id": "a", "text": "refund again"}\n')
    out = tmp_path / "out.jsonl"
    assert predict_file(student, data, out, show_progress=False)["skipped"] == {"duplicate_id": 1}
    assert skipped_report_path(out).exists()
    data.write_text('{"id": "a", "text": "refund"}\n')
    predict_file(student, data, out, show_progress=False)
    assert not skipped_report_path(out).exists()


@pytest.mark.parametrize("fmt", [".csv", ".jsonl", ".parquet"])
def test_an_empty_file_writes_an_empty_output(student, tmp_path, fmt):
    data = tmp_path / "in.jsonl"
    data.write_text("")
    out = tmp_path / f"out{fmt}"
    summary = predict_file(student, data, out, show_progress=False)
    assert summary["rows_in"] == 0 and summary["rows_written"] == 0 and out.exists()
    if fmt != ".jsonl":
        assert list(_read(out).columns) == ["id", "text", "label", "confidence", "abstain"]


@pytest.mark.parametrize("fmt", [".csv", ".jsonl", ".parquet"])
def test_multilabel_predictions_are_lists_and_joined_names_in_csv(student, records, tmp_path, fmt):
    info = {**student.info, "task": "multilabel", "calibration": {"thresholds": [0.2, 0.2, 0.2]}}
    multi = Student(student.pipeline, info, student.path)
    data = _write(records, tmp_path / "in.parquet")
    out = tmp_path / f"out{fmt}"
    predict_file(multi, data, out, chunk_size=50, show_progress=False)
    got, expected = _read(out), multi.predict(records["text"].tolist())
    assert list(got.columns) == ["id", "text", "labels", "top_label", "confidence", "abstain"]
    labels = [x.split("|") if x else [] for x in got["labels"]] if fmt == ".csv" else [list(x) for x in got["labels"]]
    assert labels == expected["labels"] and got["top_label"].tolist() == expected["top_label"]


def test_seen_ids_finds_every_repeat_across_many_calls():
    rng = random.Random(0)
    ids = [f"id{rng.randrange(5000)}" for _ in range(20_000)]
    seen, found = SeenIds(), []
    for start in range(0, len(ids), 333):
        found += seen.add(ids[start:start + 333]).tolist()
    earlier, truth = set(), []
    for x in ids:
        truth.append(x in earlier)
        earlier.add(x)
    assert found == truth and len(seen) == len(set(ids)) and len(seen.runs) <= 16


def test_the_command_line_streams_and_reports(trained_run, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "a", "text": "refund please"}\n{"id": "a", "text": "again"}\n[1]\n'
                    '{"id": "b", "text": "parcel lost"}\n')
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["predict", str(trained_run), str(data), "-o", str(out), "--chunk-size", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 predictions" in result.output and "4 rows read" in result.output
    assert "duplicate_id 1" in result.output and "not_an_object 1" in result.output
    assert "out.csv.skipped.csv" in result.output
    assert _read(out)["id"].tolist() == ["a", "b"]
    result = CliRunner().invoke(app, ["predict", str(trained_run), str(data), "-o", str(tmp_path / "o.csv"),
                                      "--text", "body"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "['body']" in result.output
    assert not (tmp_path / "o.csv").exists()
    result = CliRunner().invoke(app, ["predict", str(trained_run), str(data), "-o", str(out), "--chunk-size", "0"])
    assert result.exit_code == 2 and "chunk-size" in result.output


def test_a_saved_dataset_folder_streams_too(student, records, tmp_path):
    from datasets import Dataset

    Dataset.from_pandas(records).save_to_disk(str(tmp_path / "ds"))
    summary = predict_file(student, tmp_path / "ds", tmp_path / "out.csv", chunk_size=50, show_progress=False)
    assert summary["rows_written"] == len(records) and _read(tmp_path / "out.csv")["id"].tolist() == records["id"].tolist()


def test_ctrl_c_on_the_command_line_says_nothing_was_written(trained_run, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("labelloop.flows.predict_file.predict_file", interrupted)
    result = CliRunner().invoke(app, ["predict", str(trained_run), "in.csv", "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 130 and "nothing was written" in result.output and "LLM" not in result.output


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_texts_and_ids_that_are_not_valid_unicode_or_hold_nul_are_skipped(student, tmp_path, fmt):
    lines = ['{"id": "a", "text": "refund please"}', '{"id": "b", "text": "bad \\ud800 text"}',
             '{"id": "c", "text": "nul \\u0000 in"}', '{"id": "d\\udfff", "text": "fine"}']
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / f"out.{fmt}"
    summary = predict_file(student, data, output, show_progress=False)
    assert summary["rows_written"] == 1 and summary["skipped"] == {"unusable_text": 2, "unusable_id": 1}
    report = pd.read_csv(skipped_report_path(output), dtype=str)
    assert report["id"].tolist() == ["b", "c", "d\\udfff"]  # shown escaped, never a crash on writing
