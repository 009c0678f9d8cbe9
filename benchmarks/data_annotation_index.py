"""Loading a SYNTH-PEDES-sized annotation index: time and peak resident memory.

Run: python benchmarks/data_annotation_index.py [--records 1000000]
Writes a synthetic ``synthpedes_dataset.json`` with the real record shape (id, file_path, a
6-slot attribute string, 2-3 captions of 16-32 words, around CUHK-PEDES's average of 23.5, and a
prompt caption), then loads it with
``load_dataset("synth-pedes", ...)`` in a fresh process and reports the wall time and that
process's ru_maxrss. Image existence is not checked (``check_images=False``): the benchmark
measures the index, and a million image files are not written for it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WORDS = ("man woman young adult wearing black white grey red blue green yellow orange pink purple brown jacket coat "
         "shirt t-shirt sweater dress trousers jeans shorts skirt shoes boots sneakers backpack handbag bag hat glasses "
         "long short hair sleeves walking standing carrying holding street with and a the his her in on of").split()
SLOTS = (("man", "woman"), ("black hair", "brown hair", "hat", "unknown"), ("black shirt", "red coat", "white t-shirt"),
         ("blue jeans", "black trousers", "pink shorts", "unknown"), ("black shoes", "white shoes", "unknown"),
         ("backpack", "handbag", "unknown"))


def write_index(path: Path, records: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = np.asarray(WORDS)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("[")
        for start in range(0, records, 10000):
            count = min(10000, records - start)
            lengths = rng.integers(16, 33, size=(count, 3))
            picks = rng.integers(0, len(words), size=(count, 3, 32))
            slots = [rng.integers(0, len(options), size=count) for options in SLOTS]
            caption_counts = rng.integers(2, 4, size=count)
            for k in range(count):
                n = start + k
                pid = n // 15 + 1
                captions = [" ".join(words[picks[k, c, :lengths[k, c]]]) + "." for c in range(caption_counts[k])]
                attributes = ",".join(options[s[k]] for options, s in zip(SLOTS, slots))
                entry = {"id": pid, "file_path": f"Part{1 + (pid - 1) // 30000}/{pid}/{n % 15 + 1}.jpg",
                         "attributes": [attributes], "captions": captions, "prompt_caption": [captions[0][:80]]}
                handle.write(("," if n else "") + json.dumps(entry))
        handle.write("]\n")


def load_and_report(root: str) -> None:
    import resource
    import time

    from personvl.data import load_dataset

    started = time.perf_counter()
    records = load_dataset("synth-pedes", root, check_images=False)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    captions = sum(len(r.captions) for r in records)
    print(json.dumps({"records": len(records), "captions": captions, "seconds": elapsed, "ru_maxrss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--load", metavar="ROOT", help=argparse.SUPPRESS)  # the measured child process
    args = parser.parse_args()
    if args.load:
        load_and_report(args.load)
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "synthpedes_dataset.json"
        write_index(index, args.records)
        size_mb = index.stat().st_size / 2**20
        result = subprocess.run([sys.executable, __file__, "--load", tmp], capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"annotation index: {figures['records']:,} records, {figures['captions']:,} captions, {size_mb:,.0f} MB of JSON")
    print(f"  load time          : {figures['seconds']:6.1f} s   (bar: < 30 s)")
    print(f"  peak resident (RSS): {figures['ru_maxrss_mb']:6.0f} MB  (bar: < 2048 MB)")


if __name__ == "__main__":
    main()
