"""Property-based fuzzing of everything labelloop reads from outside: configs, records, taxonomies, LLM answers.

The property, for every target: any input gives a valid result or a labelloop error (``LabelloopError``)
with a message; never another exception (a traceback), and never a partial output file. Each target is a
strategy and a ``check`` that raises when the property breaks; ``TARGETS`` lists them, the tests below
draw a bounded, seeded number of cases of each, and ``benchmarks/fuzz.py`` runs the same targets longer.
The regression tests at the end spell out the smallest input of each defect fuzzing found.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelloop.flows.config import (
    BootstrapSpec,
    DataSpec,
    LLMBudgetSpec,
    LMSpec,
    OptimizeSpec,
    ProjectConfig,
    StudentSpec,
    load_config,
    parse_config,
)
from labelloop.flows.io import read_records, read_taxonomy, text_problem
from labelloop.labelers.base import LABELER_TYPES
from labelloop.labelers.irr import IRRLabeler
from labelloop.labelers.labels import ABSTAIN, Taxonomy
from labelloop.labelers.llm import answer_ids, prompt_labeler, zero_shot_labeler
from labelloop.programs.choice import option_probabilities
from labelloop.programs.errors import ConfigError, DataError, LabelloopError, TaxonomyError
from labelloop.programs.irr import _clean, chunk_text
from labelloop.programs.taxonomy_rules import Constraints, apply_edits, copied_summary, normalise, validate_taxonomy

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def fuzz(examples: int) -> settings:
    """Seeded (derandomized), no example database, no deadline: the same cases on every machine and run."""
    return settings(FUZZ, max_examples=examples)


def outcome(fn, *args, **kwargs):
    """``fn``'s result, or the labelloop error it raised (which must say something); any other exception escapes."""
    try:
        return fn(*args, **kwargs)
    except LabelloopError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return exc


# --- strategies -------------------------------------------------------------------------------------------

ODD_STRINGS = ["", " ", "\t\n", "\x00", "a\x00b", "\ud800", "x\udcff", "\ufeff", "\ufeffid", "é", "🙂", "1", "1.0", "-0",
               "nan", "NaN", "null", "None", "true", "yes", "~", "id", "text", "label", "a", "b", "../x", "a/b", ".", "x" * 300]
strings = st.one_of(st.text(max_size=24), st.sampled_from(ODD_STRINGS))
numbers = st.one_of(st.integers(-3, 300), st.integers(), st.integers(-10**40, 10**40), st.floats(),
                    st.sampled_from([0, 1, -1, 0.5, 1e308, -1e308, math.inf, -math.inf, math.nan]))
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
json_like = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(strings, inner, max_size=4)), max_leaves=12)

# config values: plausible ones (so validation gets deep) and anything at all
PLAUSIBLE = st.sampled_from(["local", "openai/gpt-4o-mini", "model.gguf", "tfidf", "embeddings", "finetune", "multilabel",
                             "multiclass", "snorkel", "majority", "batch", "content_free", "list", "scores", "bm25", "hybrid",
                             "always", "on_change", "records.csv", "records.jsonl", "taxonomy.yaml", "lfs.py", "a", "b",
                             "abstain", "yes", "no", "billing", 0, 1, 2, 3, 26, 27, 0.0, 0.5, 0.95, 1.0, -1, True, False, None])
values = st.one_of(PLAUSIBLE, json_like)
SECTIONS = {"data": DataSpec, "gold": DataSpec, "test": DataSpec, "lm": LMSpec, "student": StudentSpec,
            "optimize": OptimizeSpec, "bootstrap": BootstrapSpec, "llm_budget": LLMBudgetSpec}
LABELER_KEYS = sorted({k for spec in LABELER_TYPES.values() for k in spec.model_fields})
BASE_CONFIG = {"name": "fuzz", "data": "records.csv", "taxonomy": [{"name": "a"}, {"name": "b"}],
               "labelers": [{"type": "zero_shot"}]}


def section(model) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional={k: values for k in model.model_fields})


labeler = st.fixed_dictionaries({"type": st.one_of(st.sampled_from(sorted(LABELER_TYPES)), json_like)},
                                optional={k: st.one_of(values, st.lists(values, max_size=3),
                                                       st.dictionaries(strings, values, max_size=3))
                                          for k in LABELER_KEYS if k != "type"})
taxonomy_label = st.fixed_dictionaries({"name": st.one_of(st.sampled_from(["a", "b", "c"]), values)},
                                       optional={"description": values, "examples": json_like})
CONFIG_VALUES = {"labelers": st.one_of(st.lists(st.one_of(labeler, json_like), max_size=3), json_like),
                 "taxonomy": st.one_of(st.lists(st.one_of(taxonomy_label, json_like), max_size=4), values),
                 "student": st.one_of(section(StudentSpec), values,
                                      st.fixed_dictionaries({"abstain": st.dictionaries(
                                          st.sampled_from(["precision", "coverage", "x"]), values, max_size=2)})),
                 **{k: st.one_of(section(model), values) for k, model in SECTIONS.items() if k != "student"}}
config_mapping = st.builds(  # the labelers (where the most code is) replaced more often than the other keys
    lambda base, labelers, over: {**base, **labelers, **over}, st.just(BASE_CONFIG),
    st.one_of(st.just({}), st.fixed_dictionaries({"labelers": CONFIG_VALUES["labelers"]}),
              st.fixed_dictionaries({"labelers": st.lists(labeler, min_size=1, max_size=3)})),
    st.fixed_dictionaries({}, optional={k: CONFIG_VALUES.get(k, values)
                                        for k in [*ProjectConfig.model_fields, "extra"] if k != "labelers"}))


