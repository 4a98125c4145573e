"""llama.cpp threads beside a busy neighbour: a fixed thread count against `lm.n_threads: null` (adaptive), in one run.

A `yes > /dev/null` process keeps one core busy while the embedded model answers the same zero-shot
calls twice, first with every core's thread, then with the thread count picked by load.

    python benchmarks/threads.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time

TEXTS = ["great song!", "check out my channel please", "love it so much, best video", "subscribe to me for free gifts",
         "this song reminds me of summer", "visit www.example.com now", "who is watching in 2015?", "free iphone here"]


def main() -> None:
    import dspy

    from labelloop.programs.choice import zero_shot_program
    from labelloop.programs.lm import make_lm

    program = zero_shot_program(["ham", "spam"], ["a genuine comment on the video", "self-promotion, links, ads"])
    neighbour = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL)
    medians = {}
    try:
        for name, threads in (("fixed", os.cpu_count()), ("adaptive", None)):
            with dspy.context(lm=make_lm("local", n_threads=threads)):
                program(text="warm up")  # load the model and fill the prompt cache
                seconds = []
                for text in TEXTS:
                    started = time.perf_counter()
                    program(text=text)
                    seconds.append(time.perf_counter() - started)
            medians[name] = statistics.median(seconds)
            print(f"{name:<9} s per call: {[round(s, 2) for s in seconds]}  median {medians[name]:.2f}", flush=True)
    finally:
        neighbour.kill()
    print(f"fixed / adaptive (median s per call, busy neighbour): {medians['fixed'] / medians['adaptive']:.2f}")


if __name__ == "__main__":
    main()
