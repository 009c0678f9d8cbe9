"""P x K identity sampling: batches of P identities with K images each, as triplet and
identity losses need, with each DDP rank drawing its own disjoint batches."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from personvl.errors import UsageError


class IdentitySampler(Sampler[int]):
    """Indices in batches of ``identities`` x ``instances`` (P x K).

    Each epoch (``set_epoch``) reshuffles deterministically from ``seed``: every identity's
    images are shuffled and cut into groups of K (an identity with fewer than K images is
    drawn with replacement, as torchreid does), and batches take P distinct identities at
    random until fewer than P have groups left. Under DDP, rank r takes batches r, r + W, ...
    and every rank takes the same number of batches, so all ranks step together. Use it with
    ``DataLoader(dataset, batch_size=P * K, sampler=sampler, drop_last=True)`` (with
    Lightning, ``use_distributed_sampler=False``: the sampler splits the ranks itself).
    """

    def __init__(self, pids: Sequence[int | None], identities: int, instances: int, *, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None) -> None:
        if identities < 1 or instances < 1:
            raise UsageError(f"P x K sampling needs P >= 1 and K >= 1, got {identities} x {instances}")
        if any(p is None for p in pids):
            raise UsageError("P x K sampling needs an identity on every record")
        if rank is None or world_size is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            world_size = torch.distributed.get_world_size() if distributed else 1
        if not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} is outside 0..{world_size - 1}")
        groups: dict[int, list[int]] = {}
        for index, pid in enumerate(pids):
            groups.setdefault(int(pid), []).append(index)
        if len(groups) < identities:
            raise UsageError(f"P x K sampling with P={identities} needs at least {identities} identities, the data has {len(groups)}")
        self.indices_by_identity = [np.asarray(v) for _, v in sorted(groups.items())]
        self.identities, self.instances = identities, instances
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self._drawn: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[np.ndarray]:
        """This rank's batches for the current epoch."""
        if self._drawn is None or self._drawn[0] != self.epoch:
            self._drawn = (self.epoch, self._draw())
        return self._drawn[1]

    def _draw(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        K = self.instances
        chunks: list[list[np.ndarray]] = []
        for indices in self.indices_by_identity:
            drawn = rng.choice(indices, size=K, replace=True) if len(indices) < K else rng.permutation(indices)
            usable = len(drawn) - len(drawn) % K
            chunks.append([drawn[i:i + K] for i in range(0, usable, K)])
        batches = []
        # Identities with groups left, in identity order, as an array from which the emptied
        # ones are deleted by position: instance-level data (a million identities of one image
        # each) empties P identities every batch, and rebuilding the list per batch made the
        # draw quadratic in the identity count.
        remaining = np.array([len(c) for c in chunks])
        available = np.flatnonzero(remaining)
        while len(available) >= self.identities:
            positions = rng.choice(len(available), size=self.identities, replace=False)
            chosen = available[positions]
            batches.append(np.concatenate([chunks[i].pop() for i in chosen]))
            remaining[chosen] -= 1
            available = np.delete(available, positions[remaining[chosen] == 0])
        per_rank = len(batches) // self.world_size
        return batches[self.rank::self.world_size][:per_rank]

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch.tolist()

    def __len__(self) -> int:
        # The batch count depends on the draw (identities left over at the end), so it is
        # counted from this epoch's draw rather than estimated.
        return sum(len(b) for b in self.batches())


class ShuffledBatches(Sampler[list[int]]):
    """Batches of ``batch_size`` indices of ``0..size-1`` in a seeded random order per epoch,
    for sets without identities (attributes, parsing, detector frames).

    Each epoch's order is one permutation drawn from (seed, epoch); rank r of W takes batches
    r, r + W, ... of it and every rank takes the same number, so the ranks' batches are
    disjoint and together are the batches one process would draw. An incomplete last batch is
    dropped."""

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise UsageError(f"the batch size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} is outside 0..{world_size - 1}")
        if size < batch_size * world_size:
            raise UsageError(f"{world_size} rank(s) x a batch of {batch_size} need at least "
                             f"{batch_size * world_size} training images, the split has {size}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        for batch in range(self.rank, len(self) * self.world_size, self.world_size):
            yield order[batch * self.batch_size:(batch + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return self.size // self.batch_size // self.world_size