def yaml_text(value, allow_unicode: bool = True) -> str:
    """``value`` as YAML; without ``allow_unicode`` other characters are escapes ("\\uD800" loads as a lone surrogate)."""
    try:
        return yaml.safe_dump(value, allow_unicode=allow_unicode, sort_keys=False)
    except (yaml.YAMLError, UnicodeEncodeError, ValueError, RecursionError):
        return json.dumps(value, default=str)


def mutate(text: str, where: int, cut: int, insert: str) -> str:
    """``text`` with ``cut`` characters at ``where`` replaced by ``insert`` (a fuzzer's byte flips, on text)."""
    where = where % (len(text) + 1)
    return text[:where] + insert + text[where + cut:]


YAML_JUNK = st.sampled_from(["[", "{", "]", ":", "- ", "&a ", "*a", "!!python/object:os.system ", "!!binary ", "\t", "\n",
                             "---\n", "'", '"', "? ", "<<: ", "%YAML 1.1\n", "\x00", "\x85", "\ud800", "9" * 5000, "[" * 2000])


def documents(mapping: st.SearchStrategy) -> st.SearchStrategy:
    """YAML files as bytes: dumps of ``mapping`` (some mutated), random text or bytes, with or without a BOM."""
    dumped = st.builds(yaml_text, mapping, st.booleans())
    text = st.one_of(dumped, dumped, json_like.map(yaml_text), st.text(max_size=200),
                     st.builds(mutate, dumped, st.integers(0, 10**6), st.integers(0, 5), YAML_JUNK),
                     st.sampled_from(["[" * 3000, "labels: " + "9" * 5000, "{a: " * 1500 + "}" * 1500, "labels: !!set {a}"]))
    encoded = st.builds(lambda t, bom: (b"\xef\xbb\xbf" if bom else b"") + t.encode("utf-8", "surrogatepass"),
                        text, st.booleans())
    return st.one_of(encoded, encoded, encoded, st.binary(max_size=200))


# records: rows of JSON-like values under the real column names and others
record_keys = st.sampled_from(["id", "text", "label", "\ufeffid", "meta", "\ud800", ""])
record_values = st.one_of(st.sampled_from(["refund please", "where is my parcel", "x" * 200_001, "a\x00b", "\ud800", "  "]),
                          json_like)
rows = st.lists(st.one_of(st.fixed_dictionaries({"id": st.one_of(st.integers(0, 5), record_values),
                                                 "text": record_values}, optional={"label": record_values}),
                          st.dictionaries(record_keys, record_values, max_size=4)), max_size=8)
jsonl_lines = st.lists(st.one_of(rows.map(lambda r: [json.dumps(x) for x in r]),
                                 st.lists(st.one_of(json_like.map(lambda v: json.dumps(v)), st.text(max_size=30),
                                                    st.sampled_from(["", "[" * 5000, '{"id": ' + "9" * 5000 + "}"])),
                                          max_size=3)), max_size=3).map(lambda parts: [x for p in parts for x in p])


def csv_bytes(rows: list, encoding_errors: str = "surrogatepass") -> bytes:
    """Rows as CSV under the union of their keys (a key a row lacks is an empty field); values as their text."""
    header = list(dict.fromkeys(k for row in rows if isinstance(row, dict) for k in row)) or ["id", "text"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(k, "") if isinstance(row, dict) else row for k in header])
    return out.getvalue().encode("utf-8", encoding_errors)


def parquet_bytes(rows: list) -> bytes | None:
    try:
        buffer = io.BytesIO()
        pd.DataFrame([r for r in rows if isinstance(r, dict)]).to_parquet(buffer)
        return buffer.getvalue()
    except Exception:  # a table pyarrow cannot hold (mixed types): fuzz its reader with bytes instead
        return None


@st.composite
def record_files(draw) -> tuple[str, bytes]:
    """(suffix, bytes) of a records file: CSV, JSONL or Parquet, often hostile, sometimes cut or sprinkled with junk."""
    fmt = draw(st.sampled_from(["csv", "jsonl", "parquet"]))
    if fmt == "jsonl":
        data = "\n".join(draw(jsonl_lines)).encode("utf-8", "surrogatepass")
    elif fmt == "csv":
        data = csv_bytes(draw(rows))
    else:
        data = parquet_bytes(draw(rows)) or draw(st.binary(max_size=100))
    if draw(st.integers(0, 5)) == 0:  # bytes flipped, cut or inserted anywhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=4)) + data[at + draw(st.integers(0, 3)):]
    if fmt != "parquet" and draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return fmt, data


# --- 1. the config loader ---------------------------------------------------------------------------------


def check_parse_config(raw) -> None:
    with tempfile.TemporaryDirectory() as folder:
        got = outcome(parse_config, raw, Path(folder))
    assert isinstance(got, (ProjectConfig, ConfigError)), type(got)


