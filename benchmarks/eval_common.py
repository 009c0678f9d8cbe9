"""Shared pieces of the evaluation benchmarks: synthetic features, the NumPy baseline, and
measurement of time and peak memory in a fresh child process per run.

Features lie on a 1/16 grid (|value| <= 4), so every dot product and squared distance is an
exact float32 number whatever order a BLAS library sums in: NumPy and torch then see
bit-identical distances, and their figures can be compared exactly. The grid also makes tied
distances common, the hard case for an exact ranking.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

# identity_weight sets how far apart identities are: R1 about 85-95%, mAP about 50% without re-ranking.
MARKET = dict(name="Market-1501", queries=3368, gallery=15913, identities=750, cameras=6, distractors=2798,
              identity_weight=0.5)
MSMT17 = dict(name="MSMT17", queries=11659, gallery=82161, identities=3060, cameras=15, distractors=0,
              identity_weight=0.42)
CUHK_PEDES = dict(name="CUHK-PEDES", queries=6156, gallery=3074, identities=1000, cameras=1, distractors=0)


@dataclass
class Dataset:
    query: np.ndarray
    gallery: np.ndarray
    query_pids: np.ndarray
    gallery_pids: np.ndarray
    query_camids: np.ndarray
    gallery_camids: np.ndarray


def synthetic_features(queries: int, gallery: int, identities: int, cameras: int, distractors: int,
                       dim: int = 768, seed: int = 0, identity_weight: float = 0.5, **_) -> Dataset:
    """Identity centres plus noise, quantised to the 1/16 grid; distractors (pid 0) are noise."""
    rng = np.random.default_rng(seed)
    query_pids = rng.integers(1, identities + 1, queries)
    gallery_pids = np.concatenate([np.zeros(distractors, dtype=np.int64),
                                   rng.integers(1, identities + 1, gallery - distractors)])
    centres = identity_weight * rng.standard_normal((identities + 1, dim), dtype=np.float32)
    centres[0] = 0

    def draw(pids: np.ndarray) -> np.ndarray:
        out = np.empty((pids.size, dim), dtype=np.float32)
        for start in range(0, pids.size, 8192):
            part = pids[start:start + 8192]
            values = centres[part] + rng.standard_normal((part.size, dim), dtype=np.float32)
            out[start:start + 8192] = np.clip(np.round(values * 16), -64, 64) / 16
        return out

    return Dataset(draw(query_pids), draw(gallery_pids), query_pids, gallery_pids,
                   rng.integers(0, cameras, queries), rng.integers(0, cameras, gallery))


def numpy_reid_baseline(data: Dataset, metric: str = "euclidean", cameras: bool = True,
                        max_rank: int = 50) -> dict:
    """The protocol written the straightforward way: the distance matrix with NumPy, then a full
    stable argsort of every query's row (Market-1501 protocol when ``cameras``)."""
    started = time.perf_counter()
    if metric == "euclidean":
        query_sq = (data.query * data.query).sum(1)
        gallery_sq = (data.gallery * data.gallery).sum(1)
        distances = query_sq[:, None] + gallery_sq[None, :] - 2 * (data.query @ data.gallery.T)
    else:
        query = data.query / np.linalg.norm(data.query, axis=1, keepdims=True)
        gallery = data.gallery / np.linalg.norm(data.gallery, axis=1, keepdims=True)
        distances = -(query @ gallery.T)
    distance_seconds = time.perf_counter() - started
    average_precisions, inverse_penalties, first_ranks = [], [], []
    for q in range(distances.shape[0]):
        order = np.argsort(distances[q], kind="stable")
        matches = data.gallery_pids[order] == data.query_pids[q]
        if cameras:
            matches = matches[~(matches & (data.gallery_camids[order] == data.query_camids[q]))]
        ranks = np.flatnonzero(matches)
        if ranks.size == 0:
            continue
        first_ranks.append(ranks[0])
        average_precisions.append(np.mean(np.arange(1, ranks.size + 1) / (ranks + 1)))
        inverse_penalties.append(ranks.size / (ranks[-1] + 1))
    first_ranks = np.array(first_ranks)
    cmc = [float(np.mean(first_ranks <= k) * 100) for k in range(min(max_rank, distances.shape[1]))]
    return {"R1": cmc[0], "R5": cmc[4], "R10": cmc[9], "mAP": float(np.mean(average_precisions) * 100),
            "mINP": float(np.mean(inverse_penalties) * 100), "cmc": cmc, "valid_queries": len(first_ranks),
            "distance_seconds": distance_seconds}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20          # KiB on Linux


def run_child(script: str, task: dict) -> dict:
    """Run ``script --child TASK`` in a fresh interpreter; it prints one JSON line last."""
    result = subprocess.run([sys.executable, script, "--child", json.dumps(task)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"child run failed: {task}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def child_report(started: float, metrics: dict | None, before_gib: float, **extra) -> None:
    """What a child prints: seconds, peak RSS of the whole process and before the timed part."""
    print(json.dumps(dict(seconds=time.perf_counter() - started, peak_gib=peak_rss_gib(),
                          data_gib=before_gib, metrics=metrics, **extra)))


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB, Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.1f} at start")


def compare(ours: dict, baseline: dict) -> str:
    keys = ("R1", "R5", "R10", "mAP", "mINP")
    differences = [abs(ours[k] - baseline[k]) for k in keys]
    differences.append(max(abs(a - b) for a, b in zip(ours["cmc"], baseline["cmc"])))
    figures = ", ".join(f"{k} {ours[k]:.4f}" for k in keys)
    if ours["valid_queries"] != baseline["valid_queries"]:
        return f"{figures} | baseline counted {baseline['valid_queries']} valid queries, personvl {ours['valid_queries']}"
    verdict = "identical" if max(differences) == 0 else "differ"
    return f"{figures} | baseline {verdict} (max |difference| {max(differences):.1e} points, CMC included)"
