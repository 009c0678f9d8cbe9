"""faiss indexes over L2-normalised embeddings (inner product = cosine similarity).

``exact`` scans every vector and is right for galleries up to about a hundred thousand images;
``ivf`` (inverted lists) and ``hnsw`` (a neighbour graph) answer in far less time at millions,
at the price of recall, which ``recall_at_k`` measures against the exact answer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import faiss
import numpy as np

from personvl.errors import UsageError

BACKENDS = ("auto", "exact", "ivf", "hnsw")
# Below this many vectors an exact scan answers a query in a few milliseconds, so "auto" only
# pays for approximation where it buys speed.
AUTO_EXACT_LIMIT = 100_000


@dataclass(frozen=True)
class BackendConfig:
    """How to search: the backend and its knobs (None = chosen from the gallery size)."""

    backend: str = "auto"
    nlist: int | None = None  # ivf: inverted lists (default about sqrt(N))
    nprobe: int | None = None  # ivf: lists visited per query (default nlist / 8, at least 8)
    hnsw_m: int = 32  # hnsw: neighbours per node
    ef_construction: int = 80  # hnsw: candidate list while building
    ef_search: int = 128  # hnsw: candidate list while searching
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        for name in ("nlist", "nprobe"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1, got {value}")
        for name in ("hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")

    def resolved(self, count: int) -> "ResolvedBackend":
        """Concrete settings for a gallery of ``count`` vectors."""
        backend = self.backend
        if backend == "auto":
            backend = "exact" if count < AUTO_EXACT_LIMIT else "ivf"
        params: dict = {}
        if backend == "ivf":
            # faiss wants about 39 training points per list; small galleries get fewer lists.
            nlist = self.nlist or max(1, min(int(math.sqrt(count)), count // 39 or 1))
            params = {"nlist": nlist, "nprobe": min(nlist, self.nprobe or max(8, nlist // 8))}
        elif backend == "hnsw":
            params = {"hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction,
                      "ef_search": self.ef_search}
        return ResolvedBackend(backend, params, self.seed)


@dataclass(frozen=True)
class ResolvedBackend:
    backend: str
    params: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def approximate(self) -> bool:
        return self.backend != "exact"

    def to_dict(self) -> dict:
        return asdict(self)


def empty_faiss_index(dim: int, settings: ResolvedBackend, training: np.ndarray | None = None) -> faiss.Index:
    """An index ready for ``add``: ivf is trained on ``training`` (a sample of the vectors)."""
    if settings.backend == "exact":
        return faiss.IndexFlatIP(dim)
    if settings.backend == "ivf":
        nlist = settings.params["nlist"]
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = settings.seed
        # A gallery too small for faiss's 39 points per list still gets its (few) lists, quietly.
        index.cp.min_points_per_centroid = max(1, min(39, len(training) // nlist))
        index.train(np.ascontiguousarray(training, dtype=np.float32))
        index.nprobe = settings.params["nprobe"]
        return index
    if settings.backend == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.params["ef_construction"]
        index.hnsw.efSearch = settings.params["ef_search"]
        return index
    raise UsageError(f"unknown backend {settings.backend!r}")


def training_rows(count: int, settings: ResolvedBackend) -> np.ndarray:
    """Which rows train an ivf index: 64 per list is as good as all of them, and bounded in time."""
    if settings.backend != "ivf":
        return np.empty(0, dtype=np.int64)
    size = min(count, 64 * settings.params["nlist"])
    return np.sort(np.random.default_rng(settings.seed).choice(count, size, replace=False))


def build_faiss_index(vectors: np.ndarray, settings: ResolvedBackend) -> faiss.Index:
    """A faiss index holding ``vectors`` (float32, rows L2-normalised) under ids 0..N-1."""
    index = empty_faiss_index(vectors.shape[1], settings, vectors[training_rows(len(vectors), settings)])
    add_in_batches(index, vectors)
    return index


def add_in_batches(index: faiss.Index, vectors: np.ndarray, batch: int = 65_536) -> None:
    """Append ``vectors`` to ``index`` (ids continue from ``index.ntotal``)."""
    for start in range(0, len(vectors), batch):
        index.add(np.ascontiguousarray(vectors[start:start + batch], dtype=np.float32))


def configure_search(index: faiss.Index, settings: ResolvedBackend) -> None:
    """Apply the query-time knobs, which faiss does not store in the index file."""
    if settings.backend == "ivf":
        faiss.extract_index_ivf(index).nprobe = settings.params["nprobe"]
    elif settings.backend == "hnsw":
        index.hnsw.efSearch = settings.params["ef_search"]


def exact_neighbours(blocks: Sequence[np.ndarray], queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the exact top-``k`` of each query over the rows of ``blocks`` taken in order.

    Each block is searched where it lies (a memory-mapped chunk is not copied) and the
    per-block candidates are merged, so memory does not grow with the gallery.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores, ids, offset = [], [], 0
    for block in blocks:
        block_scores, block_ids = faiss.knn(queries, np.ascontiguousarray(block, dtype=np.float32),
                                            min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        scores.append(block_scores)
        ids.append(block_ids + offset)
        offset += len(block)
    scores, ids = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, best, axis=1)


def recall_at_k(approximate: faiss.Index, truth: np.ndarray, queries: np.ndarray) -> float:
    """Mean fraction of the exact top-k (``truth``, ids per query) that ``approximate``'s
    top-k also returns; k is ``truth.shape[1]``."""
    k = truth.shape[1]
    _, found = approximate.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    hits = sum(len(set(t[t >= 0]) & set(f[f >= 0])) for t, f in zip(truth, found))
    return hits / truth.size


def recall_query_rows(count: int, sample: int = 256, seed: int = 0) -> np.ndarray:
    """A deterministic sample of gallery rows to measure recall with ("more like this")."""
    return np.sort(np.random.default_rng(seed).choice(count, min(sample, count), replace=False))