def check_load_config(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_bytes(data)
        got = outcome(load_config, path)
    assert isinstance(got, (ProjectConfig, ConfigError)), type(got)


@st.composite
def frames(draw, columns: tuple[str, ...]) -> pd.DataFrame:
    """Records as a caller's DataFrame: ids and texts (and labels) of any type, often odd."""
    value = {"id": st.one_of(st.integers(0, 9), st.sampled_from(["\ud800", "b\x00", "7"]), record_values),
             "text": record_values, "label": st.one_of(st.sampled_from(["a", "b", "a|b", "\ud800"]), record_values)}
    records = draw(st.lists(st.fixed_dictionaries({c: value[c] for c in columns}), max_size=6))
    try:
        return pd.DataFrame(records, columns=list(columns), dtype=object if draw(st.booleans()) else None)
    except Exception:  # a frame pandas itself cannot build (a lone surrogate in a string column)
        return pd.DataFrame(records, columns=list(columns), dtype=object)


@st.composite
def project_inputs(draw) -> tuple[dict, pd.DataFrame, pd.DataFrame | None]:
    """A dict config (its labelers, taxonomy and task may be wrong), the records and perhaps gold records."""
    raw = draw(config_mapping)
    raw.pop("data", None)
    if draw(st.booleans()):
        raw["task"] = "multilabel"
    return raw, draw(frames(("id", "text"))), draw(st.one_of(st.none(), frames(("id", "text", "label"))))


def check_load_project(inputs) -> None:
    from labelloop.flows.project import Project, load_project

    raw, frame, gold = inputs
    with tempfile.TemporaryDirectory() as folder:
        got = outcome(load_project, raw, base_dir=Path(folder), data=frame, gold=gold)
    assert isinstance(got, (Project, LabelloopError)), type(got)
    if isinstance(got, Project):
        _check_frame(got.splits["train"])


# --- 2. the readers ---------------------------------------------------------------------------------------


def _check_frame(df: pd.DataFrame, multilabel: bool = False) -> None:
    assert list(df.columns[:2]) == ["id", "text"]
    assert all(isinstance(x, str) and text_problem(x) is None for x in df["id"]) and df["id"].is_unique
    assert all(isinstance(t, str) and t.strip() and text_problem(t) is None for t in df["text"])
    if multilabel and "label" in df.columns:
        assert all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in df["label"])


def check_read_records(file: tuple[str, bytes], multilabel: bool = False) -> None:
    fmt, data = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"records.{fmt}"
        path.write_bytes(data)
        got = outcome(read_records, DataSpec(path=path), require_label=multilabel, multilabel=multilabel)
        assert isinstance(got, (pd.DataFrame, DataError)), type(got)
        if isinstance(got, pd.DataFrame):
            _check_frame(got, multilabel)
        if data.startswith(b"\xef\xbb\xbf") and not data.startswith(b"\xef\xbb\xbf" * 2):  # a byte order mark changes nothing
            path.write_bytes(data[3:])
            plain = outcome(read_records, DataSpec(path=path), require_label=multilabel, multilabel=multilabel)
            if isinstance(got, pd.DataFrame):
                pd.testing.assert_frame_equal(got, plain)
            else:
                assert isinstance(plain, DataError), "the file without its byte order mark reads, with it not"


