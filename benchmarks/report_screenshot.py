"""A screenshot of a run's ``report.html`` in headless Chromium, for the README.

Without ``--run`` it makes a run to show, never calling the LLM: the example project from its vote
store (``labelloop.train``, stored answers only) when every answer is stored there; else the YouTube
benchmark's filled store (``benchmarks/.cache/youtube``); else a keyword-and-regex-only project.

    apt-get install chromium                               # Debian; or put chromium on PATH
    python benchmarks/report_screenshot.py                 # a new run, then the screenshot
    python benchmarks/report_screenshot.py --run data/example/runs/support-intents-...

Writes benchmarks/results/report.png.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "report.png"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def stored_project(config: Path):
    """The project at ``config`` when every LLM answer it needs is in its vote store, else None."""
    import labelloop

    if not config.is_file():
        return None
    project = labelloop.load_project(config)
    missing = sum(row["llm_calls"] for row in labelloop.plan(project))
    if missing:
        print(f"{config}: {missing} LLM answers are not stored; not using it")
        return None
    return project


def heuristic_project(base: Path):
    """The example records, labelled by keywords and regexes only (no LLM labeler)."""
    import pandas as pd

    import labelloop

    example = ROOT / "data" / "example"
    config = {"name": "support-intents-heuristic", "taxonomy": str(example / "taxonomy.yaml"),
              "labelers": [{"type": "keywords", "name": "kw_billing", "label": "billing",
                            "words": ["refund", "refunded", "invoice", "charged", "charge", "payment"]},
                           {"type": "keywords", "name": "kw_technical", "label": "technical_issue",
                            "words": ["error", "crash", "crashes", "won't", "freezes", "broken", "pairing"]},
                           {"type": "regex", "name": "re_delivery", "label": "shipping",
                            "pattern": r"\b(deliver(y|ed)?|parcel|package|shipp(ed|ing)|arriv(e|ed))\b"}],
              "label_model": "snorkel", "student": {"features": "tfidf"}}
    frames = {split: pd.read_json(example / f"{split}.jsonl", lines=True) for split in ("records", "dev", "test")}
    return labelloop.load_project(config, base_dir=base, data=frames["records"], gold=frames["dev"], test=frames["test"])


def make_run() -> Path:
    """A fresh run folder from stored answers (or no LLM labeler at all)."""
    import labelloop

    for config in (ROOT / "data" / "example" / "config.yaml", ROOT / "benchmarks" / ".cache" / "youtube" / "config.yaml"):
        project = stored_project(config)
        if project is not None:
            print(f"training {config.relative_to(ROOT)} from its vote store (no LLM call)")
            return labelloop.train(project)
    print("no filled vote store: a keyword-and-regex project instead")
    return labelloop.run(heuristic_project(Path(tempfile.mkdtemp(prefix="labelloop-report-"))))


def browser() -> str:
    """Chromium's path; exits with what to install when there is none."""
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        sys.exit("chromium was not found on PATH (tried: " + ", ".join(BROWSERS) + "). Install it, e.g. on Debian "
                 "`apt-get install chromium`, then run this again.")
    return found


def trim(png: Path, margin: int = 24) -> None:
    """Cut the blank space below the page off the screenshot (Pillow, when installed)."""
    try:
        from PIL import Image, ImageChops
    except ImportError:
        return
    with Image.open(png) as image:
        rgb = image.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255))).getbbox()
    if box and box[3] + margin < rgb.height:
        rgb.crop((0, 0, rgb.width, box[3] + margin)).save(png)


def screenshot(report: Path, out: Path, width: int, height: int) -> None:
    exe = browser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="labelloop-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--screenshot={out}", f"--window-size={width},{height}", report.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not out.is_file():
        sys.exit(f"chromium failed ({done.returncode}):\n{done.stderr[-2000:]}")
    trim(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run folder holding report.html (default: make a new run)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=8000)
    args = parser.parse_args()
    browser()  # before a run is trained for nothing
    run = args.run or make_run()
    report = Path(run) / "report.html"
    if not report.is_file():
        sys.exit(f"{report} does not exist; is {run} a run folder of this labelloop?")
    screenshot(report, args.out, args.width, args.height)
    print(f"run folder: {run}\nscreenshot: {args.out}")


if __name__ == "__main__":
    main()
