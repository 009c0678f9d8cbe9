"""Exact ranks of the matching gallery items, without sorting the gallery.

Order of a gallery for one query: by distance, lower first (by similarity, higher first), and
items with equal scores **by gallery index** (a stable sort). Every figure personvl reports is
the one a full stable argsort of each query's row gives; no sort of the row is needed for it.

How the ranks are found: a match's rank is the number of gallery items ahead of it. Each row's
distances are mapped by one monotone affine map to integer bins spread over the range of the
row's match distances; a histogram of the bins (``bincount``) counts, for every match, the items
in lower bins, which are certainly ahead of it. Only the few items that share a bin with a
match are compared with it exactly (value, then index). That is a handful of passes over the
chunk instead of an ``O(G log G)`` sort, and exact because an affine map followed by
truncation never reverses two values, even after rounding.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import torch

from personvl.errors import UsageError
from personvl.evaluation.inputs import (DEFAULT_MEMORY_BUDGET, as_labels, as_matrix, check_max_rank,
                                        check_memory_budget, one_cpu_thread, resolve_device, rows_per_chunk)

DistanceRows = Callable[[int, int], torch.Tensor]
"""``rows(start, stop)`` -> fresh (stop - start, gallery) tensor of ranking keys, lower first."""

# Working bytes per gallery item of one query row: the distances, their bins (float and int),
# the boundary flags and the share of the histogram (a quarter of a bin per item, two int64s).
BYTES_PER_ITEM = 4 + 4 + 4 + 1 + 4 + 8

# Distances are computed for up to this many query rows at once (larger matrix products are
# no faster), and ranked in blocks of about RANKING_BLOCK_ITEMS items, which stay in cache.
MAX_ROWS_PER_CHUNK = 256
RANKING_BLOCK_ITEMS = 1 << 21


class NoMatchWarning(UserWarning):
    """No query had a matching gallery item, so the ranking metrics are undefined (NaN)."""


def _bins_for(num_gallery: int) -> int:
    return int(min(max(num_gallery // 4, 16), 1 << 18))


def _bin(values: torch.Tensor, low: torch.Tensor, scale: torch.Tensor, bins: int, out: torch.Tensor) -> torch.Tensor:
    # The same sequence of correctly rounded operations is applied to the items and to the
    # match distances, so an item equal to a match always lands in the match's bin.
    torch.sub(values, low[:, None], out=out)
    out.mul_(scale[:, None])
    return out.clamp_(-2.0, bins - 1.0)


def _flat_nonzero(flags: torch.Tensor) -> torch.Tensor:
    if flags.device.type == "cpu":
        # numpy's nonzero over a bool view is tens of times faster than torch's on the CPU.
        return torch.from_numpy(np.flatnonzero(flags.numpy().view(np.bool_)))
    return flags.nonzero().squeeze(1)


def _ranks_within_bins(shared: torch.Tensor, item_keys: torch.Tensor, item_values: torch.Tensor,
                       num_gallery: int, target_keys: torch.Tensor, target_values: torch.Tensor,
                       target_columns: torch.Tensor) -> torch.Tensor:
    """For each target (flattened), how many of the ``shared`` items (flat positions of items
    in a target's bin) are ahead of it in (value, index) order."""
    ahead_counts = torch.zeros(target_keys.numel() + 1, dtype=torch.int64, device=shared.device)
    slice_size = max(1 << 16, item_values.numel() // 8)
    for begin in range(0, shared.numel(), slice_size):
        position = shared[begin:begin + slice_size]
        value = item_values[position]
        column = position % num_gallery
        key = item_keys[position].to(torch.int64)
        first = torch.searchsorted(target_keys, key)
        last = torch.searchsorted(target_keys, key, right=True)
        # The targets of one bin are in (value, index) order, so those not behind the item are
        # a prefix of them (the item itself, when it is a target, is not behind it): a binary
        # search for the end of that prefix.
        low, high = first, last
        for _ in range(int((last - first).max()).bit_length()):
            middle = (low + high) // 2
            target = middle.clamp(max=target_keys.numel() - 1)
            target_value = target_values[target]
            not_behind = (target_value < value) | ((target_value == value) & (target_columns[target] <= column))
            searching = low < high
            low = torch.where(searching & not_behind, middle + 1, low)
            high = torch.where(searching & ~not_behind, middle, high)
        ones = torch.ones_like(first)
        ahead_counts.index_add_(0, low, ones)
        ahead_counts.index_add_(0, last, -ones)
    return ahead_counts[:-1].cumsum(0)


def rank_targets(distances: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact 0-based ranks of the target items of each row.

    ``distances`` (B, G): lower first, ties by column index; ``+inf`` marks items that must not
    count (they rank after every finite target). ``targets`` (B, M): column indices, ``valid``
    (B, M) which of them are real. Returns ``(ranks, columns, count)``: per row, the ranks of
    the targets in increasing order, the target columns in the same order (invalid entries
    last, rank ``-1``), and the number of valid targets.
    """
    distances = distances.contiguous()
    batch, num_gallery = distances.shape
    device, dtype = distances.device, distances.dtype
    count = valid.sum(1)
    width = targets.shape[1]
    if width == 0 or batch == 0:
        empty = torch.empty(batch, width, dtype=torch.int64, device=device)
        return empty, empty, count

    # Targets in (distance, index) order: sort by index, then stably by distance.
    columns, by_index = torch.sort(torch.where(valid, targets, num_gallery), dim=1)
    valid = valid.gather(1, by_index)
    values = distances.gather(1, columns.clamp(max=num_gallery - 1))
    values = torch.where(valid, values, torch.tensor(float("inf"), dtype=dtype, device=device))
    values, by_value = torch.sort(values, dim=1, stable=True)
    columns = columns.gather(1, by_value)
    valid = valid.gather(1, by_value)
    if not bool(torch.isfinite(values[valid]).all()):
        raise ValueError("a matching gallery item has an infinite distance")

    bins = _bins_for(num_gallery)
    has_any = count > 0
    low = torch.where(has_any, values[:, 0], torch.zeros((), dtype=dtype, device=device))
    high = torch.where(has_any, values.gather(1, (count - 1).clamp(min=0)[:, None])[:, 0], low)
    span = high.double() - low.double()
    scale = torch.where(span > 0, (bins - 2) / span.clamp(min=1e-300), torch.ones_like(span))
    scale = scale.clamp(max=1e30).to(dtype)

    # Keys: row * (bins + 2) + bin + 2, so that one bincount makes every row's histogram;
    # bin -2 holds everything far below the best match, bin K-1 everything above the worst.
    row_stride = bins + 2
    key_dtype = torch.int32 if batch * row_stride < 2**31 else torch.int64
    row_base = torch.arange(batch, device=device, dtype=torch.int64) * row_stride + 2
    item_bins = _bin(distances, low, scale, bins, torch.empty_like(distances))
    item_keys = item_bins.to(key_dtype)
    del item_bins
    item_keys += row_base.to(key_dtype)[:, None]
    item_keys = item_keys.view(-1)
    histogram = torch.bincount(item_keys, minlength=batch * row_stride).view(batch, row_stride)
    cumulative = histogram.cumsum_(1)

    target_keys = _bin(values.clamp(max=torch.finfo(dtype).max), low, scale, bins,
                       torch.empty_like(values)).to(torch.int64) + row_base[:, None]
    target_keys = torch.where(valid, target_keys, row_base[:, None] + bins - 1)
    ranks = cumulative.gather(1, target_keys - row_base[:, None] + 1)

    # Items sharing a bin with a target: compare exactly, (value, index) against (value, index).
    marked = torch.zeros(batch * row_stride, dtype=torch.uint8, device=device)
    marked[target_keys[valid]] = 1
    shared = _flat_nonzero(torch.index_select(marked, 0, item_keys))
    if shared.numel():
        ranks += _ranks_within_bins(shared, item_keys, distances.view(-1), num_gallery,
                                    target_keys.view(-1), values.view(-1), columns.view(-1)).view(batch, width)
    ranks = torch.where(valid, ranks, -1)
    return ranks, columns, count


class IdentityGroups:
    """Gallery items grouped by identity: lists each query's same-identity items by index,
    without comparing every query with every gallery item."""

    def __init__(self, gallery_pids: torch.Tensor):
        self.order = torch.argsort(gallery_pids, stable=True)
        self.sorted_pids = gallery_pids[self.order]

    def same_identity(self, query_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M) gallery indices sharing each query's identity (increasing), and a valid mask."""
        first = torch.searchsorted(self.sorted_pids, query_pids)
        last = torch.searchsorted(self.sorted_pids, query_pids, right=True)
        sizes = last - first
        width = int(sizes.max()) if sizes.numel() else 0
        steps = torch.arange(width, device=query_pids.device)
        valid = steps[None, :] < sizes[:, None]
        positions = (first[:, None] + steps[None, :]).clamp(max=max(self.order.numel() - 1, 0))
        return self.order[positions], valid


class RankingAccumulator:
    """Per-query AP, INP and first-match rank, filled chunk by chunk.

    Per-query values are kept (8 bytes each) and averaged once at the end, so the figures do
    not depend on how the queries were chunked.
    """

    def __init__(self, num_queries: int, max_rank: int):
        self.max_rank = max_rank
        self.average_precision = np.full(num_queries, np.nan)
        self.inverse_negative_penalty = np.full(num_queries, np.nan)
        self.first_rank = np.full(num_queries, -1, dtype=np.int64)

    def add(self, start: int, ranks: torch.Tensor, count: torch.Tensor) -> None:
        """Record queries ``start ..`` from their sorted match ranks (see :func:`rank_targets`)."""
        if ranks.shape[1] == 0:
            return
        ranks64 = ranks.to(torch.float64)
        positions = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64, device=ranks.device)
        precision = torch.where(ranks >= 0, positions / (ranks64 + 1), 0.0)
        # A running sum is sequential along the row, so the padding width never changes it.
        last = (count - 1).clamp(min=0)[:, None]
        precision_sum = precision.cumsum(1).gather(1, last)[:, 0]
        has_match = (count > 0).cpu().numpy()
        counts = count.to(torch.float64)
        stop = start + ranks.shape[0]
        average_precision = (precision_sum / counts.clamp(min=1)).cpu().numpy()
        inverse_negative_penalty = (counts / (ranks64.gather(1, last)[:, 0] + 1)).cpu().numpy()
        first = ranks[:, 0].cpu().numpy()
        self.average_precision[start:stop] = np.where(has_match, average_precision, np.nan)
        self.inverse_negative_penalty[start:stop] = np.where(has_match, inverse_negative_penalty, np.nan)
        self.first_rank[start:stop] = np.where(has_match, first, -1)

    def metrics(self, num_gallery: int) -> dict[str, Any]:
        counted = self.first_rank >= 0
        valid = int(counted.sum())
        length = min(self.max_rank, num_gallery)
        if valid == 0:
            warnings.warn("no query has a matching gallery item: R1/R5/R10/mAP/mINP are NaN",
                          NoMatchWarning, stacklevel=3)
            nan = float("nan")
            return {"R1": nan, "R5": nan, "R10": nan, "mAP": nan, "mINP": nan, "cmc": [],
                    "valid_queries": 0, "queries": len(counted)}
        hits = np.bincount(self.first_rank[counted], minlength=num_gallery)[:length]
        cmc = np.cumsum(hits) / valid * 100.0
        return {
            "R1": float(cmc[0]),
            "R5": float(cmc[min(4, length - 1)]),
            "R10": float(cmc[min(9, length - 1)]),
            "mAP": float(np.mean(self.average_precision[counted]) * 100.0),
            "mINP": float(np.mean(self.inverse_negative_penalty[counted]) * 100.0),
            "cmc": [float(v) for v in cmc],
            "valid_queries": valid,
            "queries": len(counted),
        }


def rank_by_identity(rows: DistanceRows, query_pids: torch.Tensor, gallery_pids: torch.Tensor,
                     query_camids: torch.Tensor | None, gallery_camids: torch.Tensor | None,
                     max_rank: int, rows_per_step: int) -> dict[str, Any]:
    """Ranking metrics of queries against a gallery, a chunk of query rows at a time.

    A gallery item matches a query when it has the query's identity; with cameras, items of
    the query's identity *and* camera are removed first (Market-1501 protocol). Queries left
    without a match are skipped (``valid_queries`` counts the others).
    """
    num_queries, num_gallery = query_pids.shape[0], gallery_pids.shape[0]
    groups = IdentityGroups(gallery_pids)
    accumulator = RankingAccumulator(num_queries, max_rank)
    inf = float("inf")
    block = max(1, RANKING_BLOCK_ITEMS // num_gallery)
    for start in range(0, num_queries, rows_per_step):
        stop = min(num_queries, start + rows_per_step)
        distances = rows(start, stop)
        with one_cpu_thread(distances.device):
            same, valid = groups.same_identity(query_pids[start:stop])
            matches = valid
            if query_camids is not None and gallery_camids is not None:
                same_camera = valid & (gallery_camids[same] == query_camids[start:stop, None])
                matches = valid & ~same_camera
                row_of = torch.arange(stop - start, device=same.device)[:, None].expand_as(same)
                distances[row_of[same_camera], same[same_camera]] = inf
            for first in range(0, stop - start, block):
                last = min(stop - start, first + block)
                ranks, _, count = rank_targets(distances[first:last], same[first:last], matches[first:last])
                accumulator.add(start + first, ranks, count)
    return accumulator.metrics(num_gallery)


def stable_top_k(distances: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of the ``k`` lowest entries of each row in (value, index) order: the first
    ``k`` of a stable argsort, without sorting the row (``torch.topk`` plus a tie check)."""
    k = min(k, distances.shape[1])
    values, columns = torch.topk(distances, k, dim=1, largest=False, sorted=True)
    kth = values[:, -1:]
    # topk keeps an arbitrary subset of the items tied with the k-th value; a stable sort keeps
    # the lowest indices. Rows where some tied item was left out are sorted in full.
    unsure = ((distances == kth).sum(1) != (values == kth).sum(1)).nonzero().squeeze(1)
    if unsure.numel():
        columns[unsure] = torch.sort(distances[unsure], dim=1, stable=True).indices[:, :k]
    columns = torch.sort(columns, dim=1).values
    order = torch.sort(distances.gather(1, columns), dim=1, stable=True).indices
    return columns.gather(1, order)


def ranking_metrics(similarity: Any, query_pids: Any, gallery_pids: Any, query_camids: Any = None,
                    gallery_camids: Any = None, max_rank: int = 50, *,
                    memory_budget: int = DEFAULT_MEMORY_BUDGET, device: str | torch.device | None = None,
                    ) -> dict[str, Any]:
    """Ranking metrics in percent from a (queries x gallery) similarity matrix (higher = closer).

    Returns ``R1``, ``R5``, ``R10``, ``mAP``, ``mINP``, the CMC curve ``cmc`` (``max_rank``
    points, or the gallery size if smaller), ``valid_queries`` and ``queries``. With cameras
    the Market-1501 protocol applies: gallery items sharing both identity and camera with the
    query are removed, and queries left without a match are skipped. Ties are ordered by
    gallery index. No query with a match: NaN figures, an empty curve and a
    :class:`NoMatchWarning`.
    """
    max_rank = check_max_rank(max_rank)
    memory_budget = check_memory_budget(memory_budget)
    device = resolve_device(device, similarity)
    similarity = as_matrix(similarity, "similarity", device)
    num_queries, num_gallery = similarity.shape
    query_pids = as_labels(query_pids, "query_pids", num_queries, "similarity", device)
    gallery_pids = as_labels(gallery_pids, "gallery_pids", num_gallery, "similarity (columns)", device)
    if (query_camids is None) != (gallery_camids is None):
        raise UsageError("query_camids and gallery_camids must be given together")
    if query_camids is not None:
        query_camids = as_labels(query_camids, "query_camids", num_queries, "similarity", device)
        gallery_camids = as_labels(gallery_camids, "gallery_camids", num_gallery, "similarity (columns)", device)
    step = rows_per_chunk(memory_budget, BYTES_PER_ITEM * num_gallery, MAX_ROWS_PER_CHUNK)
    return rank_by_identity(lambda start, stop: -similarity[start:stop], query_pids, gallery_pids,
                            query_camids, gallery_camids, max_rank, step)