def _json_objects(data: bytes) -> list:
    """The JSON values of a JSONL file's lines, as a reader with universal newlines splits them; [] if not UTF-8."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return []
    out = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        try:
            out.append(json.loads(line))
        except (ValueError, RecursionError):
            pass
    return out


def check_predict_file(student, file: tuple[str, bytes], out_suffix: str, chunk_size: int) -> None:
    """Rows that cannot be labelled are skipped; an error leaves no output, report or temporary file."""
    from labelloop.flows.predict_file import predict_file, skipped_report_path

    fmt, data = file
    with tempfile.TemporaryDirectory() as folder:
        path, out = Path(folder) / f"records.{fmt}", Path(folder) / f"out{out_suffix}"
        path.write_bytes(data)
        got = outcome(predict_file, student, path, out, chunk_size=chunk_size, show_progress=False)
        left = sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp"))
        assert not left, f"temporary files left behind: {left}"
        if isinstance(got, LabelloopError):
            assert isinstance(got, DataError), type(got)
            assert not out.exists() and not skipped_report_path(out).exists(), "an error left an output behind"
            if fmt == "jsonl":  # a JSONL file is refused only when it is not UTF-8 or no line has the id or the text
                objects = [x for x in _json_objects(data) if isinstance(x, dict)]
                assert not (any("id" in x for x in objects) and any("text" in x for x in objects)), \
                    f"a JSONL file with ids and texts was refused instead of its bad rows skipped: {got}"
            return
        assert out.is_file()
        assert got["rows_in"] == got["rows_written"] + sum(got["skipped"].values())
        written = {".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
                   ".jsonl": lambda p: pd.read_json(p, lines=True, dtype={"id": str}) if p.stat().st_size else pd.DataFrame(),
                   ".parquet": pd.read_parquet}[out_suffix](out)
        assert len(written) == got["rows_written"]
        assert (got["skipped_report"] is not None) == bool(got["skipped"]) == skipped_report_path(out).exists()


# --- 3. the taxonomy reader -------------------------------------------------------------------------------


def check_read_taxonomy(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "taxonomy.yaml"
        path.write_bytes(data)
        got = outcome(read_taxonomy, path)
    assert isinstance(got, (Taxonomy, ConfigError)), type(got)
    if isinstance(got, Taxonomy):
        _check_taxonomy(got)


def _check_taxonomy(tax: Taxonomy) -> None:
    assert len(tax.names) >= 2 and len(set(tax.names)) == len(tax.names) == len(tax.descriptions)
    assert all(isinstance(n, str) and n.strip() and text_problem(n) is None for n in tax.names)
    assert all(isinstance(d, str) and text_problem(d) is None for d in tax.descriptions)
    hash(tax)


def check_taxonomy(names, descriptions) -> None:
    got = outcome(Taxonomy, names, descriptions)
    assert isinstance(got, (Taxonomy, ConfigError)), type(got)
    if isinstance(got, Taxonomy):
        _check_taxonomy(got)


taxonomy_files = documents(st.one_of(st.fixed_dictionaries({"labels": st.lists(st.one_of(taxonomy_label, json_like),
                                                                                        max_size=5)}), json_like))
name_lists = st.one_of(st.lists(st.one_of(strings, json_like), max_size=4).map(tuple), json_like)


# --- 4. the LLM answers -----------------------------------------------------------------------------------

OPTIONS = ["yes", "no", "maybe"]
logprob = st.one_of(st.floats(-30, 0), st.floats(), st.sampled_from([1000.0, 1e308, math.nan, -math.inf]), json_like)
alternative = st.one_of(st.fixed_dictionaries({"token": st.one_of(st.sampled_from(["yes", "no", "y", "ma", "", '"', "Yes"]),
                                                                  json_like), "logprob": logprob}), json_like)
token = st.one_of(st.fixed_dictionaries({"token": st.one_of(st.sampled_from(['{"answer": "', "yes", "no", '"}', "{"]),
                                                            json_like),
                                         "logprob": logprob, "top_logprobs": st.one_of(st.lists(alternative, max_size=4),
                                                                                       json_like)}), json_like)
logprobs = st.one_of(st.fixed_dictionaries({"content": st.one_of(st.lists(token, max_size=4), json_like)}), json_like)


def check_option_probabilities(lp) -> None:
    got = option_probabilities(lp, "answer", OPTIONS)
    if got is not None:
        assert list(got) == OPTIONS
        assert all(isinstance(p, float) and math.isfinite(p) and p >= 0 for p in got.values()), got
        assert abs(sum(got.values()) - 1) < 1e-9, got


probability = st.one_of(st.floats(0, 1), st.floats(), json_like)
closed_answer = st.one_of(
    st.none(), json_like,
    st.fixed_dictionaries({"answer": st.one_of(st.sampled_from(["a", "b", "c"]), json_like)},
                          optional={"probs": st.one_of(st.dictionaries(st.sampled_from(["a", "b", "c", "x"]), probability,
                                                                       max_size=3), json_like),
                                    "raw": json_like}))


def _well_formed_probs(probs) -> bool:
    if not probs:
        return True
    if not isinstance(probs, dict):
        return False
    values = [probs.get(o, 0.0) for o in ("a", "b", "c")]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values) \
        and sum(values) > 0


def check_closed_choice(answers: list, calibration: str, threshold: float) -> None:
    """Votes from answers that may be malformed: a malformed answer abstains and counts as invalid."""
    tax = Taxonomy(("a", "b", "c"), ("", "", ""))
    labelers = [zero_shot_labeler(tax, calibration=calibration, threshold=threshold),
                prompt_labeler("q", "Q?", {"a": "a", "b": "abstain", "c": "c"}, tax, calibration=calibration,
                               threshold=threshold)]
    for lf in labelers:
        lf.fit(answers, answers[:3], class_balance=[0.5, 0.3, 0.2])
        votes = lf.votes(answers)
        assert votes.shape == (len(answers),) and set(votes.tolist()) <= {ABSTAIN, 0, 1, 2}
        for answer, vote in zip(answers, votes):
            if not isinstance(answer, dict) or answer.get("answer") not in ("a", "b", "c") \
                    or not _well_formed_probs(answer.get("probs")):
                assert vote == ABSTAIN, (answer, vote)
        assert 0 <= lf.invalid(answers) <= len(answers)
        assert lf.vote_sets(answers, tax).shape == (len(answers), 3)
        for answer in answers:
            p = lf.calibrated(answer.get("probs") if isinstance(answer, dict) else answer)
            assert p.shape == (3,) and np.isfinite(p).all()
    scores = labelers[0].direct_scores(answers, tax)
    assert scores.shape == (len(answers), 3) and set(np.unique(scores)) <= {0.0, 1.0}
    assert set(answer_ids(answers, tax.names).tolist()) <= {ABSTAIN, 0, 1, 2}


irr_names = st.lists(st.one_of(st.sampled_from(["billing", "shipping", "account", "gone"]), json_like), max_size=5)
irr_answer = st.one_of(st.none(), json_like, st.fixed_dictionaries({}, optional={
    "chosen": st.one_of(irr_names, json_like), "candidates": st.one_of(irr_names, json_like),
    "ranking": st.one_of(irr_names, json_like), "guesses": json_like, "invalid": st.one_of(st.integers(0, 3), json_like),
    "failed": json_like, "calls": json_like}))


def check_irr_votes(answers: list) -> None:
    tax = Taxonomy(("billing", "shipping", "account"), ("", "", ""))
    lf = IRRLabeler("irr")
    sets = lf.vote_sets(answers, tax).toarray()
    assert sets.shape == (len(answers), 3) and set(np.unique(sets)) <= {-1, 0, 1}
    votes = lf.votes(answers, tax)
    assert votes.shape == (len(answers),) and set(votes.tolist()) <= {ABSTAIN, 0, 1, 2}
    scores = lf.direct_scores(answers, tax)
    assert scores.shape == (len(answers), 3) and np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()
    assert isinstance(lf.invalid(answers), int) and lf.invalid(answers) >= 0


CURRENT = [{"name": "refunds", "description": "Customers asking for their money back for an order."},
           {"name": "late_parcels", "description": "Parcels that have not arrived by the promised date."}]
edit = st.one_of(json_like, st.fixed_dictionaries({}, optional={
    "action": st.one_of(st.sampled_from(["add", "change", "merge", "remove"]), json_like),
    "labels": st.one_of(st.lists(st.one_of(st.sampled_from(["refunds", "late parcels", "Late Parcels"]), json_like),
                                 max_size=3), json_like),
    "name": st.one_of(st.sampled_from(["Order Tracking", "refunds", ""]), json_like),
    "description": st.one_of(st.sampled_from(["Where an order is and when it comes.", ""]), json_like)}))
label_answer = st.one_of(json_like, st.fixed_dictionaries({}, optional={"name": values, "description": values}))


def _labels_ok(labels) -> None:
    assert isinstance(labels, list)
    assert all(isinstance(x, dict) and isinstance(x["name"], str) and isinstance(x["description"], str) for x in labels)


def check_taxonomy_rules(labels, edits, summaries) -> None:
    """The pure checks a bootstrap step's answers go through: labels and edits of any shape give problems, not crashes."""
    constraints = Constraints(max_labels=4)
    _labels_ok(normalise(labels))
    problems = validate_taxonomy(labels if isinstance(labels, list) else [], constraints)
    assert all(isinstance(p, str) for p in problems)
    new, problems, done = apply_edits(CURRENT, edits)
    _labels_ok(new)
    assert all(isinstance(p, str) for p in problems + done)
    for label in normalise(labels):
        assert all(isinstance(p, str) for p in copied_summary(label, summaries))


