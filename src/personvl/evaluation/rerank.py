"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) in a sparse, top-k formulation.

The classic implementation builds several dense (queries + gallery)^2 matrices (about 35 GB at
MSMT17 size). Everything it computes is sparse except the final distances: each item's
encoding ``V`` is non-zero only on its k-reciprocal expansion set, which is found from the
``k1 + 1`` nearest neighbours of every item. So:

1. one pass over all items, a chunk of rows at a time, keeps each row's maximum of the
   squared distance (the classic's normaliser) and its ``k1 + 1`` nearest neighbours;
2. ``V`` (and its query expansion over the ``k2`` nearest neighbours) is built as a sparse
   matrix from those neighbour lists;
3. the re-ranked distances of a chunk of queries are the Jaccard distances from ``V`` (an
   inverted index over gallery rows) blended with the normalised original distances.

Results equal the classic formulation (up to float32 rounding of sums) whenever neighbour
lists have no ties; with ties the neighbours are taken in (distance, index) order where the
classic takes numpy's unstable quicksort order. The base distances are those of
:mod:`personvl.evaluation.distances` (squared Euclidean or ``1 - cos``), as torchreid passes
them; the classic squares them again before normalising, and so does this.
"""

from __future__ import annotations

from typing import Any

import torch

from personvl.errors import UsageError
from personvl.evaluation.distances import PairwiseDistances, check_metric
from personvl.evaluation.inputs import (DEFAULT_MEMORY_BUDGET, as_features, check_memory_budget, check_same_width,
                                        one_cpu_thread, resolve_device, rows_per_chunk)
from personvl.evaluation.ranking import stable_top_k


class SparseRows:
    """A row-compressed sparse matrix: ``pointers`` (rows + 1), ``columns``, ``values``."""

    def __init__(self, pointers: torch.Tensor, columns: torch.Tensor, values: torch.Tensor):
        self.pointers, self.columns, self.values = pointers, columns, values

    @classmethod
    def from_entries(cls, num_rows: int, rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor) -> "SparseRows":
        """From entries already ordered by row (columns in any order within a row)."""
        counts = torch.bincount(rows, minlength=num_rows)
        pointers = torch.zeros(num_rows + 1, dtype=torch.int64, device=rows.device)
        pointers[1:] = counts.cumsum(0)
        return cls(pointers, columns, values)

    def row_lengths(self) -> torch.Tensor:
        return self.pointers[1:] - self.pointers[:-1]

    def entries_of(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions of the entries of the listed rows, in order, and which listed row each is from."""
        lengths = self.row_lengths()[rows]
        owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths)
        starts = torch.repeat_interleave(self.pointers[rows], lengths)
        offsets = torch.arange(owner.numel(), device=rows.device) - torch.repeat_interleave(
            lengths.cumsum(0) - lengths, lengths)
        return starts + offsets, owner


def _check_parameters(k1: int, k2: int, lambda_value: float, num_items: int) -> None:
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    if k2 > k1 + 1:
        raise UsageError(f"k2 must be at most k1 + 1 ({k1 + 1}), got {k2}")
    if k1 + 1 > num_items:
        raise UsageError(f"k1 + 1 ({k1 + 1}) exceeds the number of queries plus gallery items ({num_items})")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise UsageError(f"lambda_value must be between 0 and 1, got {lambda_value!r}")


