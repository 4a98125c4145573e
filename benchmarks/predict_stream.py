"""`labelloop predict` on a million rows: rows per second and peak memory of the streaming predict_file.

Generates a seeded synthetic file of support messages (short templates filled with random words;
one row in 1,000 has an empty text and one in 1,000 repeats an earlier id, so the skipped-rows path
is exercised) in benchmarks/.cache/predict_stream/ unless it is already there, then labels it with
the student of ``--model`` (a run folder; the benchmark trains nothing), once per format and chunk
size, each in a fresh subprocess so that its peak memory is that job's alone:

- ``rows_per_s``: rows read over the wall time of predict_file (reading, predicting, writing the
  output in the same format, the skipped-rows report);
- ``peak_rss_mb``: the subprocess's peak resident memory (getrusage ru_maxrss), and ``base_rss_mb``
  the same just before predict_file (Python, numpy, pandas, pyarrow, scikit-learn and the model loaded),
  so ``added_mb`` is what labelling the file added;
- the same at a tenth of the rows (``--growth``: the first format and chunk size): memory that does not
  grow with the rows shows as the same ``added_mb``.

    python benchmarks/predict_stream.py --model data/example/runs/<run> --formats csv  # 1,000,000 rows, ~4 min
    python benchmarks/predict_stream.py --model RUN --rows 100000 --formats csv jsonl parquet  # a quick look

Writes benchmarks/results/predict_stream.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache" / "predict_stream"
RESULTS = ROOT / "benchmarks" / "results" / "predict_stream.json"
BATCH = 50_000  # rows generated and written at a time

TEMPLATES = [
    "I was charged twice for order {n}, please refund the {thing}",
    "my {thing} has not arrived yet, the tracking says {w0} {w1}",
    "the app logs me out every time I open the {thing} screen",
    "can I change the delivery address for my {thing} order {n}",
    "where is the invoice for my {thing}? it says {w0}",
    "the {thing} stopped working after the update, {w0} {w1} {w2}",
    "do you ship {thing} to {w0} and how long does the parcel take",
    "password reset email never comes, tried {n} times",
]
THINGS = ["headphones", "laptop", "smartwatch", "charger", "subscription", "earbuds", "keyboard", "monitor", "phone case"]
WORDS = ("account basket cancel courier damaged delay discount driver express friday gift label locker "
         "manual monday network order payment pickup portal premium receipt return router screen "
         "signal status support ticket tuesday upgrade voucher warehouse warranty weekend").split()


def _rows(n: int, seed: int):
    """``(id, text)`` rows, seeded: 1 in 1,000 texts empty, 1 in 1,000 ids repeating an earlier one."""
    rng = random.Random(seed)
    for i in range(n):
        j = i
        if i % 1000 == 999:  # an earlier row's id (not another repeat's, so that it is always a duplicate)
            j = rng.randrange(i)
            j -= j % 1000 == 999
        text = ""
        if i % 1000 != 500:
            w0, w1, w2, *more = rng.choices(WORDS, k=3 + rng.randrange(8))
            text = " ".join([rng.choice(TEMPLATES).format(thing=rng.choice(THINGS), n=rng.randrange(10_000),
                                                          w0=w0, w1=w1, w2=w2), *more])
        yield f"r{j:07d}", text


def generate(n: int, fmt: str, seed: int) -> Path:
    """The data file for ``n`` rows in ``fmt`` (csv, jsonl, parquet), written once into the cache."""
    path = CACHE / f"records_{n}_seed{seed}.{fmt}"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    rows = _rows(n, seed)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("id", pa.string()), ("text", pa.string())])
        with pq.ParquetWriter(tmp, schema) as writer:
            while batch := [row for _, row in zip(range(BATCH), rows)]:
                ids, texts = zip(*batch)
                writer.write_table(pa.table({"id": list(ids), "text": list(texts)}, schema=schema))
    else:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            if fmt == "csv":
                out = csv.writer(handle)
                out.writerow(["id", "text"])
                out.writerows(rows)
            else:
                for rid, text in rows:
                    handle.write(json.dumps({"id": rid, "text": text}) + "\n")
    os.replace(tmp, path)
    return path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(model: str, data: str, output: str, chunk_size: int) -> None:
    """One measured job: load the model, label the file, print the summary and the memory as JSON."""
    from labelloop.flows.predict import load_model
    from labelloop.flows.predict_file import predict_file

    student = load_model(model)
    student.predict(["warm up"])
    base = _rss_mb()
    summary = predict_file(student, data, output, chunk_size=chunk_size, show_progress=False)
    print(json.dumps({**summary, "base_rss_mb": round(base, 1), "peak_rss_mb": round(_rss_mb(), 1)}))


def measure(model: Path, data: Path, chunk_size: int) -> dict:
    out_dir = Path(tempfile.mkdtemp(dir=CACHE, prefix="out-"))
    try:
        output = out_dir / f"predictions{data.suffix}"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--child", "--model", str(model), "--data", str(data),
                               "--output", str(output), "--chunk-size", str(chunk_size)],
                              check=True, capture_output=True, text=True)
        wall = time.perf_counter() - started
        result = json.loads(done.stdout.strip().splitlines()[-1])
        output_mb = output.stat().st_size / 2**20
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    row = {"format": data.suffix[1:], "rows": result["rows_in"], "chunk_size": chunk_size,
           "rows_written": result["rows_written"], "skipped": result["skipped"],
           "seconds": result["seconds"], "rows_per_s": result["rows_per_s"],
           "base_rss_mb": result["base_rss_mb"], "peak_rss_mb": result["peak_rss_mb"],
           "added_mb": round(result["peak_rss_mb"] - result["base_rss_mb"], 1),
           "input_mb": round(data.stat().st_size / 2**20, 1), "output_mb": round(output_mb, 1),
           "process_wall_s": round(wall, 1)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a run folder (or its model.skops)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", nargs="+", default=["csv", "parquet"], choices=["csv", "jsonl", "parquet"])
    parser.add_argument("--chunk-sizes", nargs="+", type=int, default=[10_000])
    parser.add_argument("--growth", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the first format at a tenth of the rows, to compare memory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--chunk-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, args.data, args.output, args.chunk_size)
        return

    model = Path(args.model).resolve()
    info = json.loads(((model if model.is_dir() else model.parent) / "metrics.json").read_text())
    runs = []
    for fmt in args.formats:
        data = generate(args.rows, fmt, args.seed)
        runs += [measure(model, data, chunk) for chunk in args.chunk_sizes]
    if args.growth:
        runs.append(measure(model, generate(args.rows // 10, args.formats[0], args.seed), args.chunk_sizes[0]))
    result = {
        "rows": args.rows, "seed": args.seed,
        "model": {"task": info.get("task", "multiclass"), "features": info.get("features"), "labels": info["labels"],
                  "n_train": info.get("n_train")},
        "runs": runs,
        "what_is_measured": "predict_file in a fresh subprocess per run: rows_per_s = rows read / its wall time "
                            "(read, predict, write the same format, skipped report); peak_rss_mb = ru_maxrss of "
                            "that subprocess; base_rss_mb = the same after imports and loading the model; "
                            "added_mb = peak - base",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "command": f"python benchmarks/predict_stream.py --model RUN_DIR --rows {args.rows} --formats "
                   f"{' '.join(args.formats)} --chunk-sizes {' '.join(map(str, args.chunk_sizes))}"
                   + ("" if args.growth else " --no-growth"),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