def check_irr_text(text: str, max_words, values) -> None:
    got = outcome(chunk_text, text, max_words)
    if isinstance(got, LabelloopError):
        assert not (isinstance(max_words, int) and not isinstance(max_words, bool) and max_words >= 1)
    else:
        assert got and all(isinstance(c, str) for c in got)
        assert " ".join(got).split() == text.split()
        assert all(len(c.split()) <= max_words for c in got)
    cleaned = _clean(values)
    assert all(isinstance(x, str) and x.strip() for x in cleaned)


# the DSPy programs, answered by an LM that says anything at all


class FuzzEngine:
    """A DSPy custom engine that answers each call with the next (text, log-probs) of ``answers``."""

    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens", "logprobs", "top_logprobs", "seed"})

    def __init__(self):
        self.answers: list = []

    def __deepcopy__(self, memo):
        return self

    def complete(self, request):
        from dspy.lm15 import Message, Response, TextPart, Usage

        text, lp = self.answers.pop(0) if self.answers else ("", None)
        return Response(id=None, model="fuzz", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=1, output_tokens=1),
                        logprobs=lp if request.config.logprobs is not None else None)

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self):
        pass


FIELDS = ["answer", "label", "letter", "guesses", "choices", "labels", "edits", "rating", "summary", "name", "description"]
field_value = st.one_of(st.sampled_from(["yes", "no", "a", "b", "A", "B", "C", "billing", "Refunds For Orders"]),
                        st.lists(st.sampled_from(["billing", "shipping", "refund", "account access", "zz"]), max_size=3),
                        st.lists(st.fixed_dictionaries({"name": values, "description": st.one_of(
                            st.just("Customers asking where their parcel is and when it comes."), values)}), max_size=4),
                        st.lists(edit, max_size=3), json_like)
answer_text = st.one_of(st.dictionaries(st.sampled_from(FIELDS), field_value, min_size=1, max_size=3).map(json.dumps),
                        json_like.map(lambda v: json.dumps(v)), st.text(max_size=60),
                        st.builds(mutate, st.dictionaries(st.sampled_from(FIELDS), field_value, max_size=2).map(json.dumps),
                                  st.integers(0, 200), st.integers(0, 3), st.sampled_from(['"', "}", "{", ",", "\\", "\x00"])))


@st.composite
def lm_logprobs(draw):
    """Log-probs as an engine reports them: the tokens where a field's value starts, with alternatives of any value."""
    from dspy._vendor.lm15.types import TokenLogprob, TopLogprob

    number = st.one_of(st.floats(-30, 0), st.floats(allow_nan=True), st.sampled_from([800.0, 1e308]))
    pieces = st.one_of(st.sampled_from(["yes", "no", "a", "b", "A", "B", "", '"', "y"]), st.text(max_size=3))
    tokens = []
    if draw(st.booleans()):
        tokens.append(TokenLogprob(token='{"' + draw(st.sampled_from(["answer", "label", "letter"])) + '": "', logprob=0.0))
    for _ in range(draw(st.integers(0, 3))):
        tops = tuple(TopLogprob(token=draw(pieces), logprob=draw(number)) for _ in range(draw(st.integers(0, 4))))
        tokens.append(TokenLogprob(token=draw(pieces), logprob=draw(number), top=tops))
    return tuple(tokens) if draw(st.integers(0, 4)) else None


lm_answers = st.lists(st.tuples(answer_text, lm_logprobs()), min_size=1, max_size=6)
PROGRAMS = ["question", "zero_shot", "irr_list", "irr_scores", "name", "generate", "update", "review", "summarise"]


class Programs:
    """The DSPy programs that parse LLM answers, built once, with the fuzz engine as their LM."""

    def __init__(self):
        import dspy

        from labelloop.programs.choice import question_program, zero_shot_program
        from labelloop.programs.irr import InferRetrieveRank
        from labelloop.programs.retrieval import LabelIndex
        from labelloop.programs.taxonomy import Summariser, TaxonomyStep

        logging.getLogger("dspy").setLevel(logging.ERROR)  # a malformed answer is expected here, not news
        self.engine = FuzzEngine()
        self.lm = dspy.LM("fake/fuzz", engine=self.engine, cache=False)
        index = LabelIndex(["billing", "shipping", "account access"], retriever="bm25")
        constraints = Constraints(max_labels=4)
        self.programs = {
            "question": question_program("Is it about money?", ["yes", "no"]),
            "zero_shot": zero_shot_program(["a", "b"], ["first", "second"]),
            "irr_list": InferRetrieveRank(index, rank="list", rank_n=3, chunk_words=20),
            "irr_scores": InferRetrieveRank(index, rank="scores", rank_n=3, chunk_words=20),
            "summarise": Summariser("Find the topics.", 10, 2),
            **{step: TaxonomyStep(step, constraints, 3, current=CURRENT if step in ("update", "review") else None)
               for step in ("name", "generate", "update", "review")}}
        self.inputs = {"question": {"text": "I want a refund"}, "zero_shot": {"text": "hello"},
                       "irr_list": {"text": "I was charged twice, refund please."},
                       "irr_scores": {"text": "Where is my parcel?"}, "summarise": {"text": "My parcel is late again."},
                       "name": {"keywords": "refund, money", "summaries": "1. a refund\n2. money back"},
                       "generate": {"use_case": "topics", "summaries": "1. a refund\n2. a late parcel"},
                       "update": {"use_case": "topics", "summaries": "1. a login problem"}, "review": {"use_case": "topics"}}

    def check(self, which: str, answers: list) -> None:
        import dspy

        self.engine.answers = list(answers)
        with dspy.context(lm=self.lm):
            got = outcome(self.programs[which], **self.inputs[which])
        if isinstance(got, LabelloopError):
            assert isinstance(got, TaxonomyError) and which in ("name", "generate", "update", "review"), repr(got)
            return
        if which in ("question", "zero_shot"):
            options = self.programs[which].options
            assert got.answer is None or got.answer in options
            assert (got.probs is None) == (got.answer is None)
            if got.probs is not None:
                assert list(got.probs) == options and all(math.isfinite(p) and p >= 0 for p in got.probs.values())
                assert abs(sum(got.probs.values()) - 1) < 1e-9
        elif which.startswith("irr"):
            assert set(got.chosen) <= set(got.candidates) and sorted(got.ranking) == sorted(got.candidates)
            assert all(isinstance(x, str) for x in got.guesses)
            assert all(isinstance(n, int) and n >= 0 for n in (got.invalid, got.failed, got.calls))
        elif which == "summarise":
            assert isinstance(got.summary, str) and isinstance(got.ok, bool)
        else:
            _labels_ok(got.labels)
            assert got.labels and all(x["name"] for x in got.labels)
            assert got.rating is None or 1 <= got.rating <= 5


