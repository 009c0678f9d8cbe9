"""Re-ID evaluation speed and memory: personvl against a straightforward NumPy implementation.

Run: python benchmarks/eval_reid.py [--sizes market,msmt17] [--baseline-queries 1000] [--repeats 3]

Both sides get the same random 768-d features (see eval_common.py) and are timed from the
features to the figures, distance computation included, each in its own fresh process so that
the peak resident memory (ru_maxrss) of every run is its own. The baseline computes the whole
distance matrix with NumPy, then a full stable argsort per query. At MSMT17 size the baseline
runs on the first --baseline-queries queries and its time is extrapolated linearly (its
distance matrix alone would take 3.8 GB for all queries); personvl runs on the same subset to
compare the figures, and on all queries for the time and memory. At Market size every
measurement is repeated (--repeats) and the fastest run is printed, which filters out other
jobs sharing the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import eval_common as common


def child(task: dict) -> None:
    data = common.synthetic_features(**common.MARKET if task["size"] == "market" else common.MSMT17)
    if task.get("queries"):
        n = task["queries"]
        data = common.Dataset(data.query[:n], data.gallery, data.query_pids[:n], data.gallery_pids,
                              data.query_camids[:n], data.gallery_camids)
    before = common.peak_rss_gib()
    if task["side"] == "numpy":
        started = time.perf_counter()
        metrics = common.numpy_reid_baseline(data)
    elif task["side"] == "numpy-argsort":
        import numpy as np

        distances = data.query @ data.gallery.T
        started = time.perf_counter()
        np.argsort(distances, axis=1)
        metrics = None
    elif task["side"] == "personvl-distances":
        import torch

        from personvl.evaluation.distances import PairwiseDistances
        from personvl.evaluation.inputs import DEFAULT_MEMORY_BUDGET, rows_per_chunk
        from personvl.evaluation.ranking import BYTES_PER_ITEM, MAX_ROWS_PER_CHUNK

        torch.zeros(1)
        started = time.perf_counter()
        distances = PairwiseDistances(torch.from_numpy(data.query), torch.from_numpy(data.gallery), "euclidean")
        step = rows_per_chunk(DEFAULT_MEMORY_BUDGET, BYTES_PER_ITEM * len(data.gallery), MAX_ROWS_PER_CHUNK)
        for start in range(0, len(data.query), step):
            distances.ranking_rows(start, min(start + step, len(data.query)))
        metrics = None
    else:
        import torch

        from personvl.evaluation import reid_metrics

        torch.zeros(1)                                  # library start-up is not the metric's cost
        started = time.perf_counter()
        metrics = reid_metrics(data.query, data.gallery, data.query_pids, data.gallery_pids, data.query_camids,
                               data.gallery_camids, metric="euclidean")
    common.child_report(started, metrics, before, queries=len(data.query))


def line(label: str, run: dict, distance_seconds: float, scale: float = 1.0) -> str:
    return (f"  {label:<36} {run['seconds'] * scale:8.2f} s (distances {distance_seconds * scale:6.2f} s, "
            f"ranking {(run['seconds'] - distance_seconds) * scale:6.2f} s)   peak RSS {run['peak_gib']:5.2f} GiB "
            f"(features alone {run['data_gib']:4.2f} GiB)")


def speed_up(baseline: dict, ours: dict, our_distances: dict, scale: float = 1.0) -> str:
    base_distances = baseline["metrics"]["distance_seconds"]
    total = baseline["seconds"] * scale / ours["seconds"]
    ranking = (baseline["seconds"] - base_distances) * scale / (ours["seconds"] - our_distances["seconds"])
    return f"  speed-up: {total:.1f}x end to end; {ranking:.1f}x on the ranking after the distances"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="market,msmt17")
    parser.add_argument("--baseline-queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement at Market size")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    print(f"machine: {common.machine()}")
    for size in args.sizes.split(","):
        spec = common.MARKET if size == "market" else common.MSMT17
        print(f"\n{spec['name']} size: {spec['queries']:,} queries x {spec['gallery']:,} gallery, 768-d, "
              f"euclidean, Market-1501 protocol")
        if size == "market":
            def fastest(side: str) -> dict:
                return min((common.run_child(__file__, dict(size=size, side=side)) for _ in range(args.repeats)),
                           key=lambda run: run["seconds"])

            baseline, ours, our_distances = fastest("numpy"), fastest("personvl"), fastest("personvl-distances")
            print(f"  figures: {common.compare(ours['metrics'], baseline['metrics'])}")
            print(line("NumPy baseline", baseline, baseline["metrics"]["distance_seconds"]))
            print(line("personvl", ours, our_distances["seconds"]))
            print(speed_up(baseline, ours, our_distances) + f" (fastest of {args.repeats} runs each)")
            whole_sort = fastest("numpy-argsort")
            print(f"  for scale: np.argsort of the whole distance matrix alone (where compiled evaluators "
                  f"start) takes {whole_sort['seconds']:.2f} s")
        else:
            subset = args.baseline_queries
            baseline = common.run_child(__file__, dict(size=size, side="numpy", queries=subset))
            ours_subset = common.run_child(__file__, dict(size=size, side="personvl", queries=subset))
            ours = common.run_child(__file__, dict(size=size, side="personvl"))
            our_distances = common.run_child(__file__, dict(size=size, side="personvl-distances"))
            scale = spec["queries"] / subset
            print(f"  figures on the first {subset:,} queries: "
                  f"{common.compare(ours_subset['metrics'], baseline['metrics'])}")
            print("  all queries: " + ", ".join(f"{k} {ours['metrics'][k]:.4f}" for k in ("R1", "mAP", "mINP")))
            base_distances = baseline["metrics"]["distance_seconds"]
            print(line(f"NumPy baseline, {subset:,} queries", baseline, base_distances))
            print(line(f"  extrapolated to {spec['queries']:,}", baseline, base_distances, scale))
            print(line(f"personvl, all {spec['queries']:,} queries", ours, our_distances["seconds"]))
            print(speed_up(baseline, ours, our_distances, scale) + " (against the extrapolated baseline)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
