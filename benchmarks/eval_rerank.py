"""k-reciprocal re-ranking at MSMT17 size: time per stage and peak memory of the sparse
formulation.

Run: python benchmarks/eval_rerank.py [--size msmt17|market] [--queries N]

Same synthetic 768-d features as eval_reid.py, euclidean, k1=20, k2=6, lambda=0.3, in a fresh
process. A dense (queries + gallery)^2 float32 matrix alone is 35 GB at MSMT17 size, and the
classic implementation holds several; this run reports the peak resident memory of the whole
process. --queries N evaluates only the first N queries (the neighbour pass still covers all
queries and gallery items, as the re-ranking needs).
"""

from __future__ import annotations

import argparse
import json
import time

import eval_common as common


def child(task: dict) -> None:
    import torch

    from personvl.evaluation.inputs import DEFAULT_MEMORY_BUDGET, rows_per_chunk
    from personvl.evaluation.ranking import BYTES_PER_ITEM, MAX_ROWS_PER_CHUNK, rank_by_identity
    from personvl.evaluation.rerank import KReciprocalReranker

    spec = common.MARKET if task["size"] == "market" else common.MSMT17
    data = common.synthetic_features(**spec)
    before = common.peak_rss_gib()
    torch.zeros(1)
    started = time.perf_counter()
    query, gallery = torch.from_numpy(data.query), torch.from_numpy(data.gallery)
    reranker = KReciprocalReranker(query, gallery, "euclidean", 20, 6, 0.3)
    built = time.perf_counter()
    count = task.get("queries") or len(data.query)
    step = rows_per_chunk(DEFAULT_MEMORY_BUDGET, BYTES_PER_ITEM * len(data.gallery), MAX_ROWS_PER_CHUNK)
    pids = [torch.from_numpy(x) for x in (data.query_pids[:count], data.gallery_pids,
                                            data.query_camids[:count], data.gallery_camids)]
    metrics = rank_by_identity(reranker.distance_rows, pids[0], pids[1], pids[2], pids[3], 50, step)
    common.child_report(started, metrics, before, build_seconds=built - started,
                        rank_seconds=time.perf_counter() - built, queries=count,
                        encoding_entries=int(reranker.encoding.values.numel()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="msmt17", choices=("msmt17", "market"))
    parser.add_argument("--queries", type=int, default=None, help="evaluate only the first N queries")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    spec = common.MARKET if args.size == "market" else common.MSMT17
    items = spec["queries"] + spec["gallery"]
    print(f"machine: {common.machine()}")
    print(f"\nk-reciprocal re-ranking (k1=20, k2=6, lambda=0.3), {spec['name']} size: {spec['queries']:,} queries "
          f"x {spec['gallery']:,} gallery, 768-d, euclidean")
    print(f"  one dense (queries + gallery)^2 float32 matrix: {items**2 * 4 / 2**30:.1f} GiB")
    run = common.run_child(__file__, dict(size=args.size, queries=args.queries))
    metrics = run["metrics"]
    print(f"  figures ({run['queries']:,} queries): " + ", ".join(f"{k} {metrics[k]:.4f}" for k in ("R1", "mAP", "mINP")))
    print(f"  neighbours of all {items:,} items + sparse encodings: {run['build_seconds']:7.1f} s "
          f"({run['encoding_entries']:,} non-zero entries after query expansion)")
    print(f"  re-ranked distances and ranking, {run['queries']:,} queries: {run['rank_seconds']:7.1f} s")
    print(f"  total {run['seconds']:.1f} s, peak RSS {run['peak_gib']:.2f} GiB "
          f"(features alone {run['data_gib']:.2f} GiB)")


if __name__ == "__main__":
    main()