# --- the targets, for the tests and benchmarks/fuzz.py ----------------------------------------------------

# name -> (strategy of the check's arguments, a tuple; the check). predict_file and the programs need a
# model and an LM: ``targets(student)`` binds them.
TARGETS = {
    "parse_config": (st.tuples(config_mapping), check_parse_config),
    "load_config": (st.tuples(documents(config_mapping)), check_load_config),
    "load_project": (st.tuples(project_inputs()), check_load_project),
    "read_records": (st.tuples(record_files(), st.booleans()), check_read_records),
    "read_taxonomy": (st.tuples(taxonomy_files), check_read_taxonomy),
    "Taxonomy": (st.tuples(name_lists, name_lists), check_taxonomy),
    "option_probabilities": (st.tuples(logprobs), check_option_probabilities),
    "closed_choice_votes": (st.tuples(st.lists(closed_answer, max_size=6), st.sampled_from(["batch", "content_free", "none"]),
                                      st.sampled_from([0.0, 0.5, 0.9])), check_closed_choice),
    "irr_votes": (st.tuples(st.lists(irr_answer, max_size=5)), check_irr_votes),
    "taxonomy_rules": (st.tuples(st.one_of(st.lists(label_answer, max_size=4), json_like),
                                 st.one_of(st.lists(edit, max_size=3), json_like), st.one_of(strings, json_like)),
                       check_taxonomy_rules),
    "irr_text": (st.tuples(st.text(max_size=80), st.one_of(st.integers(-2, 30), json_like), json_like), check_irr_text),
}


def targets(student=None) -> dict:
    """``TARGETS`` plus predict_file (with ``student``) and the DSPy programs (with a fuzz LM)."""
    out = dict(TARGETS)
    if student is not None:
        out["predict_file"] = (st.tuples(record_files(), st.sampled_from([".csv", ".jsonl", ".parquet"]), st.integers(1, 4)),
                               lambda *args: check_predict_file(student, *args))
    programs = Programs()
    out["llm_programs"] = (st.tuples(st.sampled_from(PROGRAMS), lm_answers), programs.check)
    return out


# --- the property tests (seeded, bounded) -----------------------------------------------------------------

EXAMPLES = {"parse_config": 150, "load_config": 150, "load_project": 100, "read_records": 150, "read_taxonomy": 150,
            "Taxonomy": 150, "option_probabilities": 200, "closed_choice_votes": 150, "irr_votes": 150,
            "taxonomy_rules": 150, "irr_text": 150}


@pytest.mark.parametrize("name", list(TARGETS))
def test_any_input_gives_a_result_or_a_labelloop_error(name):
    strategy, check = TARGETS[name]

    @fuzz(EXAMPLES[name])
    @given(strategy)
    def run(args):
        check(*args)

    run()


@pytest.fixture(scope="module")
def student(trained_run):
    from labelloop.flows.predict import load_model

    return load_model(trained_run)


@fuzz(100)
@given(record_files(), st.sampled_from([".csv", ".jsonl", ".parquet"]), st.integers(1, 4))
def test_predict_file_skips_bad_rows_and_leaves_no_partial_output(student, file, out_suffix, chunk_size):
    check_predict_file(student, file, out_suffix, chunk_size)


@pytest.fixture(scope="module")
def programs():
    return Programs()


@fuzz(200)
@given(st.sampled_from(PROGRAMS), lm_answers)
def test_llm_answers_of_any_text_and_logprobs_become_answers_abstains_or_taxonomy_errors(programs, which, answers):
    programs.check(which, answers)


# --- regressions: the smallest input of each defect found ------------------------------------------------


def test_a_labeler_type_that_is_a_list_is_a_config_error():
    with pytest.raises(ConfigError, match=r"labelers\.0\.type: expected one of .*got \"\['zero_shot'\]\""):
        parse_config({**BASE_CONFIG, "labelers": [{"type": ["zero_shot"]}]})


@pytest.mark.parametrize("text, expected", [("[" * 5000, "nests lists or mappings too deeply"),
                                            ("seed: " + "9" * 5000, "4300 digits"),
                                            ("name: 2001-13-45", "month must be in 1..12")])  # a date YAML cannot build
def test_yaml_nested_too_deeply_or_with_a_huge_integer_is_a_config_error(tmp_path, text, expected):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match=expected):
        read_taxonomy(tmp_path / "config.yaml")