class KReciprocalReranker:
    """Re-ranked query-to-gallery distances, a chunk of queries at a time.

    Building it runs the neighbour pass over all ``queries + gallery`` rows (the costly part:
    one distance row per item); :meth:`distance_rows` then gives the re-ranked distances of
    any range of queries.
    """

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, metric: str = "euclidean", k1: int = 20,
                 k2: int = 6, lambda_value: float = 0.3, memory_budget: int = DEFAULT_MEMORY_BUDGET):
        check_metric(metric)
        self.num_query, self.num_gallery = query.shape[0], gallery.shape[0]
        num_items = self.num_query + self.num_gallery
        _check_parameters(k1, k2, lambda_value, num_items)
        self.k1, self.k2, self.lambda_value = k1, k2, float(lambda_value)
        self.memory_budget = memory_budget
        self.device = query.device
        every = torch.cat([query, gallery])
        self._all = PairwiseDistances(every, every, metric)
        self._query_gallery = PairwiseDistances(query, gallery, metric)
        self.row_max, self.neighbours = self._nearest_neighbours(num_items)
        with one_cpu_thread(self.device):
            encoding = self._encoding(num_items)
            if k2 != 1:
                encoding = self._query_expansion(encoding, num_items)
            self.encoding = encoding
            self._gallery_columns = self._invert_gallery_rows(encoding)

    def _nearest_neighbours(self, num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's maximum squared distance and its k1 + 1 nearest items, in
        (normalised distance, index) order."""
        row_max = torch.empty(num_items, dtype=self._all.query.dtype, device=self.device)
        neighbours = torch.empty(num_items, self.k1 + 1, dtype=torch.int64, device=self.device)
        step = rows_per_chunk(self.memory_budget, 8 * num_items)
        for start in range(0, num_items, step):
            stop = min(num_items, start + step)
            squared = self._all.distance_rows(start, stop)
            with one_cpu_thread(self.device):
                squared.square_()
                largest = squared.max(1).values
                largest = torch.where(largest > 0, largest, torch.ones_like(largest))
                row_max[start:stop] = largest
                neighbours[start:stop] = stable_top_k(squared.div_(largest[:, None]), self.k1 + 1)
        return row_max, neighbours

    def _normalised(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """The classic's normalised distance d^2 / max of the row, for listed pairs."""
        # Each pair gathers two feature rows: bound how many are gathered at once.
        step = max(1024, self.memory_budget // (8 * self._all.query.shape[1] * self._all.query.element_size()))
        parts = [self._all.pair_distances(rows[i:i + step], columns[i:i + step]).square()
                 / self.row_max[rows[i:i + step]] for i in range(0, rows.numel(), step)]
        return torch.cat(parts) if parts else torch.empty(0, dtype=self.row_max.dtype, device=self.device)

    def _encoding(self, num_items: int) -> SparseRows:
        """V: weights exp(-d) over each item's k-reciprocal expansion set, summing to one."""
        k1, neighbours = self.k1, self.neighbours
        half = int(round(k1 / 2.0)) + 1
        items = torch.arange(num_items, device=self.device)
        # Whether item i is among the half-size neighbours of its own half-size neighbours.
        half_forward = neighbours[:, :half]
        half_mutual = torch.empty_like(half_forward, dtype=torch.bool)
        mutual = torch.empty_like(neighbours, dtype=torch.bool)
        for start in range(0, num_items, 4096):
            stop = min(num_items, start + 4096)
            rows = items[start:stop, None, None]
            half_mutual[start:stop] = (neighbours[half_forward[start:stop], :half] == rows).any(-1)
            mutual[start:stop] = (neighbours[neighbours[start:stop]] == rows).any(-1)

        entry_rows, entry_columns, entry_values = [], [], []
        for start in range(0, num_items, 2048):
            stop = min(num_items, start + 2048)
            forward = neighbours[start:stop]                      # (C, k1+1)
            reciprocal = mutual[start:stop]
            candidate_sets = half_forward[forward]                # (C, k1+1, half)
            candidate_valid = half_mutual[forward] & reciprocal[..., None]
            in_set = ((candidate_sets[..., None] == forward[:, None, None, :])
                      & reciprocal[:, None, None, :]).any(-1)
            overlap = (in_set & candidate_valid).sum(-1)
            size = candidate_valid.sum(-1)
            # The classic's test, in the same float arithmetic: overlap > 2/3 * size.
            include = reciprocal & (overlap.double() > (2.0 / 3.0) * size.double())
            members = torch.cat([torch.where(reciprocal, forward, num_items),
                                 torch.where(include[..., None] & candidate_valid, candidate_sets,
                                             num_items).flatten(1)], dim=1)
            members = torch.sort(members, dim=1).values
            first_of_run = torch.ones_like(members, dtype=torch.bool)
            first_of_run[:, 1:] = members[:, 1:] != members[:, :-1]
            keep = first_of_run & (members < num_items)
            local_row, position = keep.nonzero(as_tuple=True)
            rows = local_row + start
            columns = members[local_row, position]
            weights = torch.exp(-self._normalised(rows, columns))
            totals = torch.zeros(stop - start, dtype=weights.dtype, device=self.device).index_add_(0, local_row, weights)
            entry_rows.append(rows)
            entry_columns.append(columns)
            entry_values.append(weights / totals[local_row])
        return SparseRows.from_entries(num_items, torch.cat(entry_rows), torch.cat(entry_columns),
                                       torch.cat(entry_values))

    def _query_expansion(self, encoding: SparseRows, num_items: int) -> SparseRows:
        """Each row of V replaced by the mean of the rows of its k2 nearest items."""
        entry_rows, entry_columns, entry_values = [], [], []
        for start in range(0, num_items, 2048):
            stop = min(num_items, start + 2048)
            expanded = self.neighbours[start:stop, :self.k2].reshape(-1)
            positions, owner = encoding.entries_of(expanded)
            local_row = owner // self.k2
            keys = local_row * num_items + encoding.columns[positions]
            keys, order = torch.sort(keys, stable=True)
            unique_keys, inverse = torch.unique_consecutive(keys, return_inverse=True)
            sums = torch.zeros(unique_keys.numel(), dtype=encoding.values.dtype, device=self.device)
            sums.index_add_(0, inverse, encoding.values[positions][order])
            entry_rows.append(unique_keys // num_items + start)
            entry_columns.append(unique_keys % num_items)
            entry_values.append(sums / self.k2)
        return SparseRows.from_entries(num_items, torch.cat(entry_rows), torch.cat(entry_columns),
                                       torch.cat(entry_values))

    def _invert_gallery_rows(self, encoding: SparseRows) -> SparseRows:
        """For each column k, the gallery rows with a non-zero V[row, k] (an inverted index)."""
        start = int(encoding.pointers[self.num_query])
        columns = encoding.columns[start:]
        gallery_rows = torch.repeat_interleave(
            torch.arange(self.num_gallery, device=self.device), encoding.row_lengths()[self.num_query:])
        order = torch.sort(columns, stable=True).indices
        return SparseRows.from_entries(encoding.pointers.numel() - 1, columns[order], gallery_rows[order],
                                       encoding.values[start:][order])

    def jaccard_rows(self, start: int, stop: int) -> torch.Tensor:
        """Jaccard distances 1 - s / (2 - s), s = sum_k min(V[q, k], V[g, k]), of queries
        ``start .. stop`` against every gallery item."""
        overlap = torch.zeros(stop - start, self.num_gallery, dtype=self.encoding.values.dtype, device=self.device)
        flat = overlap.view(-1)
        positions, owner = self.encoding.entries_of(torch.arange(start, stop, device=self.device))
        columns = self.encoding.columns[positions]
        values = self.encoding.values[positions]
        pair_counts = self._gallery_columns.row_lengths()[columns]
        # Bound the (query entry, gallery entry) pairs handled at once by the memory budget.
        budget_pairs = max(1 << 16, self.memory_budget // 96)
        cumulative = pair_counts.cumsum(0)
        begin = 0
        while begin < positions.numel():
            done = int(cumulative[begin - 1]) if begin else 0
            end = int(torch.searchsorted(cumulative, done + budget_pairs, right=True))
            end = max(end, begin + 1)
            pair_entry, pair_owner = self._gallery_columns.entries_of(columns[begin:end])
            pair_owner += begin
            shared = torch.minimum(values[pair_owner], self._gallery_columns.values[pair_entry])
            flat.index_add_(0, owner[pair_owner] * self.num_gallery + self._gallery_columns.columns[pair_entry], shared)
            begin = end
        return 1 - overlap / (2 - overlap)

    def distance_rows(self, start: int, stop: int) -> torch.Tensor:
        """Re-ranked distances (1 - lambda) * Jaccard + lambda * normalised original distance of
        queries ``start .. stop`` to every gallery item (a fresh tensor)."""
        original = self._query_gallery.distance_rows(start, stop)
        with one_cpu_thread(self.device):
            original.square_().div_(self.row_max[start:stop, None])
            jaccard = self.jaccard_rows(start, stop).to(original.dtype)
            return jaccard.mul_(1 - self.lambda_value).add_(original.mul_(self.lambda_value))


def k_reciprocal_distances(query_features: Any, gallery_features: Any, metric: str = "euclidean", k1: int = 20,
                           k2: int = 6, lambda_value: float = 0.3, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                           device: str | torch.device | None = None) -> torch.Tensor:
    """The full (queries x gallery) re-ranked distance matrix, lower = closer.

    For large sets, :func:`personvl.evaluation.reid_metrics` with ``rerank=True`` never holds
    this matrix: it ranks one chunk of queries at a time.
    """
    check_memory_budget(memory_budget)
    device = resolve_device(device, query_features, gallery_features)
    query = as_features(query_features, "query_features", device)
    gallery = as_features(gallery_features, "gallery_features", device, dtype=query.dtype)
    check_same_width(query, "query_features", gallery, "gallery_features")
    reranker = KReciprocalReranker(query, gallery, metric, k1, k2, lambda_value, memory_budget)
    step = rows_per_chunk(memory_budget, 16 * gallery.shape[0])
    return torch.cat([reranker.distance_rows(start, min(start + step, query.shape[0]))
                      for start in range(0, query.shape[0], step)])
