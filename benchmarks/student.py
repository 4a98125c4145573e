"""The shipped student against the LLM it was distilled from, in one run on YouTube spam.

A user's run (``labelloop.run``) on the YouTube benchmark project (``benchmarks/youtube.py``: the
same seeded train sample, dev records, labelers and vote store) trains the student with an abstain
threshold chosen on the gold dev records, then, side by side on the whole test split:

- accuracy of the student and of its teacher, the embedded LLM's best labeler on its own (the
  zero-shot labeler, calibrated), and how often the two agree;
- docs per second of the student (a batch of every test text, best of three) and of the LLM (fresh
  zero-shot calls, the shared prompt prefix cached as in a labeling run), and their ratio;
- the student's expected calibration error on test after the temperature fitted on dev, and the
  precision and coverage of its answers at the dev-chosen threshold;
- the same student exported to ONNX: agreement with the skops student on the test texts, docs/s;
- ``labelloop serve`` over loopback HTTP: single-text ``POST /predict`` requests in a closed loop
  (one client, keep-alive, after a warm-up), p50 / p99 latency and requests per second; client and
  server share the machine's cores.

The student here is the TF-IDF one (``student.features: tfidf``): the one ONNX exports, and on this
data the most accurate of the three feature sets (``benchmarks/results/youtube.json``). The default
``tfidf+embeddings`` student is measured beside it on the same labels (``default_features``).

    python benchmarks/youtube.py     # once: fills the vote store (about 15 minutes on 2 cores)
    python benchmarks/student.py     # no LLM answer is asked again; about 2 minutes

Writes benchmarks/results/student.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import youtube  # noqa: E402  (benchmarks/youtube.py: prepare(), cost_per_record() and its cache folder)


def docs_per_s(predict, texts: list[str], repeats: int = 3) -> float:
    """Texts per second of ``predict(texts)`` on one batch, best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        predict(texts)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best