@pytest.mark.parametrize("key, value, where", [("runs_dir", "a\x00b", "runs_dir: holds a NUL character at position 1"),
                                               ("name", "\ud800", r"name: holds a lone surrogate \(\\ud800\)"),
                                               ("labelers", [{"type": "python", "module": "lf\x00.py"}], "labelers.0.module")])
def test_nul_characters_and_lone_surrogates_in_a_config_are_refused_where_they_are(key, value, where):
    with pytest.raises(ConfigError, match=where):
        parse_config({**BASE_CONFIG, key: value})


@pytest.mark.parametrize("name", ["a/b", "..", " ", "a\\b"])
def test_a_project_name_must_be_usable_as_a_file_name(name):
    with pytest.raises(ConfigError, match=r"name: .*usable in a file name"):
        parse_config({**BASE_CONFIG, "name": name})


def test_a_path_too_long_for_the_file_system_is_a_labelloop_error(tmp_path):
    from labelloop.flows.predict_file import predict_file

    long = tmp_path / ("x" * 300 + ".csv")
    with pytest.raises(DataError, match="cannot be read"):
        read_records(DataSpec(path=long))
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(long)
    with pytest.raises(DataError, match="cannot be read"):
        predict_file(Path("unused"), long, tmp_path / "out.csv")
    (tmp_path / "in.csv").write_text("id,text\n1,refund\n")
    with pytest.raises(DataError, match="cannot write"):
        predict_file(Path("unused"), tmp_path / "in.csv", long)


@pytest.mark.parametrize("suffix, data, expected", [
    (".csv", b"", "empty file; expected a header row"),
    (".csv", b'id,text\n1,"never closed\n', "not valid CSV"),
    (".parquet", b"PAR1 but no", "is not a Parquet file"),
    (".jsonl", b"[" * 100_000, "line 1: expected one JSON object per line, got one nested too deeply"),
    (".jsonl", b'{"id": ' + b"9" * 5000 + b', "text": "a"}', "line 1: expected one JSON object per line"),
    (".jsonl", b'{"id": 1, "text": "a", "\\ud800": 1}', r"line 1: a key of the object: it holds a lone surrogate"),
    (".jsonl", b'{"id": 1, "text": "a", "meta": {"tags": ["\\udcff"]}}', r"line 1: 'meta'.'tags'.0: it holds a lone"),
    (".jsonl", b'{"id": [1], "text": "a"}', r"1 record\(s\) have a 'id' that is a list or an object, e.g. row 1: \[1\]"),
])
def test_hostile_record_files_are_data_errors(tmp_path, suffix, data, expected):
    path = tmp_path / f"records{suffix}"
    path.write_bytes(data)
    with pytest.raises(DataError, match=expected):
        read_records(DataSpec(path=path))


def test_a_folder_that_is_no_saved_dataset_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="is not a saved dataset folder"):
        read_records(DataSpec(path=tmp_path))


@pytest.mark.parametrize("suffix, data", [(".csv", b"\xef\xbb\xbfid,text\n1,refund\n"),
                                          (".jsonl", b'\xef\xbb\xbf{"id": 1, "text": "refund"}\n')])
def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path, suffix, data):
    path = tmp_path / f"records{suffix}"
    path.write_bytes(data)
    assert read_records(DataSpec(path=path)).to_dict("records") == [{"id": "1", "text": "refund"}]


def test_frames_with_nested_or_repeated_column_names_are_data_errors():
    from labelloop.flows.io import records_frame

    with pytest.raises(DataError, match="expected one row of column names, got 2 levels"):
        records_frame(pd.DataFrame({("id", "x"): [1], ("text", "y"): ["a"]}), DataSpec(), "frame")
    with pytest.raises(DataError, match=r"column\(s\) \['text'\] appear more than once"):
        records_frame(pd.DataFrame([[1, "a", "b"]], columns=["id", "text", "text"]), DataSpec(), "frame")


@pytest.mark.parametrize("column, value, expected", [("id", "\ud800", r"'id' labelloop cannot use, e.g. id '\\ud800'"),
                                                    ("label", "\ud800", r"'label' labelloop cannot use, e.g. id '1'")])
def test_a_lone_surrogate_in_a_frames_id_or_label_is_a_data_error(column, value, expected):
    from labelloop.flows.io import records_frame

    frame = pd.DataFrame({"id": [1], "text": ["a"], "label": ["b"], column: [value]}, dtype=object)  # str columns could not
    with pytest.raises(DataError, match=expected):
        records_frame(frame, DataSpec(), "frame")


def test_predict_file_reports_a_csv_header_that_is_not_utf8_and_an_output_that_is_a_folder(student, tmp_path):
    from labelloop.flows.predict_file import predict_file

    (tmp_path / "bad.csv").write_bytes(b"\x80")
    with pytest.raises(DataError, match="is not UTF-8 text"):
        predict_file(student, tmp_path / "bad.csv", tmp_path / "out.csv", show_progress=False)
    (tmp_path / "good.jsonl").write_text('{"id": 1, "text": "refund"}\n' + "[" * 100_000 + "\n")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        predict_file(student, tmp_path / "good.jsonl", tmp_path / "folder.csv", show_progress=False)
    got = predict_file(student, tmp_path / "good.jsonl", tmp_path / "out.csv", show_progress=False)
    assert got["skipped"] == {"invalid_json": 1} and got["rows_written"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "folder.csv", "good.jsonl", "out.csv",
                                                          "out.csv.skipped.csv"]


