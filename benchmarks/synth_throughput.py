"""Synthetic world generation speed: person crops per second, one process vs all cores.

Run: python benchmarks/synth_throughput.py [--identities 500]
Prints the rate of each configuration and the parallel speed-up measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from personvl.data.synth import generate_world
from personvl.data.synth.parallel import default_workers


def crops_per_second(identities: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        world = generate_world(os.path.join(tmp, "w"), identities=identities, images_per_identity=4,
                               workers=workers, progress=False, scene_identities=0)
        elapsed = time.perf_counter() - started
    return world["counts"]["images"] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=500)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    single = crops_per_second(args.identities, 1)
    parallel_workers = default_workers()
    parallel = crops_per_second(args.identities, parallel_workers)
    print(f"whole pipeline (render, write 6 dataset formats, calibrate), {args.identities * 4} crops")
    print(f"  1 worker : {single:7.1f} crops/s")
    print(f"  {parallel_workers} workers: {parallel:7.1f} crops/s")
    print(f"  speed-up : {parallel / single:5.2f}x")


if __name__ == "__main__":
    main()