def serve_in_thread(app):
    """A uvicorn server for ``app`` on a free loopback port, started in a thread; returns (server, url)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("the server did not start within 60 s")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def http_load(url: str, texts: list[str], requests: int, warmup: int = 100) -> dict:
    """Single-text requests in a closed loop: latency percentiles and requests per second."""
    import httpx

    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(warmup):
            client.post("/predict", json={"texts": [texts[i % len(texts)]]}).raise_for_status()
        latencies = []
        started = time.perf_counter()
        for i in range(requests):
            t = time.perf_counter()
            client.post("/predict", json={"texts": [texts[i % len(texts)]]}).raise_for_status()
            latencies.append((time.perf_counter() - t) * 1000)
        wall = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"http_p50_ms": round(q[49], 2), "http_p99_ms": round(q[98], 2), "http_rps": round(requests / wall, 1),
            "http_requests": requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-size", type=int, default=300, help="as benchmarks/youtube.py")
    parser.add_argument("--dev-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="local")
    parser.add_argument("--precision", type=float, default=0.95, help="student.abstain precision target (on dev)")
    parser.add_argument("--llm-records", type=int, default=20, help="fresh LLM calls timed")
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests timed")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "student.json")
    args = parser.parse_args()
    if not youtube.DATA.exists():
        sys.exit(f"{youtube.DATA} not found: this benchmark needs the shared YouTube dataset")

    import numpy as np

    import labelloop
    from labelloop.flows.config import AbstainSpec, DataSpec
    from labelloop.flows.export import OnnxStudent, export_onnx
    from labelloop.flows.io import read_records, write_json
    from labelloop.flows.predict import load_model
    from labelloop.flows.serve import make_app
    from labelloop.labelers.calibration import abstain_scores, ece
    from labelloop.labelers.llm import ZeroShotLabeler
    from labelloop.labelers.tasks import fit_label_model

    started = time.time()
    project = labelloop.load_project(youtube.prepare(args.train_size, args.dev_size, args.seed, args.model))
    spec = project.config.student.model_copy(update={"features": "tfidf", "abstain": AbstainSpec(precision=args.precision)})
    project = dataclasses.replace(project, config=project.config.model_copy(update={"student": spec}))
    run_dir = labelloop.run(project, show_progress=False)
    student = load_model(run_dir)

    test = read_records(DataSpec(path=youtube.CACHE / "test.jsonl"), require_label=True)
    texts, y = test["text"].tolist(), np.array([youtube.NAMES.index(x) for x in test["label"]])
    # the teacher: the zero-shot labeler on its own, calibrated on the test pool as in youtube.py (stored answers)
    zero_shot = [lf for lf in project.llm_labelers if isinstance(lf, ZeroShotLabeler)]
    tested = labelloop.label_dataset(dataclasses.replace(project, splits={"train": test}, llm_labelers=zero_shot,
                                                         heuristic_lfs=[]), show_progress=False)
    teacher = tested.splits["train"].votes[:, tested.names.index("zero_shot")]
    P = student.predict_proba(texts)
    pred = P.argmax(axis=1)
    at_threshold = abstain_scores(P, y, student.threshold)

    # the default feature set on the same labels, for comparison
    labeled = labelloop.label_dataset(project, show_progress=False)
    train, task, cfg = labeled.splits["train"], project.task, project.config
    model = fit_label_model(task, cfg.label_model, train.votes, list(project.taxonomy.names), project.gold("dev"),
                            labeled.splits["dev"].votes, cfg.seed)[0]
    default = task.train_student(train.texts, model.predict_proba(train.votes), task.covered(train.votes),
                                 cfg.student.model_copy(update={"features": "tfidf+embeddings"}), cfg.seed)
    default.predict_proba(texts[:2])  # load the sentence encoder before timing

    res = {"student_features": "tfidf", "student_acc": float((pred == y).mean()),
           "teacher_acc": float((teacher == y).mean()), "teacher": "zero_shot labeler, calibrated (its abstains count wrong)",
           "agreement_with_teacher": float((pred == teacher).mean()),
           "student_ece": round(ece(P, y), 4), "student_ece_raw": round(ece(student.pipeline.predict_proba(texts), y), 4),
           "temperature": student.calibration["temperature"], "abstain_threshold": student.threshold,
           "abstain_target": {"precision": args.precision},
           "abstain_precision": at_threshold["precision"], "abstain_coverage": at_threshold["coverage"],
           "abstain_dev": {k: student.calibration["dev"][k] for k in ("precision", "coverage")},
           "student_docs_per_s": round(docs_per_s(student.predict_proba, texts), 1)}
    cost = youtube.cost_per_record(project, student.pipeline, texts, n_llm=args.llm_records)
    res["llm_docs_per_s"] = round(1000 / cost["llm_ms_per_record"], 3)
    res["speedup"] = round(res["student_docs_per_s"] / res["llm_docs_per_s"], 1)
    default_pred = default.predict_proba(texts).argmax(axis=1)
    res["default_features"] = {"features": "tfidf+embeddings", "student_acc": float((default_pred == y).mean()),
                               "student_docs_per_s": round(docs_per_s(default.predict_proba, texts), 1)}
    res["default_features"]["speedup"] = round(res["default_features"]["student_docs_per_s"] / res["llm_docs_per_s"], 1)

    onnx = export_onnx(run_dir, run_dir / "model.onnx")
    exported = OnnxStudent(onnx["path"])
    res["onnx_agreement"] = float((exported.predict_proba(texts).argmax(axis=1) == pred).mean())
    res["onnx_max_abs_diff"] = float(np.abs(exported.predict_proba(texts) - P).max())
    res["onnx_docs_per_s"] = round(docs_per_s(exported.predict_proba, texts), 1)

    server, url = serve_in_thread(make_app(student))
    try:
        res.update(http_load(url, texts, args.requests))
    finally:
        server.should_exit = True
    res.update({"test_records": len(y), "llm_ms_per_call": cost["llm_ms_per_record"], "llm_calls_timed": args.llm_records,
                "run_dir": str(run_dir.relative_to(ROOT)), "wall_s": round(time.time() - started, 1)})
    write_json(args.out, res)

    print(f"\nYouTube spam, {len(y)} test records: student (TF-IDF) against the embedded LLM it was distilled from")
    print(f"accuracy: student {res['student_acc']:.3f}, teacher {res['teacher_acc']:.3f}, "
          f"agreement {res['agreement_with_teacher']:.3f}")
    print(f"docs/s: student {res['student_docs_per_s']:.0f}, LLM {res['llm_docs_per_s']:.2f}: {res['speedup']:.0f}x "
          f"(tfidf+embeddings: {res['default_features']['student_docs_per_s']:.0f} docs/s, "
          f"{res['default_features']['speedup']:.0f}x, accuracy {res['default_features']['student_acc']:.3f})")
    print(f"calibration error on test {res['student_ece']:.3f} (raw {res['student_ece_raw']:.3f}); abstaining below "
          f"{res['abstain_threshold']:.3f}: precision {res['abstain_precision']:.3f} at coverage {res['abstain_coverage']:.3f}")
    print(f"ONNX: agreement {res['onnx_agreement']:.3f}, {res['onnx_docs_per_s']:.0f} docs/s")
    print(f"HTTP: p50 {res['http_p50_ms']} ms, p99 {res['http_p99_ms']} ms, {res['http_rps']} requests/s")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
