"""Search at scale: exact vs IVF vs HNSW on 768-d unit vectors (default 1M random ones).

Run: python benchmarks/index_scale.py [--count 1000000] [--hnsw-count 200000] [--clustered 0]
     [--hnsw-m 32] [--ef-construction 80]
Prints, per index: build time, single-query latency (median and p95), batched throughput and
recall@10 against exact search on the same vectors, as a table. The query-time knob (nprobe,
efSearch) is varied on one built index.

Uniformly random vectors have no neighbourhood structure, the worst case for approximate
search. ``--clustered N`` draws the vectors (and queries) around N random centres instead, as
embeddings of N people look; approximate recall there is what a real gallery sees.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import faiss
import numpy as np

from personvl.index.backends import BackendConfig, build_faiss_index, configure_search, recall_at_k

# Noise per dimension around a cluster centre: cosine to the centre is about 0.8, between two
# members of a cluster about 0.64, between clusters about 0.
CLUSTER_NOISE = 0.027


def unit_vectors(count: int, dim: int, seed: int, centres: np.ndarray | None, block: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, block):
        size = min(block, count - start)
        if centres is None:
            chunk = rng.standard_normal((size, dim), dtype=np.float32)
        else:
            chunk = centres[rng.integers(0, len(centres), size)]
            chunk += CLUSTER_NOISE * rng.standard_normal((size, dim), dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        vectors[start:start + size] = chunk
    return vectors


def timed_queries(index: faiss.Index, queries: np.ndarray, single: int, k: int) -> dict:
    """Median and p95 of one query at a time on one thread (as ``personvl serve`` runs each
    search), and the throughput of all queries in one batch on every core."""
    times = []
    cores = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    for row in queries[:single]:
        started = time.perf_counter()
        index.search(row[None], k)
        times.append((time.perf_counter() - started) * 1000)
    faiss.omp_set_num_threads(cores)
    started = time.perf_counter()
    index.search(queries, k)
    return {"median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)),
            "qps": len(queries) / (time.perf_counter() - started)}


def run(count: int, dim: int, queries: np.ndarray, centres, args, backends: list[str]) -> list[dict]:
    vectors = unit_vectors(count, dim, seed=1, centres=centres)
    started = time.perf_counter()
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    rows = [{"index": "exact (IndexFlatIP)", "vectors": count, "build_s": time.perf_counter() - started,
             **timed_queries(exact, queries, args.single, args.k), "recall": 1.0}]
    _, truth = exact.search(queries, args.k)
    print(f"  done: exact on {count:,}", flush=True)
    for backend in backends:
        if backend == "ivf":
            config = BackendConfig("ivf", nlist=args.nlist, nprobe=args.nprobe[0])
            knobs = [("nprobe", value, BackendConfig("ivf", nlist=args.nlist, nprobe=value)) for value in args.nprobe]
        else:
            graph = {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction}
            config = BackendConfig("hnsw", ef_search=args.ef_search[0], **graph)
            knobs = [("efSearch", value, BackendConfig("hnsw", ef_search=value, **graph)) for value in args.ef_search]
        settings = config.resolved(count)
        started = time.perf_counter()
        index = build_faiss_index(vectors, settings)
        build_s = time.perf_counter() - started
        shape = (f"nlist={settings.params['nlist']}" if backend == "ivf"
                 else f"M={settings.params['hnsw_m']}, efC={settings.params['ef_construction']}")
        for knob, value, knob_config in knobs:
            configure_search(index, knob_config.resolved(count))
            rows.append({"index": f"{backend} ({shape}, {knob}={value})", "vectors": count, "build_s": build_s,
                         **timed_queries(index, queries, args.single, args.k),
                         "recall": recall_at_k(index, truth, queries)})
        print(f"  done: {backend} on {count:,}", flush=True)
        del index
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="vectors for exact and IVF; 0 skips them")
    parser.add_argument("--hnsw-count", type=int, default=200_000,
                        help="vectors for HNSW (its graph build is the slow one on few cores); 0 skips it")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clustered", type=int, default=0, metavar="N",
                        help="draw vectors around N centres instead of uniformly (0: uniform)")
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall and throughput")
    parser.add_argument("--single", type=int, default=50, help="queries timed one at a time")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--hnsw-m", type=int, default=BackendConfig.hnsw_m, help="HNSW neighbours per node")
    parser.add_argument("--ef-construction", type=int, default=BackendConfig.ef_construction,
                        help="HNSW candidate list while building (build time grows with it)")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__} with "
          f"{faiss.omp_get_max_threads()} threads, Python {platform.python_version()}")
    centres = None
    if args.clustered:
        centres = np.random.default_rng(0).standard_normal((args.clustered, args.dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    queries = unit_vectors(args.queries, args.dim, seed=2, centres=centres)

    rows = run(args.count, args.dim, queries, centres, args, ["ivf"]) if args.count else []
    if args.hnsw_count:
        rows += run(args.hnsw_count, args.dim, queries, centres, args, ["hnsw"])

    data = f"clustered around {args.clustered:,} centres" if args.clustered else "uniformly random"
    print(f"\n{args.dim}-d unit vectors, {data}; {args.queries} queries drawn the same way; recall@{args.k} "
          f"against exact search on the same vectors; latency: one query at a time on one thread "
          f"({args.single} queries); throughput: all queries in one batch on {faiss.omp_get_max_threads()} threads")
    header = (f"| {'index':<34} | {'vectors':>9} | {'build s':>7} | {'median ms':>9} | {'p95 ms':>7} | "
              f"{'queries/s':>9} | {'recall@10':>9} |")
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    for row in rows:
        print(f"| {row['index']:<34} | {row['vectors']:>9,} | {row['build_s']:>7.1f} | {row['median_ms']:>9.2f} | "
              f"{row['p95_ms']:>7.2f} | {row['qps']:>9.0f} | {row['recall']:>9.3f} |")
    if 0 < args.hnsw_count < args.count:
        print(f"\nHNSW ran on {args.hnsw_count:,} vectors, not {args.count:,}: building its graph over "
              f"{args.count:,} takes far longer than a few minutes on {os.cpu_count()} cores; the exact "
              f"row at {args.hnsw_count:,} is its baseline.")


if __name__ == "__main__":
    main()