def test_predict_file_reports_parquet_pages_that_cannot_be_read(student, tmp_path):
    from labelloop.flows.predict_file import predict_file

    buffer = io.BytesIO()
    pd.DataFrame({"id": ["1"], "text": ["refund please"]}).to_parquet(buffer)
    (tmp_path / "damaged.parquet").write_bytes(buffer.getvalue()[1:])  # the footer still reads; the pages have moved
    with pytest.raises(DataError, match="the rows after row 0 cannot be read"):
        predict_file(student, tmp_path / "damaged.parquet", tmp_path / "out.csv", show_progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["damaged.parquet"]


@pytest.mark.parametrize("names, expected", [((["a"], ["b"]), "label 1: expected its name as non-blank text, got \\['a'\\]"),
                                             (("a", 1), "label 2: expected its name as non-blank text, got 1"),
                                             (("a", " "), "label 2: expected its name as non-blank text"),
                                             (("a", "\ud800"), "label 2: its name holds a lone surrogate"),
                                             ("ab", "expected a tuple of strings, got str")])
def test_taxonomy_names_must_be_distinct_non_blank_text(names, expected):
    with pytest.raises(ConfigError, match=expected):
        Taxonomy(names, ("",) * len(names))


def test_a_taxonomy_file_with_a_lone_surrogate_in_a_name_is_a_config_error(tmp_path):
    (tmp_path / "taxonomy.yaml").write_text('labels: [{name: "\\ud800"}, {name: b}]')
    with pytest.raises(ConfigError, match="lone surrogate"):
        read_taxonomy(tmp_path / "taxonomy.yaml")


@pytest.mark.parametrize("top", [[{"token": "yes", "logprob": 1000.0}],  # exp overflowed
                                 [{"token": "yes", "logprob": "high"}, {"token": "no", "logprob": -1.0}],
                                 [{"token": "yes", "logprob": math.nan}, {"token": "no", "logprob": -1.0}],
                                 [{"logprob": -0.1}, {"token": "no", "logprob": -1.0}]])
def test_malformed_log_probabilities_are_passed_over(top):
    content = [{"token": '{"answer": "', "logprob": 0.0}, {"token": "yes", "logprob": -0.1, "top_logprobs": top}]
    check_option_probabilities({"content": content})
    assert option_probabilities({"content": [{"logprob": 0.0}]}, "answer", OPTIONS) is None  # a token without text
    assert option_probabilities({"content": "text"}, "answer", OPTIONS) is None


@pytest.mark.parametrize("answer", ["x", ["a"], {"answer": "a", "probs": [1]}, {"answer": "a", "probs": {"a": "x"}},
                                    {"answer": "a", "probs": "zz"}, {"answer": ["a"]}])
def test_a_malformed_closed_choice_answer_abstains_and_counts_as_invalid(answer):
    lf = zero_shot_labeler(Taxonomy(("a", "b"), ("", "")))
    lf.fit([answer, {"answer": "a", "probs": {"a": 0.9, "b": 0.1}}])
    assert lf.vote(answer) == ABSTAIN and lf.invalid([answer, None]) == 1
    direct = 0 if isinstance(answer, dict) and answer.get("answer") == "a" else ABSTAIN  # the raw answer, probabilities unread
    assert answer_ids([answer], ("a", "b")).tolist() == [direct]


@pytest.mark.parametrize("probs", [{"a": math.nan, "b": 0.1}, {"a": math.inf, "b": 0.1}, {"a": -1.0, "b": 0.5},
                                   {"a": 0.0, "b": 0.0}, {"zz": 1.0}])
def test_probabilities_that_are_not_a_distribution_never_vote(probs):
    lf = zero_shot_labeler(Taxonomy(("a", "b"), ("", "")), calibration="none")
    assert lf.vote({"answer": "a", "probs": probs}) == ABSTAIN
    lf = zero_shot_labeler(Taxonomy(("a", "b"), ("", "")))
    lf.fit([{"answer": "a", "probs": probs}, {"answer": "b", "probs": {"a": 0.2, "b": 0.8}}])
    assert np.isfinite(lf.scale_).all()


@pytest.mark.parametrize("answer, vote", [("x", ABSTAIN), ({"chosen": "ab"}, ABSTAIN), ({"chosen": [{"a": 1}]}, ABSTAIN),
                                          ({"chosen": {"a": 1}}, ABSTAIN), ({"chosen": 5}, ABSTAIN), ({"invalid": "3"}, ABSTAIN),
                                          ({"ranking": 5}, ABSTAIN), ({"ranking": [[1]]}, ABSTAIN),
                                          ({"chosen": ["a"], "candidates": 5}, 0), ({"chosen": [["b"], "a"]}, 0)])
def test_a_malformed_irr_answer_abstains_or_keeps_its_label_names(answer, vote):
    check_irr_votes([answer])
    assert IRRLabeler("irr").votes([answer], Taxonomy(("a", "b"), ("", ""))).tolist() == [vote]


def test_a_label_chosen_twice_votes_once():
    sets = IRRLabeler("irr").vote_sets([{"chosen": ["a", "a"], "candidates": ["b", "b"]}], Taxonomy(("a", "b"), ("", "")))
    assert sets.toarray().tolist() == [[1, -1]]  # was [[2, -2]]: the sparse matrix summed the repeats


def test_chunk_text_refuses_zero_words_instead_of_looping_forever():
    with pytest.raises(ConfigError, match="chunk_words must be a whole number of at least 1, got 0"):
        chunk_text("a b c", 0)
    assert _clean(5) == [] and _clean("ab") == []


@pytest.mark.parametrize("labels, edits", [(["Billing"], ["x"]), ([1], [1]), (None, [{"action": "add", "labels": 5}]),
                                           (5, None), ([{"name": ["a"], "description": {"a": 1}}], [{"action": ["add"]}])])
def test_taxonomy_answers_of_any_shape_become_problems(labels, edits):
    check_taxonomy_rules(labels, edits, 5)
    _, problems, _ = apply_edits(CURRENT, edits)
    assert problems
    assert validate_taxonomy(normalise(labels), Constraints())
