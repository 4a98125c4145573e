"""Build this multi-label example from the single-intent example project (seeded, deterministic).

Each record is one support message or two messages of different intents joined into one; a joined
record's gold labels are both intents. The training records come from the unlabeled messages
(no gold needed), dev and test from the labelled ones.

    python data/example_multilabel/make_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "example"


def _read(name: str) -> list[dict]:
    return [json.loads(line) for line in (SOURCE / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def _combine(rows: list[dict], n_single: int, n_pairs: int, rng: random.Random, prefix: str) -> list[dict]:
    rows = rows[:]
    rng.shuffle(rows)
    out = [dict(r, label=[r["label"]] if "label" in r else None) for r in rows[:n_single]]
    rest = rows[n_single:]
    while len(out) < n_single + n_pairs and len(rest) >= 2:
        a = rest.pop()
        b = next((r for r in rest if r.get("label") != a.get("label") or "label" not in a), None)
        if b is None:
            break
        rest.remove(b)
        out.append({"id": "", "text": f"{a['text']} Also, {b['text'][0].lower()}{b['text'][1:]}",
                    "label": [a["label"], b["label"]] if "label" in a else None})
    rng.shuffle(out)
    for i, row in enumerate(out):
        row["id"] = f"{prefix}{i:03d}"
        if row["label"] is None:
            del row["label"]
    return out


def main() -> None:
    rng = random.Random(0)
    splits = {"records.jsonl": _combine(_read("records.jsonl"), 40, 40, rng, "m"),
              "dev.jsonl": _combine(_read("dev.jsonl"), 12, 12, rng, "mdev"),
              "test.jsonl": _combine(_read("test.jsonl"), 20, 20, rng, "mtest")}
    for name, rows in splits.items():
        (HERE / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{name}: {len(rows)} records")


if __name__ == "__main__":
    main()
