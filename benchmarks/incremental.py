"""Unattended runs: what a rerun, new records and killed runs cost, and what the pipeline adds to the LLM's time.

1. Against an OpenAI-compatible server on loopback that counts every request it is sent (what a
   hosted API would bill), on a copy of the example project:
   - a first run, a rerun of unchanged data, and a run after 10% new records were added;
   - on a fresh copy, ``labelloop label`` killed with SIGKILL at three random points and resumed.
     ``unstored_at_kill``: answers the server sent in full during each killed run that the store did not
     keep; at most ``max_concurrency`` of them can still have been inside the asks in flight (their
     HTTP response read, DSPy not yet returned), so ``answers_lost`` counts those beyond that;
     ``calls_repeated``: requests beyond one per question (at most the calls in flight at each kill).
2. ``overhead_ratio``: ``labelloop.run`` wall time over the summed time inside llama.cpp calls, on
   the example project with the embedded model and a cold vote store (about 10 minutes on 2 cores).
3. ``prefect_overhead_s``: ``labelloop label --prefect`` minus ``--no-prefect`` on a warm store (the
   median of three alternating pairs; Prefect starts a temporary local server for the first).

    python benchmarks/incremental.py                  # all three parts
    python benchmarks/incremental.py --skip-embedded  # parts 1 and 3 only (a minute or two)

Writes benchmarks/results/incremental.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example"
RESULTS = ROOT / "benchmarks" / "results" / "incremental.json"
LABELLOOP = Path(sys.executable).with_name("labelloop")
API_KEY = "sk-benchmark-not-a-real-key"
KILLS = 3
MAX_CONCURRENCY = 2

sys.path.insert(0, str(ROOT))  # the fake server lives with the tests


def _copy(dest: Path, url: str | None = None) -> Path:
    """A copy of the example project (no runs, no store); with ``url``, answered by that server."""
    from tests.fake_openai import answered_by

    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("runs", ".labelloop"))
    config = dest / "config.yaml"
    return config if url is None else answered_by(config, url, max_concurrency=MAX_CONCURRENCY)


def _stored(config: Path) -> int:
    from labelloop.flows.store import VoteStore

    with VoteStore(config.parent / ".labelloop" / "votes.sqlite") as store:
        return store.count()


def _label(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": API_KEY}
    return subprocess.Popen([str(LABELLOOP), "label", str(config), "--no-progress", *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def counted_runs(tmp: Path) -> dict:
    """First run, unchanged rerun, +10% new records; then three SIGKILLs and a resume, counted at the server."""
    import labelloop
    from tests.fake_openai import FakeOpenAIServer, calls_to_make

    os.environ["OPENAI_API_KEY"] = API_KEY
    out = {}
    with FakeOpenAIServer(delay=0.01) as server:
        config = _copy(tmp / "counted", server.url)
        labelloop.label(labelloop.load_project(config))
        out["first_run_llm_calls"] = server.requests
        before = server.requests
        labelloop.label(labelloop.load_project(config))
        out["rerun_llm_calls"] = server.requests - before
        records = config.parent / "records.jsonl"
        rows = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
        added = [{"id": f"new-{i}", "text": f"{row['text']} (sent again, order {1000 + i})"}
                 for i, row in enumerate(rows[: len(rows) // 10])]
        records.write_text("".join(json.dumps(r) + "\n" for r in rows + added))
        before = server.requests
        expected = calls_to_make(config)
        labelloop.label(labelloop.load_project(config))
        out.update(added_fraction=round(len(added) / len(rows), 3), incremental_llm_calls=server.requests - before,
                   incremental_expected=expected)

    with FakeOpenAIServer(delay=0.05) as server:
        config = _copy(tmp / "killed", server.url)
        questions = calls_to_make(config)
        rng = random.Random(0)
        points = sorted(rng.sample(range(10, questions - 10), KILLS))
        kills, answered, requests, stored = [], 0, 0, 0
        for point in points:
            child = _label(config)
            while server.answered < point and child.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))  # a random moment within a call, not just after an answer
            child.send_signal(signal.SIGKILL)
            child.wait()
            time.sleep(0.2)  # a response the server was still writing
            now_stored = _stored(config)
            kills.append({"answered": server.answered - answered, "stored": now_stored - stored,
                          "in_flight": (server.requests - requests) - (server.answered - answered)})
            answered, requests, stored = server.answered, server.requests, now_stored
        child = _label(config)
        child.wait()
        # The server cannot see when an answer reached labelloop: up to max_concurrency asks may have their HTTP
        # response and still be inside DSPy when the process dies (in flight for labelloop; asked again). An
        # answer beyond those, sent in full and not stored, was lost.
        unstored = [k["answered"] - k["stored"] for k in kills]
        lost = sum(max(0, n - MAX_CONCURRENCY) for n in unstored)
        out.update(killed_runs=KILLS, kill_points=kills, unstored_at_kill=unstored, questions=questions, answers_lost=lost,
                   calls_repeated=server.requests - questions, resumed_stored=_stored(config),
                   max_in_flight=server.max_in_flight)
    return out


def prefect_overhead(tmp: Path) -> dict:
    """``labelloop label`` with and without a Prefect flow on a warm store: three alternating pairs."""
    from tests.fake_openai import FakeOpenAIServer

    timings = {"--prefect": [], "--no-prefect": []}
    with FakeOpenAIServer() as server:
        config = _copy(tmp / "prefect", server.url)
        _label(config).wait()  # warm the store
        warm = server.requests
        for _ in range(3):
            for flag in timings:
                started = time.perf_counter()
                code = _label(config, flag).wait()
                timings[flag].append(round(time.perf_counter() - started, 2))
                if code:
                    raise SystemExit(f"labelloop label {flag} exited with {code}")
        if server.requests != warm:
            raise SystemExit(f"the timed runs made {server.requests - warm} LLM calls; they should read the store")
    diffs = [a - b for a, b in zip(timings["--prefect"], timings["--no-prefect"])]
    return {"prefect_overhead_s": round(statistics.median(diffs), 2), "label_with_prefect_s": timings["--prefect"],
            "label_without_prefect_s": timings["--no-prefect"]}


def embedded_overhead(tmp: Path) -> dict:
    """``labelloop.run`` on the example with the embedded model and a cold store, against time inside llama.cpp."""
    import labelloop
    from labelloop.programs.lm import LlamaCppEngine

    inside, calls = [0.0], [0]
    complete = LlamaCppEngine.complete

    def timed(self, request):
        started = time.perf_counter()
        try:
            return complete(self, request)
        finally:
            inside[0] += time.perf_counter() - started
            calls[0] += 1

    LlamaCppEngine.complete = timed
    try:
        project = labelloop.load_project(_copy(tmp / "embedded"))
        started = time.perf_counter()
        run_dir = labelloop.run(project)
        wall = time.perf_counter() - started
    finally:
        LlamaCppEngine.complete = complete
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"overhead_ratio": round(wall / inside[0], 3), "pipeline_wall_s": round(wall, 1),
            "inside_llm_calls_s": round(inside[0], 1), "embedded_llm_calls": calls[0],
            "embedded_test_student_accuracy": metrics["scores"].get("test", {}).get("student", {}).get("accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-embedded", action="store_true", help="leave out the embedded-model overhead run")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from labelloop.flows.io import write_json

    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result = {**counted_runs(tmp), **prefect_overhead(tmp)}
        if args.skip_embedded:
            result.update({k: v for k, v in previous.items() if k in ("overhead_ratio", "pipeline_wall_s",
                          "inside_llm_calls_s", "embedded_llm_calls", "embedded_test_student_accuracy")})
        else:
            result.update(embedded_overhead(tmp))
    write_json(RESULTS, result)
    for key in ("first_run_llm_calls", "rerun_llm_calls", "added_fraction", "incremental_llm_calls", "killed_runs",
                "answers_lost", "calls_repeated", "overhead_ratio", "prefect_overhead_s"):
        print(f"{key:24s} {result.get(key)}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
